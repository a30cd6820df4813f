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

Shared by SMCC and DFDA-AD: the fusion lives here once, and so do the memory-bank plumbing both
use (bank padding to whole kNN blocks, blocked nearest-bank search, patch scores -> image scores
and smoothed maps, the batch check and the per-batch feature loop with progress).

References:
  Roth et al., "Towards Total Recall in Industrial Anomaly Detection" (PatchCore), CVPR 2022, Sec. 3.1;
  Liu et al., SMCC, IEEE TIM 2023, Sec. III-A ("concat Resize(phi_j) to phi_c").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxad import maps as maps_lib
from jaxad.cluster.knn import knn_core, nearest_sq_dists
from jaxad.progress import Progress

__all__ = ["PROJECTIONS", "KNN_BLOCK", "QUERY_BLOCK", "local_average", "fuse_layers",
           "projection_matrix", "channel_avg_matrix", "to_rgb", "check_image_batch", "bank_layout",
           "pack_rows", "nearest_rows", "knn_patch_scores", "scores_and_maps", "batch_features"]

PROJECTIONS = ("none", "random", "channel_avg")
KNN_BLOCK = 2048
"""Bank rows per block of the kNN search for banks of more than 4096 entries."""
QUERY_BLOCK = 1024
"""Query rows per block of :func:`nearest_rows` for more than that many queries."""


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


# ----------------------------------------------------------------------------- memory banks


def to_rgb(images: jax.Array, channels: int) -> jax.Array:
  """``[B, H, W, channels]`` images as float32 RGB (1 channel replicated three times)."""
  if images.ndim != 4 or images.shape[-1] != channels:
    raise ValueError(f"images: expected [B, H, W, {channels}], got {tuple(images.shape)}")
  images = images.astype(jnp.float32)
  return jnp.repeat(images, 3, axis=-1) if channels == 1 else images


def check_image_batch(batch: Mapping[str, Any], image_size: int, channels: int,
                      name: str = "batch") -> None:
  """Checks ``batch["image"]``: float ``[B, image_size, image_size, channels]``.

  Raises:
    TypeError: not a dict with ``image``, or an integer dtype.
    ValueError: another shape.
  """
  if not isinstance(batch, Mapping) or "image" not in batch:
    raise TypeError(f"{name}: expected a dict with 'image' [B,H,W,C], got {type(batch).__name__}")
  shape = tuple(np.shape(batch["image"]))
  want = (image_size, image_size, channels)
  if len(shape) != 4 or shape[1:] != want:
    raise ValueError(f"{name}['image']: expected shape [B, {want[0]}, {want[1]}, {want[2]}] "
                     f"(config.image_size, config.channels), got {shape}")
  dtype = getattr(batch["image"], "dtype", None) or np.asarray(batch["image"]).dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name}['image']: expected float32 in [0, 1], got {dtype}")


