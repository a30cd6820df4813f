"""Preset ``demo`` of ``experiments/benchmark_methods.py`` (``make demo``): all five methods and the
PatchCore-style baseline on the built-in ELPV solar cells, in minutes on a 2-core CPU, offline.

ELPV (the ``elpv-dataset`` package; ``jaxad.data.load_elpv``'s seeded split): polycrystalline cells,
grayscale replicated to RGB, normal = defect probability 0, anomalous = 1;
``max_train_images`` normal training cells (10 % of them held out for the threshold) and a
class-balanced subset of ``max_test_images`` test cells. ELPV has no pixel masks: image metrics only.
Small budgets: the reconstruction / GAN methods at 32 px for 16 epochs (RAMFAE with Adam 1e-3 for
the short run), the feature methods at 128 px (SMCC W = 1, DFDA-AD one attention epoch,
PatchCore-style no training); 96 training cells (86 trained on), 60 + 60 test cells; one seed; two
records at a time (compilation, which dominates at this size, runs on one core).
"""

from __future__ import annotations

import ml_collections

from experiments.configs.benchmark_cpu import base_config, spec


def get_config() -> ml_collections.ConfigDict:
  """ELPV poly cells, six methods, seed 0, demo budgets."""
  c = base_config()
  c.dataset = "elpv"
  c.data_kwargs.cell_type = "poly"
  c.max_train_images = 96
  c.max_test_images = 120
  c.seeds = (0,)
  c.workers = 2  # two records at a time: compilation runs on one core
  feat = dict(image_size=128)
  c.specs.conv_ae = spec("conv_ae", image_size=32, epochs=16, features=(32, 64, 128))
  c.specs.ramfae = spec("ramfae", image_size=32, epochs=16, base_features=16, max_features=128,
                        smooth_kernel=5, smooth_sigma=1.0, learning_rate=1e-3)
  c.specs.scgan = spec("scgan:cpu", image_size=32, epochs=16)
  c.specs.affgan = spec("affgan:cpu", image_size=32, epochs=16)
  c.specs.smcc = spec("smcc", epochs=1, **feat)
  c.specs.dfdaad = spec("dfdaad", epochs=1, batch_size=10, **feat)
  c.specs.patchcore = spec("smcc", epochs=0, bank="greedy_coreset", knn_k=1, **feat)
  return c
