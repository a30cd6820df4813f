"""Patch features for memory-bank methods: backbone layers fused into one map, one vector per position.

Pipeline (all jit-able, static shapes):

1. each requested backbone layer ``[B, h_l, w_l, c_l]`` is locally averaged over a ``pool x pool``
   neighbourhood (stride 1, borders averaged over the valid pixels only; PatchCore's "local
   neighbourhood aggregation", ``pool <= 1`` disables it);
2. every layer is resized bilinearly to one common grid ``[h, w]`` (antialiased when shrinking,
   half-pixel centres as PyTorch ``align_corners=False`` when enlarging);
3. the layers are concatenated along channels (``D_raw = sum_l c_l``);
4. optionally a fixed linear projection ``[D_raw, D]`` reduces the dimension: ``"random"`` (Gaussian
   ``N(0, 1/D)``, Johnson-Lindenstrauss) or ``"channel_avg"`` (averages runs of consecutive
   channels, equal to PyTorch ``adaptive_avg_pool1d`` over channels as PatchCore does).

Shared by SMCC (and meant for DFDA-AD): the fusion lives here once.

References:
  Roth et al., "Towards Total Recall in Industrial Anomaly Detection" (PatchCore), CVPR 2022, Sec. 3.1;
  Liu et al., SMCC, IEEE TIM 2023, Sec. III-A ("concat Resize(phi_j) to phi_c").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["PROJECTIONS", "local_average", "fuse_layers", "projection_matrix", "channel_avg_matrix"]

PROJECTIONS = ("none", "random", "channel_avg")


def local_average(x: jax.Array, size: int) -> jax.Array:
  """``size x size`` mean filter (stride 1, same size), borders averaged over valid pixels only.

  Args:
    x: ``[B, h, w, c]`` float feature map.
    size: odd window size >= 1 (1 returns ``x``).

  Returns:
    ``[B, h, w, c]`` averaged map (equal to PyTorch ``avg_pool2d(k, 1, k // 2,
    count_include_pad=False)``).
  """
  if size <= 1:
    return x
  if size % 2 == 0:
    raise ValueError(f"size: expected an odd window size, got {size}")
  pad = size // 2
  window, strides = (1, size, size, 1), (1, 1, 1, 1)
  padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  s = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
  ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
  n = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, padding)
  return s / n


def channel_avg_matrix(in_dim: int, out_dim: int) -> np.ndarray:
  """``[in_dim, out_dim]`` matrix of PyTorch ``adaptive_avg_pool1d`` over channels.

  Output channel ``i`` averages input channels ``floor(i * in / out) .. ceil((i + 1) * in / out) - 1``.
  """
  if not 1 <= out_dim <= in_dim:
    raise ValueError(f"out_dim: expected 1 <= out_dim <= in_dim={in_dim}, got {out_dim}")
  m = np.zeros((in_dim, out_dim), np.float32)
  for i in range(out_dim):
    lo = (i * in_dim) // out_dim
    hi = -((-(i + 1) * in_dim) // out_dim)
    m[lo:hi, i] = 1.0 / (hi - lo)
  return m


def projection_matrix(key: jax.Array, kind: str, in_dim: int, out_dim: int | None) -> jax.Array | None:
  """The fixed projection of step 4, or ``None`` when no projection applies.

  Args:
    key: PRNG key (used by ``"random"`` only).
    kind: one of ``PROJECTIONS``.
    in_dim: fused dimension ``D_raw``.
    out_dim: target dimension ``D`` (``None`` or ``>= in_dim``: no projection).

  Returns:
    ``[in_dim, out_dim]`` float32 matrix or ``None``.
  """
  if kind not in PROJECTIONS:
    raise ValueError(f"kind: expected one of {PROJECTIONS}, got {kind!r}")
  if kind == "none" or out_dim is None or out_dim >= in_dim:
    return None
  if out_dim < 1:
    raise ValueError(f"out_dim: expected >= 1, got {out_dim}")
  if kind == "channel_avg":
    return jnp.asarray(channel_avg_matrix(in_dim, out_dim))
  return jax.random.normal(key, (in_dim, out_dim), jnp.float32) / math.sqrt(out_dim)


def fuse_layers(features: Mapping[str, jax.Array], layers: Sequence[str], grid: tuple[int, int], *,
                pool: int = 3, projection: jax.Array | None = None) -> jax.Array:
  """Fuses named backbone maps into one patch-feature map (module docstring, steps 1-4).

  Args:
    features: ``{layer: [B, h_l, w_l, c_l]}`` float32 maps, e.g. from
      :func:`jaxad.backbones.extract_features`.
    layers: the layers to fuse, in concatenation order.
    grid: common output resolution ``(h, w)``.
    pool: odd local averaging window (``<= 1``: none).
    projection: optional ``[sum c_l, D]`` matrix from :func:`projection_matrix`.

  Returns:
    ``[B, h, w, D]`` float32 patch features (``D = sum c_l`` without projection).
  """
  maps = []
  for name in layers:
    f = local_average(features[name].astype(jnp.float32), pool)
    if f.shape[1:3] != tuple(grid):
      f = jax.image.resize(f, (f.shape[0], grid[0], grid[1], f.shape[3]), method="bilinear")
    maps.append(f)
  x = jnp.concatenate(maps, axis=-1)
  if projection is not None:
    x = jnp.einsum("bhwc,cd->bhwd", x, projection, precision=jax.lax.Precision.HIGHEST)
  return x
