"""Preset ``paper`` of ``experiments/benchmark_methods.py``: the papers' image sizes, backbones and
epochs on all 15 MVTec AD categories, three seeds; for GPUs / TPUs (days on a CPU).

RAMFAE 256 px, widths 64-512, 250 epochs, batch 16; SCGAN and AFF-GAN 256 px, widths from 64,
400 epochs, batch 64; SMCC WRN50-2 layers 1-4 (W = 1); DFDA-AD DenseNet121 ``denseblock2`` +
ResNet50 ``layer3``, 1 % k-means bank, batch 10; PatchCore-style WRN50-2 ``layer2`` + ``layer3``,
greedy coreset 10 %, 1-NN; feature methods at 256 -> 224 px. The torchvision checkpoints are not
on PyPI: give them with ``--config.specs.smcc.fields.weights_path=path/to/wide_resnet50_2-95faca4d.pth``
(likewise ``patchcore``, and ``dfdaad``'s ``weights_a`` = ``densenet121-a639ec97.pth`` /
``weights_b`` = ``resnet50-0676ba61.pth``) or put them in ``$JAXAD_WEIGHTS_DIR``. Usage::

  python experiments/benchmark_methods.py --config=experiments/configs/benchmark_paper.py \\
      --config.data_dir=path/to/mvtec_ad --out=runs/compare_mvtec_paper
"""

from __future__ import annotations

import ml_collections

from experiments.configs.benchmark_cpu import base_config, spec
from jaxad.data import MVTEC_CATEGORIES


def get_config() -> ml_collections.ConfigDict:
  """All MVTec AD categories, six methods at the papers' settings, seeds 0-2."""
  c = base_config()
  c.categories = ",".join(MVTEC_CATEGORIES)
  feat = dict(image_size=256, crop_size=224)
  wrn = dict(backbone="wide_resnet50_2", feature_stride=8)
  c.specs.conv_ae = spec("conv_ae", image_size=256, epochs=100, features=(32, 64, 128, 256))
  c.specs.ramfae = spec("ramfae", image_size=256, epochs=250)
  c.specs.scgan = spec("scgan", image_size=256, epochs=400, batch_size=64)
  c.specs.affgan = spec("affgan", image_size=256, epochs=400, batch_size=64)
  c.specs.smcc = spec("smcc", epochs=1, layers=("layer1", "layer2", "layer3", "layer4"), **wrn,
                      **feat)
  c.specs.dfdaad = spec("dfdaad", epochs=1, batch_size=10, backbone_a="densenet121",
                        layer_a="denseblock2", backbone_b="resnet50", layer_b="layer3", **feat)
  c.specs.patchcore = spec("smcc", epochs=0, bank="greedy_coreset", knn_k=1,
                           layers=("layer2", "layer3"), **wrn, **feat)
  return c