def bank_layout(n: int) -> tuple[int, int]:
  """``(slots, block)`` for ``n`` bank entries: ``slots`` a multiple of the kNN ``block``.

  Up to 4096 entries: one block of ``n`` rounded up to 8. More: the fewest blocks of at most
  :data:`KNN_BLOCK` rows, all of one size (a multiple of 8), so that at most ``8 x blocks - 1``
  slots are padding (16,386 entries: 9 x 1,824 = 16,416 slots; 12,544: 7 x 1,792, none). The
  search cost grows with the slots, padding included. ``bank_layout(slots)`` returns the same
  layout again.
  """
  if n <= 4096:
    s = -(-n // 8) * 8
    return s, s
  blocks = -(-n // KNN_BLOCK)
  block = -(-(-(-n // blocks)) // 8) * 8
  return blocks * block, block


def pack_rows(rows: jax.Array, valid: jax.Array, slots: int) -> tuple[jax.Array, jax.Array]:
  """Pads ``[n, D]`` rows / ``[n]`` validity to ``slots`` rows (zeros, invalid)."""
  n = rows.shape[0]
  if n > slots:
    raise ValueError(f"memory bank: {n} patches do not fit in {slots} slots")
  return (jnp.pad(rows, ((0, slots - n), (0, 0))),
          jnp.pad(valid.astype(bool), (0, slots - n), constant_values=False))


def nearest_rows(queries: jax.Array, bank: jax.Array, bank_valid: jax.Array, *, k: int,
                 block: int) -> tuple[jax.Array, jax.Array]:
  """Exact ``k`` nearest valid bank rows of every query (blocked, no gradient; jit-able).

  Args:
    queries: ``[N, D]`` float32.
    bank: ``[S, D]`` with ``S % block == 0`` (see :func:`bank_layout`).
    bank_valid: ``[S]`` bool, False for padding rows.
    k: neighbours (static), ``<= block``.
    block: bank rows per block (static).

  Returns:
    ``(sq_dist [N, k], indices [N, k] int32)`` ascending per row (squared Euclidean).
  """
  n = queries.shape[0]
  qb = QUERY_BLOCK if n > QUERY_BLOCK else -(-n // 8) * 8
  q = jnp.pad(jax.lax.stop_gradient(queries), ((0, -(-n // qb) * qb - n), (0, 0)))
  sq, idx = knn_core(q, jax.lax.stop_gradient(bank), bank_valid, k=k, block=block, query_block=qb)
  return sq[:n], idx[:n]


def knn_patch_scores(feats: jax.Array, bank: jax.Array, bank_valid: jax.Array, k: int) -> jax.Array:
  """``[B, h, w]`` mean Euclidean distance of every patch to its ``k`` nearest valid bank rows.

  All ``B h w`` patches of the batch are searched together in one pass over the bank blocks
  (:func:`jaxad.cluster.knn.nearest_sq_dists`: distances only, the batch axis stays sharded).

  Args:
    feats: ``[B, h, w, D]`` patch features (may be sharded on the batch axis).
    bank: ``[S, D]`` with ``S`` from :func:`bank_layout` (e.g. :func:`pack_rows`).
    bank_valid: ``[S]`` bool.
    k: neighbours averaged (static, >= 1).

  Returns:
    ``[B, h, w]`` float32 distances >= 0.
  """
  b, h, w, d = feats.shape
  slots = bank.shape[0]
  _, block = bank_layout(slots)
  if slots % block:
    raise ValueError(f"bank: {slots} rows, expected a multiple of {block} (pack it with pack_rows)")
  sq = nearest_sq_dists(feats.reshape(b * h * w, d), bank, bank_valid, k=k, block=block)
  return jnp.mean(jnp.sqrt(sq), axis=-1).reshape(b, h, w)


def scores_and_maps(patch: jax.Array, image_hw: tuple[int, int],
                    sigma: float) -> tuple[jax.Array, jax.Array]:
  """Image scores (max patch score) and maps (bilinear to ``image_hw``, Gaussian ``sigma``).

  The map is :func:`jaxad.maps.upsample_smooth`: the bilinear upsampling and the smoothing as one
  ``[H, h]`` / ``[W, w]`` matrix per axis (equal to ``gaussian_smooth(upsample(patch))`` up to
  float32 rounding, far cheaper than the 33-tap convolution at image size).

  Args:
    patch: ``[B, h, w]`` patch scores.
    image_hw: ``(H, W)`` of the images.
    sigma: Gaussian smoothing in pixels (0: none).

  Returns:
    ``scores [B]`` and ``maps [B, H, W]`` (PatchCore's anomaly maps).
  """
  scores = jnp.max(patch.reshape(patch.shape[0], -1), axis=1)
  if sigma > 0:
    return scores, maps_lib.upsample_smooth(patch, tuple(image_hw), sigma)
  return scores, maps_lib.upsample(patch, tuple(image_hw), method="bilinear")


def batch_features(features: Callable[[Any], Any], check: Callable[[Mapping[str, Any], str], None],
                   batches: Iterable[Mapping[str, Any]],
                   desc: str) -> Iterator[tuple[Mapping[str, Any], np.ndarray, np.ndarray]]:
  """``(batch, features(images) on the host, valid [B])`` per batch, after ``check(batch, name)``.

  Args:
    features: maps ``batch["image"]`` to a ``[B, ...]`` array (typically a jitted function).
    check: validates one batch, raising with ``name`` (``"batches[i]"``) in the message.
    batches: iterable of dicts with ``image`` and optional ``valid`` (host or sharded arrays).
    desc: progress label.
  """
  with Progress(desc=desc, unit="batch") as bar:
    for i, batch in enumerate(batches):
      check(batch, f"batches[{i}]")
      images = batch["image"]
      valid = np.asarray(batch["valid"], bool) if "valid" in batch else np.ones(images.shape[0], bool)
      yield batch, np.asarray(features(images)), valid
      bar.update(1)
