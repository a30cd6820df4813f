"""MobileNetV2 (width 1.0) in Flax, matching torchvision's ``mobilenet_v2`` exactly.

Variable names follow torchvision's state dict (``features.1.conv.0.0`` ->
``features_1/conv_0_0``). BatchNorm is frozen (eps 1e-5); activations are ReLU6; padding is
PyTorch's symmetric ``(k - 1) // 2``. Inputs are NHWC, already ImageNet-normalised.

References:
  Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018 (Table 2).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxad.backbones.convs import DenseConv, PointwiseConv
from jaxad.backbones.common import (Collector, check_layers, frozen_bn, inverted_bottleneck,
                                    torch_pad)

__all__ = ["MobileNetV2", "mobilenet_v2", "feature_layers"]

_EPS = 1e-5
# (expansion t, output channels c, repeats n, first stride s) -- the paper's Table 2.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))
# feature name -> index of the torchvision ``features`` module whose output it is.
_TAPS = {"stride2": 1, "stride4": 3, "stride8": 6, "stride16": 13, "stride32": 17, "head": 18}


def feature_layers(name: str = "mobilenet_v2") -> dict[str, tuple[int, int]]:
  """Layer name -> (stride, channels); ``head`` is the 1x1 conv to 1280 channels."""
  del name
  return {"stride2": (2, 16), "stride4": (4, 24), "stride8": (8, 32), "stride16": (16, 96),
          "stride32": (32, 320), "head": (32, 1280)}


class InvertedResidual(nn.Module):
  """Expand 1x1 (ReLU6) -> depthwise 3x3 (ReLU6) -> project 1x1 (linear), residual if s=1."""
  in_ch: int
  out_ch: int
  stride: int
  expand: int
  conv_method: str = "auto"

  @nn.compact
  def __call__(self, x):
    i = 1 if self.expand != 1 else 0  # torchvision numbers the sub-layers from the expand conv
    return inverted_bottleneck(
        x, out_ch=self.out_ch, kernel=3, stride=self.stride, expand=self.expand, eps=_EPS,
        depthwise_padding=torch_pad(1),
        names=("conv_0_0", "conv_0_1", f"conv_{i}_0", f"conv_{i}_1", f"conv_{i + 1}",
               f"conv_{i + 2}"), conv_method=self.conv_method)


class MobileNetV2(nn.Module):
  """torchvision MobileNetV2. ``__call__(x)`` -> logits; with ``layers`` -> dict of maps.

  Attributes:
    num_classes: classifier outputs.
    conv_method: how the convolutions are computed: ``"auto"`` (per backend), ``"native"``
      (``lax`` convolutions) or ``"unrolled"`` (depthwise as fused shifted products, 1x1 and stem
      as matrix products; fast on XLA:CPU); same parameters and function
      (``jaxad.backbones.convs``).
  """
  num_classes: int = 1000
  conv_method: str = "auto"

  @nn.compact
  def __call__(self, x, layers: Sequence[str] | None = None):
    """Runs the network.

    Args:
      x: ``[B, H, W, 3]`` float32, ImageNet-normalised.
      layers: None for logits, else names from ``feature_layers()``; computation stops after
        the deepest requested layer.

    Returns:
      Logits ``[B, num_classes]`` or ``{name: [B, h, w, c]}`` (plus ``"logits"`` if requested).
    """
    col = Collector(check_layers(layers, feature_layers(), "mobilenet_v2"))
    taps = {v: k for k, v in _TAPS.items()}
    x = DenseConv(32, 3, 2, torch_pad(1), self.conv_method, name="features_0_0")(x)
    x = nn.relu6(frozen_bn(_EPS, "features_0_1")(x))
    in_ch, idx = 32, 1
    for t, c, n, s in _SETTINGS:
      for j in range(n):
        x = InvertedResidual(in_ch, c, s if j == 0 else 1, t, self.conv_method,
                             name=f"features_{idx}")(x)
        in_ch = c
        if idx in taps and col.add(taps[idx], x):
          return col.out
        idx += 1
    x = PointwiseConv(1280, self.conv_method, name="features_18_0")(x)
    x = nn.relu6(frozen_bn(_EPS, "features_18_1")(x))
    if col.add("head", x):
      return col.out
    x = jnp.mean(x, axis=(1, 2))  # dropout before the classifier is identity at eval
    return col.finish(nn.Dense(self.num_classes, name="classifier_1")(x))


def mobilenet_v2(**kw) -> MobileNetV2:
  """Builds the ``mobilenet_v2`` module (keyword arguments: module attributes)."""
  return MobileNetV2(**kw)
