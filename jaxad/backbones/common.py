"""Small building blocks shared by the backbone families (frozen BatchNorm, torch padding).

References:
  torchvision ``nn.BatchNorm2d`` in eval mode: ``(x - running_mean) / sqrt(running_var + eps)
  * weight + bias``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxad.backbones.convs import DepthwiseConv, PointwiseConv

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "frozen_bn", "torch_pad", "inverted_bottleneck",
           "check_layers", "Collector"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frozen_bn(eps: float, name: str) -> nn.BatchNorm:
  """BatchNorm that always normalises with its stored running statistics (never updated)."""
  return nn.BatchNorm(use_running_average=True, epsilon=eps, momentum=0.9, name=name)


def torch_pad(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """PyTorch ``padding=p`` (symmetric, zeros) as a Flax padding spec."""
  return ((p, p), (p, p))


def inverted_bottleneck(x: jnp.ndarray, *, out_ch: int, kernel: int, stride: int, expand: int,
                        eps: float, depthwise_padding: Any,
                        names: Sequence[str], conv_method: str = "auto") -> jnp.ndarray:
  """Mobile inverted bottleneck (MobileNetV2 / EfficientNet-Lite, no squeeze-excite).

  Expand 1x1 conv + frozen BN + ReLU6 (skipped when ``expand == 1``), depthwise
  ``kernel x kernel`` conv + BN + ReLU6, linear 1x1 projection + BN; residual when the
  stride is 1 and the channels match (drop-connect is the identity at inference).
  Call it inside a compact Flax module: the layers become that module's children, named
  by ``names`` so checkpoint conversion keeps the original parameter names.

  Args:
    x: ``[B, H, W, C_in]`` float32.
    out_ch: output channels.
    kernel, stride: depthwise kernel size and stride.
    expand: expansion ratio (hidden channels = ``C_in * expand``).
    eps: BatchNorm epsilon.
    depthwise_padding: Flax padding of the depthwise conv (``"SAME"`` or explicit pairs).
    names: 6 names (expand conv, expand BN, depthwise conv, depthwise BN, projection conv,
      projection BN); the first two are unused when ``expand == 1``.
    conv_method: how the convolutions are computed (``jaxad.backbones.convs``: ``"auto"``,
      ``"native"`` or ``"unrolled"``); same parameters and function either way.
  Returns:
    ``[B, H / stride, W / stride, out_ch]``.
  """
  in_ch = x.shape[-1]
  hidden = in_ch * expand
  y = x
  if expand != 1:
    y = PointwiseConv(hidden, conv_method, name=names[0])(y)
    y = nn.relu6(frozen_bn(eps, names[1])(y))
  y = DepthwiseConv(kernel, stride, depthwise_padding, conv_method, name=names[2])(y)
  y = nn.relu6(frozen_bn(eps, names[3])(y))
  y = PointwiseConv(out_ch, conv_method, name=names[4])(y)
  y = frozen_bn(eps, names[5])(y)
  if stride == 1 and in_ch == out_ch:
    return x + y
  return y


def check_layers(layers: Sequence[str] | None, available: dict, model: str) -> tuple[str, ...]:
  """Validates requested layer names (static; ``"logits"`` is always allowed) as a tuple."""
  if layers is None:
    return ()
  if isinstance(layers, str):
    layers = (layers,)
  layers = tuple(layers)
  unknown = [l for l in layers if l not in available and l != "logits"]
  if unknown or not layers:
    raise ValueError(f"layers: expected a non-empty subset of {list(available) + ['logits']} "
                     f"for {model}, got {list(layers)}")
  return layers


class Collector:
  """Records requested intermediate maps and tells the forward pass when it may stop."""

  def __init__(self, layers: tuple[str, ...]):
    self.wanted = set(layers)
    self.out: dict[str, jnp.ndarray] = {}

  @property
  def active(self) -> bool:
    return bool(self.wanted)

  def add(self, name: str, x) -> bool:
    """Stores ``x`` under ``name`` if requested; returns True when everything is collected."""
    if name in self.wanted:
      self.out[name] = x
    return self.active and len(self.out) == len(self.wanted)

  def finish(self, logits):
    """Returns ``logits`` alone (no layers requested) or the dict with ``"logits"`` added."""
    if not self.active:
      return logits
    self.out["logits"] = logits
    return self.out
