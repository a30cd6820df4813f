"""Small building blocks shared by the backbone families (frozen BatchNorm, torch padding).

References:
  torchvision ``nn.BatchNorm2d`` in eval mode: ``(x - running_mean) / sqrt(running_var + eps)
  * weight + bias``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "frozen_bn", "torch_pad", "check_layers", "Collector"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frozen_bn(eps: float, name: str) -> nn.BatchNorm:
  """BatchNorm that always normalises with its stored running statistics (never updated)."""
  return nn.BatchNorm(use_running_average=True, epsilon=eps, momentum=0.9, name=name)


def torch_pad(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """PyTorch ``padding=p`` (symmetric, zeros) as a Flax padding spec."""
  return ((p, p), (p, p))


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
