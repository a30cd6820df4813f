"""ResNet18, ResNet50 and Wide ResNet50-2 in Flax, matching torchvision's definitions exactly.

Variable names follow torchvision's state dict (``layer1.0.conv1`` -> ``layer1_0/conv1``) so
``torch_weights.torch_to_flax`` converts a torchvision checkpoint directly. BatchNorm is frozen
(eps 1e-5, running statistics). Inputs are NHWC, already ImageNet-normalised.

References:
  He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (ResNet; torchvision's
  "v1.5" puts the stride on the 3x3 conv of the bottleneck).
  Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016 (WRN50-2: bottleneck width x2).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxad.backbones.common import Collector, check_layers, frozen_bn, torch_pad

__all__ = ["ResNet", "resnet18", "resnet50", "wide_resnet50_2", "CONFIGS"]

_EPS = 1e-5

# name -> (block kind, blocks per stage, bottleneck width multiplier)
CONFIGS = {
  "resnet18": ("basic", (2, 2, 2, 2), 1),
  "resnet50": ("bottleneck", (3, 4, 6, 3), 1),
  "wide_resnet50_2": ("bottleneck", (3, 4, 6, 3), 2),
}


class BasicBlock(nn.Module):
  """torchvision ``BasicBlock`` (two 3x3 convs, expansion 1)."""
  planes: int
  stride: int
  downsample: bool

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.planes, (3, 3), (self.stride, self.stride), torch_pad(1), use_bias=False,
                name="conv1")(x)
    y = nn.relu(frozen_bn(_EPS, "bn1")(y))
    y = nn.Conv(self.planes, (3, 3), (1, 1), torch_pad(1), use_bias=False, name="conv2")(y)
    y = frozen_bn(_EPS, "bn2")(y)
    if self.downsample:
      x = nn.Conv(self.planes, (1, 1), (self.stride, self.stride), "VALID", use_bias=False,
                  name="downsample_0")(x)
      x = frozen_bn(_EPS, "downsample_1")(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """torchvision ``Bottleneck`` (1x1, 3x3 with stride, 1x1; expansion 4)."""
  planes: int
  stride: int
  downsample: bool
  width_mult: int = 1

  @nn.compact
  def __call__(self, x):
    width = self.planes * self.width_mult
    y = nn.Conv(width, (1, 1), (1, 1), "VALID", use_bias=False, name="conv1")(x)
    y = nn.relu(frozen_bn(_EPS, "bn1")(y))
    y = nn.Conv(width, (3, 3), (self.stride, self.stride), torch_pad(1), use_bias=False,
                name="conv2")(y)
    y = nn.relu(frozen_bn(_EPS, "bn2")(y))
    y = nn.Conv(self.planes * 4, (1, 1), (1, 1), "VALID", use_bias=False, name="conv3")(y)
    y = frozen_bn(_EPS, "bn3")(y)
    if self.downsample:
      x = nn.Conv(self.planes * 4, (1, 1), (self.stride, self.stride), "VALID", use_bias=False,
                  name="downsample_0")(x)
      x = frozen_bn(_EPS, "downsample_1")(x)
    return nn.relu(x + y)


def feature_layers(name: str) -> dict[str, tuple[int, int]]:
  """Layer name -> (stride, channels) for a ResNet variant."""
  kind = CONFIGS[name][0]
  exp = 1 if kind == "basic" else 4
  return {"stem": (4, 64), "layer1": (4, 64 * exp), "layer2": (8, 128 * exp),
          "layer3": (16, 256 * exp), "layer4": (32, 512 * exp)}


class ResNet(nn.Module):
  """torchvision ResNet. ``__call__(x)`` -> logits ``[B, 1000]``; with ``layers`` -> dict of maps.

  Attributes:
    variant: ``resnet18``, ``resnet50`` or ``wide_resnet50_2``.
    num_classes: classifier outputs (1000 for ImageNet checkpoints).
  """
  variant: str = "resnet50"
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, layers: Sequence[str] | None = None):
    """Runs the network.

    Args:
      x: ``[B, H, W, 3]`` float32, ImageNet-normalised.
      layers: None for logits, else names from ``feature_layers(variant)``; the forward pass
        stops after the deepest requested layer.

    Returns:
      Logits ``[B, num_classes]`` or ``{name: [B, h, w, c]}`` (plus ``"logits"`` if requested).
    """
    kind, blocks, width_mult = CONFIGS[self.variant]
    col = Collector(check_layers(layers, feature_layers(self.variant), self.variant))
    x = nn.Conv(64, (7, 7), (2, 2), torch_pad(3), use_bias=False, name="conv1")(x)
    x = nn.relu(frozen_bn(_EPS, "bn1")(x))
    x = nn.max_pool(x, (3, 3), (2, 2), torch_pad(1))
    if col.add("stem", x):
      return col.out
    in_ch = 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
      for j in range(n):
        stride = 2 if (stage > 0 and j == 0) else 1
        out_ch = planes * (1 if kind == "basic" else 4)
        down = j == 0 and (stride != 1 or in_ch != out_ch)
        name = f"layer{stage + 1}_{j}"
        if kind == "basic":
          x = BasicBlock(planes, stride, down, name=name)(x)
        else:
          x = Bottleneck(planes, stride, down, width_mult, name=name)(x)
        in_ch = out_ch
      if col.add(f"layer{stage + 1}", x):
        return col.out
    x = jnp.mean(x, axis=(1, 2))
    return col.finish(nn.Dense(self.num_classes, name="fc")(x))


def resnet18(**kw) -> ResNet:
  """Builds the ``resnet18`` module (keyword arguments: module attributes)."""
  return ResNet("resnet18", **kw)


def resnet50(**kw) -> ResNet:
  """Builds the ``resnet50`` module (keyword arguments: module attributes)."""
  return ResNet("resnet50", **kw)


def wide_resnet50_2(**kw) -> ResNet:
  """Builds the ``wide_resnet50_2`` module (keyword arguments: module attributes)."""
  return ResNet("wide_resnet50_2", **kw)
