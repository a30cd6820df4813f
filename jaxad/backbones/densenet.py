"""DenseNet121 in Flax, matching torchvision's ``densenet121`` exactly.

Variable names follow torchvision's state dict with the ``features.`` prefix dropped
(``features.denseblock1.denselayer1.conv1`` -> ``denseblock1/denselayer1/conv1``). BatchNorm is
frozen (eps 1e-5). Inputs are NHWC, already ImageNet-normalised.

Feature layers: ``denseblockN`` is the block's concatenated output (before the transition);
``transitionN`` is torchvision's ``features.transitionN`` output, i.e. after its 2x2 average
pooling (half the resolution of ``denseblockN``); ``norm5`` is the final BN followed by the ReLU
the classifier applies.

References:
  Huang et al., "Densely Connected Convolutional Networks", CVPR 2017.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxad.backbones.common import Collector, check_layers, frozen_bn, torch_pad

__all__ = ["DenseNet", "densenet121", "feature_layers"]

_EPS = 1e-5
_CONFIGS = {"densenet121": dict(growth=32, blocks=(6, 12, 24, 16), init=64, bn_size=4)}


def feature_layers(name: str = "densenet121") -> dict[str, tuple[int, int]]:
  """Layer name -> (stride, channels) for a DenseNet variant."""
  cfg = _CONFIGS[name]
  out = {"stem": (4, cfg["init"])}
  ch, stride = cfg["init"], 4
  for i, n in enumerate(cfg["blocks"]):
    ch += n * cfg["growth"]
    out[f"denseblock{i + 1}"] = (stride, ch)
    if i != len(cfg["blocks"]) - 1:
      ch //= 2
      stride *= 2
      out[f"transition{i + 1}"] = (stride, ch)
  out["norm5"] = (stride, ch)
  return out


class DenseLayer(nn.Module):
  """BN-ReLU-Conv1x1-BN-ReLU-Conv3x3 producing ``growth`` new channels."""
  growth: int
  bn_size: int

  @nn.compact
  def __call__(self, x):
    y = nn.relu(frozen_bn(_EPS, "norm1")(x))
    y = nn.Conv(self.bn_size * self.growth, (1, 1), use_bias=False, padding="VALID",
                name="conv1")(y)
    y = nn.relu(frozen_bn(_EPS, "norm2")(y))
    return nn.Conv(self.growth, (3, 3), padding=torch_pad(1), use_bias=False, name="conv2")(y)


class DenseBlock(nn.Module):
  """``n`` dense layers, each fed the concatenation of all previous outputs."""
  n: int
  growth: int
  bn_size: int

  @nn.compact
  def __call__(self, x):
    feats = [x]
    for i in range(self.n):
      y = DenseLayer(self.growth, self.bn_size, name=f"denselayer{i + 1}")(
        jnp.concatenate(feats, axis=-1))
      feats.append(y)
    return jnp.concatenate(feats, axis=-1)


class Transition(nn.Module):
  """BN-ReLU-Conv1x1 (halve channels) then 2x2 average pooling."""
  features: int

  @nn.compact
  def __call__(self, x):
    x = nn.relu(frozen_bn(_EPS, "norm")(x))
    x = nn.Conv(self.features, (1, 1), use_bias=False, padding="VALID", name="conv")(x)
    return nn.avg_pool(x, (2, 2), (2, 2))


class DenseNet(nn.Module):
  """torchvision DenseNet. ``__call__(x)`` -> logits; with ``layers`` -> dict of maps.

  Attributes:
    variant: ``densenet121``.
    num_classes: classifier outputs.
  """
  variant: str = "densenet121"
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, layers: Sequence[str] | None = None):
    """Runs the network.

    Args:
      x: ``[B, H, W, 3]`` float32, ImageNet-normalised.
      layers: None for logits, else names from ``feature_layers(variant)``; computation stops
        after the deepest requested layer.

    Returns:
      Logits ``[B, num_classes]`` or ``{name: [B, h, w, c]}`` (plus ``"logits"`` if requested).
    """
    cfg = _CONFIGS[self.variant]
    col = Collector(check_layers(layers, feature_layers(self.variant), self.variant))
    x = nn.Conv(cfg["init"], (7, 7), (2, 2), torch_pad(3), use_bias=False, name="conv0")(x)
    x = nn.relu(frozen_bn(_EPS, "norm0")(x))
    x = nn.max_pool(x, (3, 3), (2, 2), torch_pad(1))
    if col.add("stem", x):
      return col.out
    ch = cfg["init"]
    for i, n in enumerate(cfg["blocks"]):
      x = DenseBlock(n, cfg["growth"], cfg["bn_size"], name=f"denseblock{i + 1}")(x)
      ch += n * cfg["growth"]
      if col.add(f"denseblock{i + 1}", x):
        return col.out
      if i != len(cfg["blocks"]) - 1:
        ch //= 2
        x = Transition(ch, name=f"transition{i + 1}")(x)
        if col.add(f"transition{i + 1}", x):
          return col.out
    x = nn.relu(frozen_bn(_EPS, "norm5")(x))
    if col.add("norm5", x):
      return col.out
    x = jnp.mean(x, axis=(1, 2))
    return col.finish(nn.Dense(self.num_classes, name="classifier")(x))


def densenet121(**kw) -> DenseNet:
  """Builds the ``densenet121`` module (keyword arguments: module attributes)."""
  return DenseNet("densenet121", **kw)
