"""Attention blocks (channel / spatial re-weighting of NHWC feature maps).

* :class:`CoordinateAttention` (Hou et al. 2021), used by RAMFAE's MFFE.

Later methods add their blocks here (MS-CAM / AFF for SCGAN and AFF-GAN, the CBAM
variant and query-key attention for DFDA-AD) so each exists once.

References:
  Hou, Zhou, Feng, "Coordinate Attention for Efficient Mobile Network Design",
  CVPR 2021 (arXiv:2103.02907), Eqs. (4)-(9) and the authors' ``CoordAtt`` code.
  Sun, Wang, Li, "RAMFAE", 2023, Sect. 3.1.1, Eqs. (1)-(5), Fig. 4.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxad.nn.layers import batch_norm, conv1x1

__all__ = ["hard_swish", "CoordinateAttention"]


def hard_swish(x: jax.Array) -> jax.Array:
  """``x * relu6(x + 3) / 6`` (the non-linearity of the reference CoordAtt)."""
  return x * jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


_ACTIVATIONS = {"hard_swish": hard_swish, "relu": nn.relu}


class CoordinateAttention(nn.Module):
  """Coordinate attention: direction-aware pooling, shared 1x1 transform, two sigmoid gates.

  ``z^h = mean_W x`` ``[B, H, 1, C]`` and ``z^w = mean_H x`` (Eqs. 1-2) are concatenated
  along the spatial axis, passed through a shared 1x1 conv (C -> ``mip``), BatchNorm and
  the non-linearity ``delta`` (Eq. 3); split back; ``g^h = sigmoid(F_h(f^h))``,
  ``g^w = sigmoid(F_w(f^w))`` (Eq. 4); ``y = x * g^h * g^w`` (Eq. 5).

  Attributes:
    reduction: channel reduction, ``mip = max(min_channels, C // reduction)`` (reference 32).
    min_channels: lower bound of ``mip`` (reference 8).
    activation: ``"hard_swish"`` (reference) or ``"relu"``.

  Input ``[B, H, W, C]``; output the same shape (``x`` re-weighted by gates in (0, 1)).
  """
  reduction: int = 32
  min_channels: int = 8
  activation: str = "hard_swish"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.activation not in _ACTIVATIONS:
      raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
    _, h, w, c = x.shape
    mip = max(self.min_channels, c // self.reduction)
    z_h = jnp.mean(x, axis=2, keepdims=True)                         # [B, H, 1, C]
    z_w = jnp.mean(x, axis=1, keepdims=True).transpose(0, 2, 1, 3)   # [B, W, 1, C]
    f = jnp.concatenate([z_h, z_w], axis=1)                          # [B, H + W, 1, C]
    f = conv1x1(mip, name="conv1")(f)
    f = _ACTIVATIONS[self.activation](batch_norm(train, name="bn1")(f))
    f_h, f_w = f[:, :h], f[:, h:].transpose(0, 2, 1, 3)              # [B,H,1,m], [B,1,W,m]
    g_h = jax.nn.sigmoid(conv1x1(c, name="conv_h")(f_h))
    g_w = jax.nn.sigmoid(conv1x1(c, name="conv_w")(f_w))
    return x * g_h * g_w
