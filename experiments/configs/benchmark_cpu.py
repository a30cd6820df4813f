"""Preset ``cpu`` of ``experiments/benchmark_methods.py``: all five methods and the PatchCore-style
baseline on MVTec AD bottle, three seeds, sized for a 2-core CPU.

Reconstruction / GAN methods at 64 px (RAMFAE widths 16-128, 30 epochs; SCGAN and AFF-GAN their
``:cpu`` variants, 60 epochs), feature methods at 256 -> 224 px with the offline ImageNet weights
(SMCC W = 1; DFDA-AD 1 attention epoch with a 0.5 % k-means bank; PatchCore-style greedy coreset
10 %, 1-NN). 10 % of the training images are held out for the threshold; batch 16 (DFDA-AD 10,
the paper's). Sized to finish in under an hour on a 2-core CPU with nothing else running (the
estimate and its measurements: BUILD_NOTES.md, Method comparison). Usage::

  python experiments/benchmark_methods.py --config=experiments/configs/benchmark_cpu.py \\
      --config.data_dir=path/to/mvtec_ad --out=runs/compare_bottle

(``--config.data_dir`` may also be the bottle folder itself.) Every field can be overridden:
``--config.methods=ramfae,smcc``, ``--config.seeds=0``, ``--config.specs.scgan.epochs=400`` ...
"""

from __future__ import annotations

import importlib
from typing import Any

import ml_collections
from ml_collections import config_dict

ALL_METHODS = "ramfae,smcc,dfdaad,scgan,affgan,patchcore"


def spec(config_file: str, *, image_size: int, epochs: int, crop_size: int = 0,
         batch_size: int = 16, minutes: float = 0.0, bank: str = "",
         **fields: Any) -> ml_collections.ConfigDict:
  """One method's entry: its config file (``experiments/configs/<file>.py[:variant]``), the data
  size (resize ``image_size``, then centre crop ``crop_size``; 0 = none; the model's input is the
  crop), the budget (``epochs``, or at most ``minutes`` of training when > 0) and ``fields``: every
  field of the method's ``Config`` (its config file's defaults, overridden by the keyword arguments). ``bank="greedy_coreset"`` is the PatchCore-style bank on SMCC."""
  out = ml_collections.ConfigDict()
  out.config_file = config_file
  out.image_size = image_size
  out.crop_size = crop_size
  out.epochs = epochs
  out.batch_size = batch_size
  out.minutes = float(minutes)
  out.bank = bank
  file, _, variant = config_file.partition(":")
  defaults = importlib.import_module(f"experiments.configs.{file}")
  defaults = defaults.get_config(variant) if variant else defaults.get_config()
  unknown = sorted(set(fields) - set(defaults.keys()))
  if unknown:
    raise ValueError(f"{config_file}: no config field(s) {unknown}")
  out.fields = ml_collections.ConfigDict()  # every Config field: all can be overridden
  for key in defaults.keys():
    if key not in ("method", "image_size"):  # image_size follows the data size above
      out.fields[key] = fields.get(key, defaults[key])
  return out


def base_config() -> ml_collections.ConfigDict:
  """The fields every preset has (data, protocol, outputs); ``specs`` is filled by the preset."""
  c = ml_collections.ConfigDict()
  c.dataset = "mvtec"                            # mvtec, btad, folder, elpv
  c.data_dir = config_dict.placeholder(str)      # the data folder (not needed for elpv)
  c.categories = ""                              # comma-separated MVTec categories / BTAD products
  c.name = config_dict.placeholder(str)          # results name of a folder data set
  c.data_kwargs = ml_collections.ConfigDict()    # more reader arguments (e.g. elpv cell_type)
  c.max_train_images = 0                         # 0 = all
  c.max_test_images = 0                          # 0 = all; else half normal, half anomalous
  c.data_seed = 0                                # subsets and the held-out images
  c.val_fraction = 0.1                           # held out of the training images for the threshold
  c.threshold_quantile = 0.99
  c.methods = ALL_METHODS
  c.seeds = (0, 1, 2)
  c.image_size = config_dict.placeholder(int)    # every method at this size (no crop)
  c.epochs = config_dict.placeholder(int)        # every method's epochs
  c.minutes = config_dict.placeholder(float)     # every method's training time limit
  c.batch_size = config_dict.placeholder(int)    # every method's batch size
  c.num_panels = 8
  c.panel_size = 128                             # panel images drawn at this size (small PNGs)
  c.timing_images = 64                           # test images timed for images/s
  c.infer_batch_size = 16
  c.workers = 1                                  # records trained at the same time
  c.compile_cache = True                         # XLA cache shared by the records (<out>/xla_cache)
  c.cache_dir = config_dict.placeholder(str)     # decoded images (default <out>/cache)
  c.specs = ml_collections.ConfigDict()
  return c


def get_config() -> ml_collections.ConfigDict:
  """MVTec AD bottle, six methods, seeds 0-2, CPU sizes."""
  c = base_config()
  c.categories = "bottle"
  feat = dict(image_size=256, crop_size=224)
  c.specs.conv_ae = spec("conv_ae", image_size=64, epochs=30, features=(32, 64, 128, 256))
  c.specs.ramfae = spec("ramfae", image_size=64, epochs=30, base_features=16, max_features=128,
                        smooth_kernel=5, smooth_sigma=1.0)
  c.specs.scgan = spec("scgan:cpu", image_size=64, epochs=60)
  c.specs.affgan = spec("affgan:cpu", image_size=64, epochs=60)
  c.specs.smcc = spec("smcc", epochs=1, **feat)
  c.specs.dfdaad = spec("dfdaad", epochs=1, batch_size=10, bank_size=0.005, **feat)
  c.specs.patchcore = spec("smcc", epochs=0, bank="greedy_coreset", knn_k=1, **feat)
  return c
