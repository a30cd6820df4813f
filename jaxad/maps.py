"""Anomaly-map utilities: upsampling, Gaussian smoothing, normalisation, image scores.

All functions take ``[B,h,w]`` float maps and are jit-able (their non-array
arguments -- sizes, sigma, kernel size, modes, k -- are static Python values).
Only static properties (rank, sizes, argument values) are validated, so the
functions also work inside ``jax.jit`` / ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
  "upsample", "gaussian_kernel1d", "default_kernel_size", "gaussian_smooth", "upsample_smooth",
  "bilinear_matrix", "smooth_matrix", "minmax_normalize", "score_from_map",
]

_PAD_MODES = ("symmetric", "reflect", "edge", "constant", "wrap")


def _check_maps(maps, name: str = "maps") -> jax.Array:
  maps = jnp.asarray(maps)
  if maps.ndim != 3:
    raise ValueError(f"{name} must be [B,h,w], got shape {maps.shape}")
  if maps.size == 0:
    raise ValueError(f"{name} is empty (shape {maps.shape})")
  if not jnp.issubdtype(maps.dtype, jnp.floating):
    maps = maps.astype(jnp.float32)
  return maps


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
  """``size`` (an int or ``(H, W)``) as a pair of positive ints; ValueError otherwise."""
  if isinstance(size, (int, np.integer)):
    size = (int(size), int(size))
  size = tuple(int(s) for s in size)
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"size must be a positive int or (H, W), got {size}")
  return size


def upsample(maps, size: int | Sequence[int], method: str = "bilinear") -> jax.Array:
  """Resizes anomaly maps to the image size.

  Args:
    maps: ``[B,h,w]`` float maps (any range).
    size: target ``(H, W)`` or one int for a square output.
    method: ``"bilinear"`` (half-pixel centres, equal to PyTorch
      ``F.interpolate(mode="bilinear", align_corners=False)`` when upsampling) or ``"nearest"``
      (half-pixel centres, equal to PyTorch ``mode="nearest-exact"``).

  Returns:
    ``[B,H,W]`` maps of the input's float dtype. When downsampling, ``jax.image.resize``
    antialiases (like PyTorch ``antialias=True``).

  References:
    PatchCore (Roth et al., CVPR 2022) upsamples patch scores bilinearly to the image size.
  """
  maps = _check_maps(maps)
  size = _check_size(size)
  if method not in ("bilinear", "nearest"):
    raise ValueError(f"method must be 'bilinear' or 'nearest', got {method!r}")
  return jax.image.resize(maps, (maps.shape[0], *size), method=method)


def gaussian_kernel1d(sigma: float, kernel_size: int | None = None) -> np.ndarray:
  """Normalised 1-D Gaussian kernel (float64 NumPy, computed on the host).

  Args:
    sigma: standard deviation in pixels (> 0).
    kernel_size: odd length; ``None`` gives ``2 * round(4 * sigma) + 1`` (SciPy's ``truncate=4``).

  Returns:
    ``[kernel_size]`` weights summing to 1, as ``scipy.ndimage.gaussian_filter`` uses.
  """
  if not (isinstance(sigma, (int, float, np.floating, np.integer)) and sigma > 0):
    raise ValueError(f"sigma must be a number > 0, got {sigma!r}")
  if kernel_size is None:
    radius = int(4.0 * float(sigma) + 0.5)  # scipy: int(truncate * sd + 0.5)
  else:
    if not isinstance(kernel_size, (int, np.integer)) or kernel_size < 1 or kernel_size % 2 == 0:
      raise ValueError(f"kernel_size must be a positive odd int or None, got {kernel_size!r}")
    radius = int(kernel_size) // 2
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (x / float(sigma)) ** 2)
  return k / k.sum()


def gaussian_smooth(maps, sigma: float = 4.0, kernel_size: int | None = None,
                    mode: str = "symmetric") -> jax.Array:
  """Separable Gaussian smoothing of each map.

  Args:
    maps: ``[B,h,w]`` float maps.
    sigma: standard deviation in pixels (PatchCore: 4).
    kernel_size: odd kernel length (RAMFAE: 21); ``None`` -> ``2 * round(4 * sigma) + 1``.
    mode: ``jnp.pad`` mode for the borders. ``"symmetric"`` (default) repeats the edge pixel,
      i.e. SciPy's ``mode="reflect"``; ``"reflect"`` here is SciPy's ``"mirror"``; also
      ``"edge"`` (SciPy ``"nearest"``), ``"constant"`` (zeros), ``"wrap"``.

  Returns:
    ``[B,h,w]`` smoothed maps, same dtype; equal to
    ``scipy.ndimage.gaussian_filter(m, sigma, mode="reflect", radius=kernel_size // 2)`` per map
    (up to float32 rounding).

  References:
    PatchCore (sigma 4); RAMFAE ("Gaussian smoothing with a step size of 21").
  """
  maps = _check_maps(maps)
  if mode not in _PAD_MODES:
    raise ValueError(f"mode must be one of {_PAD_MODES}, got {mode!r}")
  k = gaussian_kernel1d(sigma, kernel_size)
  r = k.size // 2
  if r == 0:
    return maps
  x = jnp.pad(maps, ((0, 0), (r, r), (r, r)), mode=mode)[:, None]  # [B,1,h+2r,w+2r]
  kern = jnp.asarray(k, dtype=maps.dtype)
  dn = ("NCHW", "OIHW", "NCHW")
  x = jax.lax.conv_general_dilated(x, kern.reshape(1, 1, -1, 1), (1, 1), "VALID",
                                   dimension_numbers=dn, precision=jax.lax.Precision.HIGHEST)
  x = jax.lax.conv_general_dilated(x, kern.reshape(1, 1, 1, -1), (1, 1), "VALID",
                                   dimension_numbers=dn, precision=jax.lax.Precision.HIGHEST)
  return x[:, 0]


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """``[out_size, in_size]`` float64 matrix of :func:`upsample`'s bilinear resize along one axis.

  The weights of ``jax.image.resize(..., "bilinear")`` (triangle kernel, half-pixel centres,
  widened when shrinking: antialias), computed on the host: ``upsample(m)[b] = R_h m[b] R_w^T``.
  """
  if min(in_size, out_size) < 1:
    raise ValueError(f"sizes must be >= 1, got in_size={in_size}, out_size={out_size}")
  inv_scale = in_size / out_size
  kernel_scale = max(inv_scale, 1.0)
  sample = (np.arange(out_size, dtype=np.float64) + 0.5) * inv_scale - 0.5
  x = np.abs(sample[None, :] - np.arange(in_size, dtype=np.float64)[:, None]) / kernel_scale
  w = np.maximum(0.0, 1.0 - x)  # [in, out]
  total = w.sum(axis=0, keepdims=True)
  w = np.where(np.abs(total) > 1000.0 * float(np.finfo(np.float32).eps),
               w / np.where(total != 0, total, 1.0), 0.0)
  inside = (sample >= -0.5) & (sample <= in_size - 0.5)
  return np.where(inside[None, :], w, 0.0).T


def smooth_matrix(size: int, sigma: float, kernel_size: int | None = None,
                  mode: str = "symmetric") -> np.ndarray:
  """``[size, size]`` float64 matrix of :func:`gaussian_smooth` along one axis (borders included).

  ``gaussian_smooth(m)[b] = S_h m[b] S_w^T``; row ``i`` holds the kernel taps of output ``i``
  folded back onto the input by the padding ``mode`` (the ``jnp.pad`` / ``np.pad`` modes).
  """
  if mode not in _PAD_MODES:
    raise ValueError(f"mode must be one of {_PAD_MODES}, got {mode!r}")
  k = gaussian_kernel1d(sigma, kernel_size)
  r = k.size // 2
  padded = np.pad(np.eye(size), ((r, r), (0, 0)), mode=mode)  # [size + 2r, size] one-hot sources
  out = np.zeros((size, size))
  for t, kt in enumerate(k):
    out += kt * padded[t:t + size]
  return out


def upsample_smooth(maps, size: int | Sequence[int], sigma: float = 4.0,
                    kernel_size: int | None = None, mode: str = "symmetric") -> jax.Array:
  """Bilinear upsampling followed by Gaussian smoothing, as one small matrix per axis.

  Both steps are linear and separable, so ``gaussian_smooth(upsample(m, size), sigma)`` equals
  ``A_h m A_w^T`` with ``A = smooth_matrix(H) @ bilinear_matrix(h, H)`` (``[H, h]``, built on the
  host in float64): two matrix products per map instead of a ``kernel_size``-tap convolution at
  full size (PatchCore's maps, 28x28 -> 224x224 with sigma 4: ~20x fewer multiply-adds).

  Args:
    maps: ``[B,h,w]`` float maps.
    size: target ``(H, W)`` or one int for a square output.
    sigma, kernel_size, mode: as :func:`gaussian_smooth`.

  Returns:
    ``[B,H,W]`` maps of the input's float dtype, equal to
    ``gaussian_smooth(upsample(maps, size, "bilinear"), sigma, kernel_size, mode)`` up to float32
    rounding (tested).

  References:
    PatchCore (Roth et al., CVPR 2022): bilinear upsampling, Gaussian sigma 4.
  """
  maps = _check_maps(maps)
  size = _check_size(size)
  a_h, a_w = (smooth_matrix(n, sigma, kernel_size, mode) @ bilinear_matrix(m, n)
              for m, n in zip(maps.shape[1:], size))
  hi = jax.lax.Precision.HIGHEST
  x = jnp.matmul(maps, jnp.asarray(a_w.T, maps.dtype), precision=hi)  # [B, h, W]
  return jnp.einsum("Hh,bhW->bHW", jnp.asarray(a_h, maps.dtype), x, precision=hi)


def minmax_normalize(x, lo=None, hi=None) -> jax.Array:
  """Min-max normalisation over a whole test set (never per batch).

  Args:
    x: array of any shape, e.g. ``[N]`` image scores or ``[N,H,W]`` maps of the *whole* test set.
    lo: value mapped to 0; ``None`` -> ``min(x)``. Pass the test-set min when normalising in pieces.
    hi: value mapped to 1; ``None`` -> ``max(x)``.

  Returns:
    ``(x - lo) / (hi - lo)`` (float); all zeros when ``hi == lo``. Not clipped: values outside
    ``[lo, hi]`` map outside ``[0, 1]``.

  References:
    GANomaly / SCGAN / AFF-GAN score normalisation over the whole test set; anomalib's per-batch
    variant makes scores of different batches incomparable.
  """
  x = jnp.asarray(x)
  if x.size == 0:
    raise ValueError(f"x is empty (shape {x.shape})")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  lo = jnp.min(x) if lo is None else jnp.asarray(lo, x.dtype)
  hi = jnp.max(x) if hi is None else jnp.asarray(hi, x.dtype)
  span = hi - lo
  safe = jnp.where(span > 0, span, 1)
  return jnp.where(span > 0, (x - lo) / safe, jnp.zeros_like(x))


def score_from_map(maps, mode: str = "max", k: int | None = None) -> jax.Array:
  """Image anomaly score from its anomaly map.

  Args:
    maps: ``[B,h,w]`` float maps.
    mode: ``"max"`` (PatchCore, RAMFAE, SMCC) or ``"topk_mean"`` (mean of the ``k`` largest values).
    k: number of values for ``"topk_mean"``, ``1 <= k <= h * w``; must be ``None`` for ``"max"``.

  Returns:
    ``[B]`` scores, same dtype as ``maps``.
  """
  maps = _check_maps(maps)
  flat = maps.reshape(maps.shape[0], -1)
  if mode == "max":
    if k is not None:
      raise ValueError(f"k is only used with mode='topk_mean', got k={k!r} with mode='max'")
    return jnp.max(flat, axis=1)
  if mode == "topk_mean":
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= flat.shape[1]:
      raise ValueError(f"k must be an int in [1, h*w={flat.shape[1]}] for mode='topk_mean', "
                       f"got {k!r}")
    return jnp.mean(jax.lax.top_k(flat, int(k))[0], axis=1)
  raise ValueError(f"mode must be 'max' or 'topk_mean', got {mode!r}")


def default_kernel_size(sigma: float) -> int:
  """``2 * round(4 * sigma) + 1``: the kernel length SciPy uses for ``truncate=4``."""
  return 2 * int(4.0 * float(sigma) + 0.5) + 1

