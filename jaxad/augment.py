"""Synthetic-anomaly augmentations as jit-able, PRNG-keyed batch transforms.

Every anomaly transform has the signature

  ``fn(key, images, **config) -> (augmented, mask)``

* ``key``: one typed PRNG key (``jax.random.key``; a raw ``uint32[2]`` key is also
  accepted). It is split into one independent key per image, so image ``b`` of a
  batch depends only on ``key`` and ``b``.
* ``images``: ``float32 [B, H, W, C]`` with values in ``[0, 1]`` (C = 1 or 3 for
  colour jitter; any C otherwise).
* ``augmented``: same shape and dtype, values stay in ``[0, 1]`` (colour jitter
  clips; pasted/filled values come from the image or from ``[0, 1]``).
* ``mask``: ``float32 [B, H, W]`` in ``{0, 1}``: the **region mask**, i.e. the union
  of the pixels the transform wrote to (pasted, erased or filled). It is the set of
  changed pixels whenever written values differ from the old ones. Pasted patches
  always move (the destination is drawn from all positions except the source
  position), so for images whose pixels are pairwise distinct and non-zero (e.g.
  natural photos up to rare ties) ``mask == any(augmented != images, axis=-1)``
  exactly when rotation and jitter are off. Where a written value happens to equal
  the old one (a black Cutout square on a black pixel, a random colour equal to the
  pixel, a rotated patch whose rotation centre maps a pixel onto itself, jitter
  clipped to the same value) the mask still marks the pixel: it is the location
  of the synthetic anomaly, which is what reconstruction losses and localisation
  metrics need.

Configuration values are Python scalars/tuples, validated in Python at entry
(also when the call is being traced), so the functions can be jitted with the
config bound as static keyword arguments::

  aug = jax.jit(functools.partial(cut_paste, area_ratio=(0.02, 0.15)))
  images_aug, mask = aug(key, images)

All shapes are static: random sizes, positions and angles are realised with
coordinate arithmetic over the full image (copy-paste transforms may first copy
each source rectangle into a window of static, config-derived size), so the
transforms run inside ``jit``, ``vmap`` and ``lax.scan`` (e.g. inside a jitted
``train_step``) without a host round trip. With ``jax.jit(fn, donate_argnums=1)``
XLA writes the augmented batch into the donated input buffer (the fill
transforms always; the copy-paste ones with ``in_place=True``, which reads the
sources from separate windows). Axis-aligned regions are
outer products of 1-D row/column spans; for N overlapping patches the rows and
columns carry the patches as bits of uint32 words, so the last patch covering a
pixel is one AND and one count-leading-zeros per pixel (O(H W ceil(N / 32)), not
O(N H W)). Only rotated patches use a per-pixel inverse mapping.

``color_jitter`` is a photometric transform used on its own or per patch; it
returns only the images (every pixel may change, so a mask carries no
information). ``adjust_brightness``/``adjust_contrast``/``adjust_saturation``/
``adjust_hue`` and ``rgb_to_hsv``/``hsv_to_rgb`` are its deterministic parts.

References:
  * SCGAN: CopyPaste, N square patches of 1% of the image area (Sec. III-C,
    Figs. 5, 6, 13; Table 3: N = 30; Table 6: Cutout/Confetti baselines).
  * AFF-GAN: cut-paste, area ratio 0.02-0.15, rotation and colour dithering
    adjustable (Sec. 3.2); random erasing baseline (Table 4).
  * RAMFAE: Delete Paste, source region set to 0 (Sec. 3.2, Fig. 5).
  * Li et al., "CutPaste", CVPR 2021 (aspect ratio log-uniform in (0.3, 1/0.3),
    ColorJitter 0.1 on the patch).
  * DeVries & Taylor, "Cutout", 2017; Zhong et al., "Random Erasing", AAAI 2020;
    Liznerski et al., "FCDD", ICLR 2021 (confetti noise).
  * torchvision ``ColorJitter`` (factor ranges, grey weights, HSV hue shift).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "copy_paste",
    "cut_paste",
    "delete_paste",
    "cutout",
    "random_erasing",
    "confetti",
    "color_jitter",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "patch_side",
]

Array = jax.Array
Jitter = float | tuple[float, float, float, float]

# torchvision / ITU-R 601-2 luma weights (torchvision.transforms.functional.rgb_to_grayscale).
_GREY = (0.2989, 0.587, 0.114)


# --------------------------------------------------------------------------- validation


def _check_images(images: Any, name: str = "images") -> None:
  """Static checks only (rank, dtype), so it also works on tracers."""
  shape = getattr(images, "shape", None)
  dtype = getattr(images, "dtype", None)
  if shape is None or dtype is None:
    raise TypeError(f"{name}: expected a float32 array [B, H, W, C], got {type(images).__name__}")
  if len(shape) != 4:
    raise ValueError(f"{name}: expected rank 4 [B, H, W, C], got shape {tuple(shape)} "
                     f"(rank {len(shape)})")
  if dtype != jnp.float32:
    raise TypeError(f"{name}: expected dtype float32 (values in [0, 1]), got {dtype}")
  if shape[1] < 1 or shape[2] < 1 or shape[3] < 1:
    raise ValueError(f"{name}: expected H, W, C >= 1, got shape {tuple(shape)}")


def _as_key(key: Any) -> Array:
  dtype = getattr(key, "dtype", None)
  shape = getattr(key, "shape", None)
  if dtype is None:
    raise TypeError(f"key: expected a PRNG key (jax.random.key), got {type(key).__name__}")
  if jnp.issubdtype(dtype, jax.dtypes.prng_key):
    if shape != ():
      raise ValueError(f"key: expected a single key (shape ()), got shape {tuple(shape)}; "
                       "the function splits it per image itself")
    return key
  if dtype == jnp.uint32 and tuple(shape) == (2,):
    return jax.random.wrap_key_data(key)
  raise TypeError(f"key: expected a typed PRNG key (jax.random.key) or raw uint32[2], "
                  f"got dtype {dtype} shape {tuple(shape)}")


def _check_bool(name: str, value: Any) -> bool:
  if not isinstance(value, bool):
    raise TypeError(f"{name}: expected a bool, got {value!r}")
  return value


def _is_number(x: Any) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_int(name: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name}: expected an int >= {minimum}, got {value!r}")
  if value < minimum:
    raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
  return int(value)


def _check_ratio(name: str, value: Any) -> float:
  if not _is_number(value):
    raise TypeError(f"{name}: expected a float in (0, 1), got {value!r}")
  if not 0.0 < float(value) < 1.0:
    raise ValueError(f"{name}: expected a float in (0, 1), got {value}")
  return float(value)


def _check_range(name: str, value: Any, low: float, high: float,
                 high_inclusive: bool = False) -> tuple[float, float]:
  """A (lo, hi) pair with low < lo <= hi < high (or <= high); a number x means (x, x)."""
  if _is_number(value):
    value = (value, value)
  if (not isinstance(value, (tuple, list)) or len(value) != 2
      or not all(_is_number(v) for v in value)):
    raise TypeError(f"{name}: expected a number or a pair (lo, hi), got {value!r}")
  lo, hi = float(value[0]), float(value[1])
  top_ok = hi <= high if high_inclusive else hi < high
  if not (low < lo <= hi and top_ok):
    bracket = "]" if high_inclusive else ")"
    raise ValueError(f"{name}: expected {low} < lo <= hi {'<=' if high_inclusive else '<'} "
                     f"{high} (range ({low}, {high}{bracket}), got ({lo}, {hi})")
  return lo, hi


def _check_jitter(name: str, value: Any) -> tuple[float, float, float, float]:
  """Colour-jitter strengths (brightness, contrast, saturation, hue)."""
  if _is_number(value):
    value = (value,) * 4
  if (not isinstance(value, (tuple, list)) or len(value) != 4
      or not all(_is_number(v) for v in value)):
    raise TypeError(f"{name}: expected a number or a 4-tuple (brightness, contrast, saturation, "
                    f"hue), got {value!r}")
  b, c, s, h = (float(v) for v in value)
  for part, v in (("brightness", b), ("contrast", c), ("saturation", s)):
    if v < 0:
      raise ValueError(f"{name}: {part} must be >= 0, got {v}")
  if not 0.0 <= h <= 0.5:
    raise ValueError(f"{name}: hue must be in [0, 0.5], got {h}")
  return b, c, s, h


def _check_rotation(value: Any) -> float:
  if not _is_number(value):
    raise TypeError(f"rotation: expected a number of degrees in [0, 180], got {value!r}")
  if not 0.0 <= float(value) <= 180.0:
    raise ValueError(f"rotation: expected degrees in [0, 180], got {value}")
  return float(value)


def _check_fill(value: Any, allowed: tuple[str, ...]) -> str:
  if value not in allowed:
    raise ValueError(f"fill: expected one of {allowed}, got {value!r}")
  return value


def patch_side(height: int, width: int, area_ratio: float) -> int:
  """Side in pixels of the square patch covering ``area_ratio`` of an H x W image.

  Args:
    height, width: image size (>= 1).
    area_ratio: fraction of the image area in (0, 1).

  Returns:
    ``clip(round(sqrt(area_ratio * H * W)), 1, min(H, W))`` (a Python int), e.g.
    26 for 256 x 256 at 1% (1.03%), 6 for 64 x 64 (0.88%).
  """
  area_ratio = _check_ratio("area_ratio", area_ratio)
  side = int(round(math.sqrt(area_ratio * height * width)))
  return max(1, min(side, height, width))


# ----------------------------------------------------------------------- colour helpers


def _grey(x: Array) -> Array:
  """[..., C] -> [...]; luma for C == 3, the channel itself for C == 1, mean otherwise."""
  c = x.shape[-1]
  if c == 3:
    return _GREY[0] * x[..., 0] + _GREY[1] * x[..., 1] + _GREY[2] * x[..., 2]
  return jnp.mean(x, axis=-1)


def _frac(x: Array) -> Array:
  """x mod 1 (hue in turns) as x - floor(x); in [0, 1] (1.0 only by rounding of tiny negatives)."""
  return x - jnp.floor(x)


def rgb_to_hsv(rgb: Array) -> Array:
  """RGB -> HSV, all channels in [0, 1] (hue as a fraction of a turn).

  Args:
    rgb: float array [..., 3] in [0, 1].

  Returns:
    float array [..., 3]: hue in [0, 1), saturation and value in [0, 1]
    (hue = 0 and saturation = 0 for grey pixels, as ``skimage.color.rgb2hsv``).
  """
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  # The maximum channel is chosen by comparing the channels with each other, never by
  # testing ``max == channel``: under jit XLA may recompute a fused input (e.g. a blend)
  # with different rounding in the max and in the channel, and an equality test would
  # then pick the wrong hue sextant (errors up to a full colour turn, measured 0.99).
  is_r = (r >= g) & (r >= b)
  is_g = ~is_r & (g >= b)
  maxc = jnp.where(is_r, r, jnp.where(is_g, g, b))
  minc = jnp.minimum(r, jnp.minimum(g, b))
  delta = maxc - minc
  grey = delta <= 0
  safe_delta = jnp.where(grey, 1.0, delta)
  s = jnp.where(maxc > 0, delta / jnp.where(maxc > 0, maxc, 1.0), 0.0)
  h = jnp.where(is_r, (g - b) / safe_delta,
                jnp.where(is_g, 2.0 + (b - r) / safe_delta, 4.0 + (r - g) / safe_delta))
  h = jnp.where(grey, 0.0, _frac(h / 6.0))
  return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv: Array) -> Array:
  """HSV -> RGB, inverse of :func:`rgb_to_hsv`.

  Args:
    hsv: float array [..., 3]; hue in turns (taken modulo 1), saturation and value in [0, 1].

  Returns:
    float array [..., 3] in [0, 1].
  """
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  h6 = _frac(h) * 6.0

  def channel(n: float) -> Array:  # f(n) = v - v s clip(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6
    k = 6.0 * _frac((n + h6) / 6.0)
    return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)

  r, g, b = channel(5.0), channel(3.0), channel(1.0)
  return jnp.stack([r, g, b], axis=-1)


def _blend(x: Array, other: Array, factor: Array) -> Array:
  """torchvision's ``_blend``: factor * x + (1 - factor) * other, clipped to [0, 1]."""
  return jnp.clip(factor * x + (1.0 - factor) * other, 0.0, 1.0)


def _per_image(factor: Any, images: Array) -> Array:
  """Scalar or [B] factor -> broadcastable against [B, H, W, C]."""
  f = jnp.asarray(factor, jnp.float32)
  if f.ndim == 0:
    return f
  if f.shape != images.shape[:1]:
    raise ValueError(f"factor: expected a scalar or shape {images.shape[:1]}, got {f.shape}")
  return f[:, None, None, None]


def adjust_brightness(images: Array, factor: Any) -> Array:
  """Multiplies by ``factor`` and clips (torchvision ``adjust_brightness``).

  Args:
    images: float32 [B, H, W, C] in [0, 1].
    factor: scalar or [B], >= 0 (1 = identity).

  Returns:
    float32 [B, H, W, C] in [0, 1].
  """
  _check_images(images)
  return _blend(images, 0.0, _per_image(factor, images))


def adjust_contrast(images: Array, factor: Any) -> Array:
  """Blends each image with the mean of its grey image (torchvision ``adjust_contrast``).

  Args:
    images: float32 [B, H, W, C] in [0, 1]; grey = 0.2989 R + 0.587 G + 0.114 B (C = 3).
    factor: scalar or [B], >= 0 (1 = identity, 0 = uniform grey).

  Returns:
    float32 [B, H, W, C] in [0, 1].
  """
  _check_images(images)
  mean = jnp.mean(_grey(images), axis=(1, 2))[:, None, None, None]
  return _blend(images, mean, _per_image(factor, images))


def adjust_saturation(images: Array, factor: Any) -> Array:
  """Blends with the grey image (torchvision ``adjust_saturation``); identity for C != 3.

  Args:
    images: float32 [B, H, W, C] in [0, 1].
    factor: scalar or [B], >= 0 (1 = identity, 0 = grey).

  Returns:
    float32 [B, H, W, C] in [0, 1].
  """
  _check_images(images)
  if images.shape[-1] != 3:
    return images
  return _blend(images, _grey(images)[..., None], _per_image(factor, images))


def adjust_hue(images: Array, shift: Any) -> Array:
  """Rotates the hue by ``shift`` turns in HSV space (torchvision ``adjust_hue``).

  Args:
    images: float32 [B, H, W, C] in [0, 1]; identity for C != 3.
    shift: scalar or [B] in [-0.5, 0.5] (fraction of a full hue turn).

  Returns:
    float32 [B, H, W, C] in [0, 1].
  """
  _check_images(images)
  if images.shape[-1] != 3:
    return images
  f = _per_image(shift, images)
  f = f[..., 0] if f.ndim else f
  hsv = rgb_to_hsv(images)
  hsv = hsv.at[..., 0].set(_frac(hsv[..., 0] + f))
  return jnp.clip(hsv_to_rgb(hsv), 0.0, 1.0)


def _sample_jitter(key: Array, strengths: tuple[float, float, float, float],
                   shape: tuple[int, ...]) -> Array:
  """Factors [..., 4] = (brightness, contrast, saturation, hue shift), torchvision ranges."""
  b, c, s, h = strengths
  lo = jnp.array([max(0.0, 1.0 - b), max(0.0, 1.0 - c), max(0.0, 1.0 - s), -h], jnp.float32)
  hi = jnp.array([1.0 + b, 1.0 + c, 1.0 + s, h], jnp.float32)
  u = jax.random.uniform(key, shape + (4,), jnp.float32)
  return lo + (hi - lo) * u


def _jitter_pixels(x: Array, factors: Array, grey_mean: Array,
                   strengths: tuple[float, float, float, float]) -> Array:
  """Applies contrast -> brightness -> saturation -> hue to pixels.

  Args:
    x: [..., C] in [0, 1].
    factors: [..., 4] per-pixel (brightness, contrast, saturation, hue) factors.
    grey_mean: [...] grey mean of the region the contrast blends towards.
    strengths: static strengths; a zero strength skips that step entirely.
  """
  b, c, s, h = strengths
  if c > 0:
    x = _blend(x, grey_mean[..., None], factors[..., 1:2])
  if b > 0:
    x = _blend(x, 0.0, factors[..., 0:1])
  if x.shape[-1] == 3:
    if s > 0:
      x = _blend(x, _grey(x)[..., None], factors[..., 2:3])
    if h > 0:
      hsv = rgb_to_hsv(x)
      hsv = hsv.at[..., 0].set(_frac(hsv[..., 0] + factors[..., 3]))
      x = hsv_to_rgb(hsv)
  return jnp.clip(x, 0.0, 1.0)


def color_jitter(key: Any, images: Array, *, brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0, hue: float = 0.0) -> Array:
  """Random brightness, contrast, saturation and hue per image (torchvision ranges).

  Factors are drawn per image: brightness, contrast, saturation ~ U(max(0, 1 - x), 1 + x),
  hue shift ~ U(-hue, hue) turns. They are applied in the fixed order contrast,
  brightness, saturation, hue (torchvision draws a random order), each step
  clipped to [0, 1] like torchvision. Saturation and hue have no effect for C != 3.

  Args:
    key: PRNG key; split into one key per image.
    images: float32 [B, H, W, C] in [0, 1].
    brightness, contrast, saturation: strengths >= 0 (0 = off).
    hue: strength in [0, 0.5] (0 = off).

  Returns:
    float32 [B, H, W, C] in [0, 1] (returns only the images: every pixel may change).

  References:
    torchvision.transforms.ColorJitter; SCGAN Fig. 6 ("colour dithering" of patches).
  """
  strengths = _check_jitter("brightness/contrast/saturation/hue",
                            (brightness, contrast, saturation, hue))
  _check_images(images)
  key = _as_key(key)
  if not any(strengths):
    return images
  keys = jax.random.split(key, images.shape[0])

  def one(k, img):
    f = _sample_jitter(k, strengths, ())
    mean = jnp.mean(_grey(img))
    return _jitter_pixels(img, f, mean, strengths)

  return jax.vmap(one)(keys, images)


# ----------------------------------------------------------------------- geometry core


def _sample_top_left(key: Array, height: int, width: int, bh: Array, bw: Array,
                     avoid_y: Array | None = None, avoid_x: Array | None = None
                     ) -> tuple[Array, Array]:
  """Uniform integer top-left of a bh x bw box inside H x W, optionally excluding one position.

  Excluding the source position guarantees a pasted patch moves (so a pasted pixel
  differs from the pixel it covers unless the image repeats itself). When the box
  fills the image there is one position only and it is returned.
  """
  ny = height - bh + 1
  nx = width - bw + 1
  n = ny * nx
  if avoid_y is None:
    k = jax.random.randint(key, bh.shape, 0, n)
  else:
    excl = (avoid_y < ny) & (avoid_x < nx)
    e = avoid_y * nx + avoid_x
    m = jnp.maximum(n - excl.astype(jnp.int32), 1)
    k = jax.random.randint(key, bh.shape, 0, m)
    k = jnp.where(excl & (k >= e), k + 1, k)
    k = jnp.minimum(k, n - 1)
  return k // nx, k % nx


def _rect_sizes(key: Array, shape: tuple[int, ...], height: int, width: int,
                area_ratio: tuple[float, float], aspect_ratio: tuple[float, float]
                ) -> tuple[Array, Array]:
  """CutPaste sizes: area ~ U(area_ratio) * H * W, aspect = w / h log-uniform."""
  k_area, k_aspect = jax.random.split(key)
  area = jax.random.uniform(k_area, shape, minval=area_ratio[0],
                            maxval=area_ratio[1]) * (height * width)
  log_aspect = jax.random.uniform(k_aspect, shape, minval=math.log(aspect_ratio[0]),
                                  maxval=math.log(aspect_ratio[1]))
  aspect = jnp.exp(log_aspect)
  h = jnp.clip(jnp.round(jnp.sqrt(area / aspect)), 1, height).astype(jnp.int32)
  w = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, width).astype(jnp.int32)
  return h, w


@jax.tree_util.register_pytree_node_class
class _Patches:
  """Per-image geometry of N patches (all arrays [N]; [B, N] when batched by vmap)."""

  def __init__(self, h, w, dst_top, dst_left, angle=None, src_top=None, src_left=None,
               bh=None, bw=None):
    self.h, self.w = h, w
    self.dst_top, self.dst_left = dst_top, dst_left
    self.angle = angle
    self.src_top, self.src_left = src_top, src_left
    # bounding box of the (rotated) destination; equals (h, w) without rotation
    self.bh = h if bh is None else bh
    self.bw = w if bw is None else bw

  def tree_flatten(self):
    return (self.h, self.w, self.dst_top, self.dst_left, self.angle, self.src_top,
            self.src_left, self.bh, self.bw), None

  @classmethod
  def tree_unflatten(cls, aux, children):
    del aux
    return cls(*children)


def _sample_patches(key: Array, height: int, width: int, h: Array, w: Array, *,
                    with_source: bool, rotation: float) -> _Patches:
  """Random source (optional), angle and destination for patches of sizes h, w ([N])."""
  k_src, k_angle, k_dst = jax.random.split(key, 3)
  src_top = src_left = angle = None
  bh, bw = h, w
  if with_source:
    src_top, src_left = _sample_top_left(k_src, height, width, h, w)
  if rotation > 0:
    angle = jax.random.uniform(k_angle, h.shape, minval=-rotation,
                               maxval=rotation) * (math.pi / 180.0)
    c, s = jnp.abs(jnp.cos(angle)), jnp.abs(jnp.sin(angle))
    hf, wf = h.astype(jnp.float32), w.astype(jnp.float32)
    bh = jnp.clip(jnp.ceil(c * hf + s * wf) + 1, 1, height).astype(jnp.int32)
    bw = jnp.clip(jnp.ceil(s * hf + c * wf) + 1, 1, width).astype(jnp.int32)
  dst_top, dst_left = _sample_top_left(k_dst, height, width, bh, bw, src_top, src_left)
  return _Patches(h, w, dst_top, dst_left, angle, src_top, src_left, bh, bw)


def _local_coords(p: _Patches, ii: Array, jj: Array, n: Array | int | None = None
                  ) -> tuple[Array, Array, Array]:
  """Patch-local integer coordinates (a, b) of pixels (ii, jj) in rotated patches, inside-flags.

  The pixel is rotated back about the destination centre and rounded (nearest
  neighbour). ``n`` selects patch parameters: None broadcasts all N patches over a
  leading axis, an int picks one patch, an int array of the pixels' shape gathers
  per-pixel parameters.
  """
  def sel(x):
    if n is None:
      return x.reshape(x.shape + (1,) * ii.ndim)
    return x[n]

  h, w = sel(p.h), sel(p.w)
  hf, wf = h.astype(jnp.float32), w.astype(jnp.float32)
  cy = sel(p.dst_top).astype(jnp.float32) + (sel(p.bh).astype(jnp.float32) - 1.0) / 2.0
  cx = sel(p.dst_left).astype(jnp.float32) + (sel(p.bw).astype(jnp.float32) - 1.0) / 2.0
  ang = sel(p.angle)
  cos, sin = jnp.cos(ang), jnp.sin(ang)
  ry = ii.astype(jnp.float32) - cy
  rx = jj.astype(jnp.float32) - cx
  u = cos * ry + sin * rx
  v = -sin * ry + cos * rx
  a = jnp.round(u + (hf - 1.0) / 2.0).astype(jnp.int32)
  b = jnp.round(v + (wf - 1.0) / 2.0).astype(jnp.int32)
  inside = (a >= 0) & (a < h) & (b >= 0) & (b < w)
  return a, b, inside


def _spans(start: Array, size: Array, n: int) -> Array:
  """1-D membership [N, n] (bool) of index t in [start, start + size) for [N] starts/sizes."""
  t = jnp.arange(n, dtype=jnp.int32)
  return (t >= start[:, None]) & (t < (start + size)[:, None])


def _winner(p: _Patches, height: int, width: int) -> Array:
  """Index of the last patch covering each pixel ([H, W] int32, -1 where none).

  Axis-aligned patches are separable: patch k covers (i, j) iff its row span holds i
  and its column span holds j. Patches are packed as bits of uint32 words (32 per
  word) over rows and over columns, so ``rowbits[i] & colbits[j]`` is the set of
  patches covering a pixel and the last one is its highest set bit (count-leading-
  zeros): O(H W ceil(N / 32)) instead of O(N H W) inside-tests. Rotated patches fall
  back to the per-patch inverse-mapping test.
  """
  num = p.h.shape[0]
  if p.angle is not None:
    ii, jj = _grid(height, width)
    _, _, inside = _local_coords(p, ii, jj)
    order = jnp.arange(num, dtype=jnp.int32).reshape((num, 1, 1))
    return jnp.max(jnp.where(inside, order, -1), axis=0)
  rows = _spans(p.dst_top, p.h, height)
  cols = _spans(p.dst_left, p.w, width)
  win = jnp.full((height, width), -1, jnp.int32)
  for first in range(0, num, 32):
    last = min(num, first + 32)
    bits = jnp.left_shift(jnp.uint32(1), jnp.arange(last - first, dtype=jnp.uint32))[:, None]
    zero = jnp.uint32(0)
    rowbits = jnp.sum(jnp.where(rows[first:last], bits, zero), axis=0, dtype=jnp.uint32)
    colbits = jnp.sum(jnp.where(cols[first:last], bits, zero), axis=0, dtype=jnp.uint32)
    cover = rowbits[:, None] & colbits[None, :]  # distinct bits: the sums are bitwise ors
    top = first + 31 - lax.clz(cover).astype(jnp.int32)
    win = jnp.where(cover != 0, top, win)  # later words hold later patches
  return win


def _mix32(x: Array) -> Array:
  """lowbias32 integer hash (C. Wellons' hash-prospector): a bijection of uint32."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _hash_uniform(key: Array, shape: tuple[int, ...]) -> Array:
  """U[0, 1) float32 noise of ``shape``, keyed by ``key``, as a counter-based hash.

  Two uint32 words drawn from ``key`` (threefry) seed a keyed hash of each value's
  flat index: ``mix(mix(index ^ s0) + s1)``. The result is converted like
  ``jax.random.uniform`` (23 random mantissa bits, values in [0, 1)). It is
  elementwise, so XLA fuses it into its consumer and only the values that are
  used are computed: on XLA CPU ``jax.random.uniform`` (threefry, ~35 ns per
  value) dominated ``random_erasing`` at 256^2, this costs a few integer ops.
  """
  s = jax.random.bits(key, (2,), jnp.uint32)
  index = lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
  x = _mix32(_mix32(index ^ s[0]) + s[1])
  one = lax.bitcast_convert_type((x >> 9) | jnp.uint32(0x3F800000), jnp.float32)
  return one - 1.0


def _grid(height: int, width: int) -> tuple[Array, Array]:
  ii = jnp.arange(height, dtype=jnp.int32)[:, None]
  jj = jnp.arange(width, dtype=jnp.int32)[None, :]
  return jnp.broadcast_to(ii, (height, width)), jnp.broadcast_to(jj, (height, width))


def _rect_mask(top: Array, left: Array, h: Array, w: Array, height: int, width: int) -> Array:
  """[H, W] bool membership of one axis-aligned rectangle (scalars), as an outer product."""
  rows = _spans(top[None], h[None], height)[0]
  cols = _spans(left[None], w[None], width)[0]
  return rows[:, None] & cols[None, :]


def _per_patch(values: Array, n: Array) -> Array:
  """Patch parameters [N, ...] at every pixel: a broadcast scalar when N == 1, else values[n]."""
  if values.shape[0] == 1:
    return values[0]
  return values[n]


def _patch_grey_means(image: Array, p: _Patches) -> Array:
  """Grey mean of every source rectangle ([N]) as rows^T grey cols (one matmul, exact f32)."""
  height, width, _ = image.shape
  rows = _spans(p.src_top, p.h, height).astype(jnp.float32)
  cols = _spans(p.src_left, p.w, width).astype(jnp.float32)
  row_sums = jnp.matmul(rows, _grey(image), precision=lax.Precision.HIGHEST)  # [N, W]
  total = jnp.sum(row_sums * cols, axis=1)
  return total / (p.h * p.w).astype(jnp.float32)


def _window_side(size: int, area_ratio: tuple[float, float], aspect_ratio: tuple[float, float],
                 height: int, width: int, axis: int) -> int:
  """Static bound on a CutPaste rectangle's height (axis 0) or width (axis 1), in pixels.

  h = round(sqrt(area / aspect)) <= sqrt(hi_area H W / lo_aspect) (w: times hi_aspect);
  a relative margin of 1e-4 and one pixel cover float32 rounding of the sampled values.
  """
  aspect = aspect_ratio[0] if axis == 0 else 1.0 / aspect_ratio[1]
  bound = math.sqrt(area_ratio[1] * height * width / aspect) * (1.0 + 1e-4)
  return max(1, min(size, int(math.floor(bound + 0.5)) + 1))


def _source_windows(images: Array, p: _Patches, window: tuple[int, int]
                    ) -> tuple[Array, Array, Array]:
  """Static-size windows [B, N, wh, ww, C] of ``images`` holding each source rectangle.

  Returns (windows, row offset [B, N], column offset [B, N]): source pixel
  (src_top + a, src_left + b) of patch k of image i is
  ``windows[i, k, a + row_off[i, k], b + col_off[i, k]]``. Window starts are clamped
  into the image (``dynamic_slice`` semantics); the offsets say where the rectangle
  starts inside its window. Requires h <= wh and w <= ww for every patch.

  The slices run in a ``lax.map`` over the batch on purpose: the loop's output is a
  buffer of its own, so the later per-pixel paste reads ``images`` only elementwise
  and XLA can write the result into a donated input buffer. Sliced inside the vmap
  (even behind ``optimization_barrier``), XLA CPU fuses the slices into the paste,
  which then reads the input at other pixels and needs a full copy (64 x 256^2
  donated cut_paste: 33 ms with the copy, 13 ms without).
  """
  _, height, width, channels = images.shape
  wh, ww = window
  top = jnp.clip(p.src_top, 0, height - wh)
  left = jnp.clip(p.src_left, 0, width - ww)

  def one(args):
    img, t, l = args
    return jax.vmap(lambda ti, li: lax.dynamic_slice(img, (ti, li, 0), (wh, ww, channels)))(t, l)

  windows = lax.map(one, (images, top, left))
  return windows, p.src_top - top, p.src_left - left


def _paste_one(image: Array, p: _Patches, jitter_key: Array,
               strengths: tuple[float, float, float, float], windows: Array | None,
               row_off: Array | None, col_off: Array | None, delete: bool
               ) -> tuple[Array, Array]:
  """Pastes one image's patches from its source windows, or from the image if None.

  See ``_paste_batch``. Returns (pasted image [H, W, C], region [H, W] bool).
  """
  height, width, _ = image.shape
  source = image
  if delete:  # zero the source rectangle first; the paste (from the original) wins
    src = _rect_mask(p.src_top[0], p.src_left[0], p.h[0], p.w[0], height, width)
    image = jnp.where(src[..., None], 0.0, image)
  if windows is None:  # gather straight from the source image
    content, region = _direct_content(source, p)
    out = jnp.where(region[..., None], content, image)
    return out, (region | src) if delete else region
  if any(strengths):
    factors = _sample_jitter(jitter_key, strengths, p.h.shape)
    means = _patch_grey_means(source, p)
    # The barrier keeps XLA from fusing the jitter into the per-pixel gather below
    # (recomputing it per output pixel instead of once per window pixel).
    windows = lax.optimization_barrier(
        _jitter_pixels(windows, factors[:, None, None, :], means[:, None, None], strengths))
  region, n, a, b = _coverage(p, height, width)
  a = jnp.clip(a + _per_patch(row_off, n), 0, windows.shape[1] - 1)
  b = jnp.clip(b + _per_patch(col_off, n), 0, windows.shape[2] - 1)
  content = windows[0, a, b] if p.h.shape[0] == 1 else windows[n, a, b]
  out = jnp.where(region[..., None], content, image)
  return out, (region | src) if delete else region


def _coverage(p: _Patches, height: int, width: int) -> tuple[Array, Array, Array, Array]:
  """Which patch covers each pixel and where in it: (region, n, a, b), all [H, W].

  ``region`` (bool) marks covered pixels, ``n`` is the last covering patch (0 where
  none), (a, b) the pixel's patch-local integer coordinates in patch n (the
  nearest-neighbour inverse rotation for rotated patches).
  """
  if p.angle is not None and p.h.shape[0] == 1:  # one rotated patch: one inverse mapping
    a, b, inside = _local_coords(p, *_grid(height, width), 0)
    return inside, jnp.zeros((height, width), jnp.int32), a, b
  win = _winner(p, height, width)
  n = jnp.maximum(win, 0)
  if p.angle is None:  # a translation per patch
    a = jnp.arange(height, dtype=jnp.int32)[:, None] - _per_patch(p.dst_top, n)
    b = jnp.arange(width, dtype=jnp.int32)[None, :] - _per_patch(p.dst_left, n)
  else:
    a, b, _ = _local_coords(p, *_grid(height, width), n)
  return win >= 0, n, a, b


def _direct_content(source: Array, p: _Patches) -> tuple[Array, Array]:
  """Per-pixel content gathered straight from ``source`` ([H, W, C]) and region [H, W]."""
  height, width, _ = source.shape
  region, n, a, b = _coverage(p, height, width)
  si = jnp.clip(_per_patch(p.src_top, n) + a, 0, height - 1)
  sj = jnp.clip(_per_patch(p.src_left, n) + b, 0, width - 1)
  return source[si, sj], region


def _paste_batch(key: Any, images: Array,
                 geometry: Callable[[Array], tuple[_Patches, Array]],
                 strengths: tuple[float, float, float, float], window: tuple[int, int],
                 in_place: bool, delete: bool = False) -> tuple[Array, Array]:
  """Copy-paste transforms: per-image geometry, (source windows,) one paste pass.

  ``geometry(key_b) -> (patches, jitter key)`` draws image b's patches (vmapped).
  Without jitter and with ``in_place=False`` every output pixel gathers its content
  straight from the image (fastest when the output gets a new buffer). Otherwise
  the source rectangles are first copied into static-size windows (``window`` =
  (wh, ww) >= every patch's (h, w)) by ``_source_windows`` and every output pixel
  gathers from its patch's window (patch-local coordinates, nearest-neighbour
  inverse mapping when rotated). Both give bitwise the same result. The windows
  let XLA write the output into a donated input buffer, and colour jitter (a
  per-patch pixelwise map) runs on the windows: N wh ww pixels instead of H W (one
  183^2 window for cut_paste at 256^2, 30 of 26^2 for copy_paste). ``delete``
  zeroes the source rectangle (N = 1) before pasting.
  """
  key = _as_key(key)
  keys = jax.random.split(key, images.shape[0])
  p, jitter_keys = jax.vmap(geometry)(keys)
  if in_place or any(strengths):
    windows, row_off, col_off = _source_windows(images, p, window)
  else:
    windows = row_off = col_off = None
  out, region = jax.vmap(
      lambda img, pb, kb, wb, rb, cb: _paste_one(img, pb, kb, strengths, wb, rb, cb, delete)
  )(images, p, jitter_keys, windows, row_off, col_off)
  return out.astype(images.dtype), region.astype(jnp.float32)


def _fill(image: Array, p: _Patches, colours: Array) -> tuple[Array, Array]:
  """Fills the patches with per-patch colours [N, C] ([1, C]: one colour) or per-pixel [H, W, C]."""
  height, width, _ = image.shape
  win = _winner(p, height, width)
  region = win >= 0
  values = _per_patch(colours, jnp.maximum(win, 0)) if colours.ndim == 2 else colours
  return jnp.where(region[..., None], values, image), region


def _batched(key: Any, images: Array, one: Callable[[Array, Array], tuple[Array, Array]] | None,
             identity: bool = False) -> tuple[Array, Array]:
  """Runs ``one(key_b, image_b)`` on every image with its own key; ``identity``: no-op."""
  key = _as_key(key)
  if identity:
    return images, jnp.zeros(images.shape[:3], jnp.float32)
  keys = jax.random.split(key, images.shape[0])
  out, region = jax.vmap(one)(keys, images)
  return out.astype(images.dtype), region.astype(jnp.float32)


def _squares(key: Array, height: int, width: int, num_patches: int, side: int,
             with_source: bool) -> _Patches:
  """N squares of a static side at uniform positions (CopyPaste / Cutout geometry)."""
  size = jnp.full((num_patches,), side, jnp.int32)
  return _sample_patches(key, height, width, size, size, with_source=with_source, rotation=0.0)


def _check_squares(num_patches: Any, area_ratio: Any, images: Array) -> tuple[int, int]:
  """Validates (num_patches, area_ratio, images); returns (N, static square side)."""
  num_patches = _check_int("num_patches", num_patches, 0)
  area_ratio = _check_ratio("area_ratio", area_ratio)
  _check_images(images)
  return num_patches, patch_side(images.shape[1], images.shape[2], area_ratio)


# ----------------------------------------------------------------------- transforms


def copy_paste(key: Any, images: Array, *, num_patches: int = 30, area_ratio: float = 0.01,
               jitter: Jitter = 0.0, in_place: bool = False) -> tuple[Array, Array]:
  """SCGAN CopyPaste: N square patches copied and pasted within the same image.

  Each patch is a square of side ``patch_side(H, W, area_ratio)`` copied from a
  uniformly random position of the *original* image and pasted at a uniformly
  random position different from its source; patches may overlap (a later patch
  covers an earlier one). With ``jitter`` each patch gets its own colour jitter.

  Args:
    key: PRNG key; split into one key per image.
    images: float32 [B, H, W, C] in [0, 1].
    num_patches: N >= 0 (paper default 30; 0 = identity).
    area_ratio: area of one patch as a fraction of H * W, in (0, 1) (paper: 0.01).
    jitter: colour-jitter strength per patch, a number for all four or
      (brightness, contrast, saturation, hue); 0 = off (paper: on for textures only).
    in_place: formulate the paste so that XLA writes the augmented batch into the
      input's buffer when the caller donates it (``jax.jit(fn, donate_argnums=1)``);
      bitwise the same result. Faster with donation (64 x 256^2 cut_paste on CPU:
      34 -> 15 ms), ~20 % slower without (source windows are copied first). Always
      on when ``jitter`` is on.

  Returns:
    (augmented float32 [B, H, W, C] in [0, 1], mask float32 [B, H, W] in {0, 1} = union
    of pasted squares).

  References:
    SCGAN, Sec. III-C "CopyPaste module", Figs. 5-6, Table 3 (N = 30).
  """
  strengths = _check_jitter("jitter", jitter)
  in_place = _check_bool("in_place", in_place)
  num_patches, side = _check_squares(num_patches, area_ratio, images)
  _, height, width, _ = images.shape
  if num_patches == 0:
    return _batched(key, images, None, identity=True)

  def geometry(k):
    k_geo, k_jit = jax.random.split(k)
    return _squares(k_geo, height, width, num_patches, side, with_source=True), k_jit

  return _paste_batch(key, images, geometry, strengths, (side, side), in_place)


def _cut_paste(key: Any, images: Array, area_ratio, aspect_ratio, rotation, strengths,
               in_place: bool, delete: bool) -> tuple[Array, Array]:
  _, height, width, _ = images.shape

  def geometry(k):
    k_size, k_geo, k_jit = jax.random.split(k, 3)
    h, w = _rect_sizes(k_size, (1,), height, width, area_ratio, aspect_ratio)
    return _sample_patches(k_geo, height, width, h, w, with_source=True,
                           rotation=rotation), k_jit

  window = (_window_side(height, area_ratio, aspect_ratio, height, width, 0),
            _window_side(width, area_ratio, aspect_ratio, height, width, 1))
  return _paste_batch(key, images, geometry, strengths, window, in_place, delete=delete)


def _check_cut_config(area_ratio, aspect_ratio, rotation, jitter, in_place):
  return (_check_range("area_ratio", area_ratio, 0.0, 1.0),
          _check_range("aspect_ratio", aspect_ratio, 0.0, math.inf),
          _check_rotation(rotation), _check_jitter("jitter", jitter),
          _check_bool("in_place", in_place))


def cut_paste(key: Any, images: Array, *, area_ratio: float | tuple[float, float] = (0.02, 0.15),
              aspect_ratio: float | tuple[float, float] = (0.3, 3.3), rotation: float = 0.0,
              jitter: Jitter = 0.0, in_place: bool = False) -> tuple[Array, Array]:
  """AFF-GAN / CutPaste: one rectangle cut from a random place and pasted elsewhere.

  Per image: area = U(area_ratio) * H * W, aspect w/h log-uniform in ``aspect_ratio``,
  h = round(sqrt(area / aspect)), w = round(sqrt(area * aspect)) clipped to the image;
  the source rectangle lies inside the image; the patch is optionally rotated by
  U(-rotation, rotation) degrees (nearest neighbour) and colour-jittered, and pasted
  with its (rotated) bounding box inside the image at a uniformly random position
  other than the source position.

  Args:
    key: PRNG key; split into one key per image.
    images: float32 [B, H, W, C] in [0, 1].
    area_ratio: (lo, hi) with 0 < lo <= hi < 1, or one number (paper: (0.02, 0.15)).
    aspect_ratio: (lo, hi) with 0 < lo <= hi (CutPaste: (0.3, 1/0.3)).
    rotation: maximum absolute angle in degrees, in [0, 180]; 0 = off (default).
    jitter: colour jitter of the patch (number or 4-tuple, see ``color_jitter``);
      0 = off (CutPaste reference: 0.1).
    in_place: write into a donated input buffer; see :func:`copy_paste`.

  Returns:
    (augmented float32 [B, H, W, C] in [0, 1], mask float32 [B, H, W] in {0, 1} = pasted region).

  References:
    AFF-GAN Sec. 3.2 and Fig. 4; Li et al., CutPaste (CVPR 2021), Sec. 3.1.
  """
  cfg = _check_cut_config(area_ratio, aspect_ratio, rotation, jitter, in_place)
  _check_images(images)
  return _cut_paste(key, images, *cfg, delete=False)


def delete_paste(key: Any, images: Array, *,
                 area_ratio: float | tuple[float, float] = (0.02, 0.15),
                 aspect_ratio: float | tuple[float, float] = (0.3, 3.3), rotation: float = 0.0,
                 jitter: Jitter = 0.0, in_place: bool = False) -> tuple[Array, Array]:
  """RAMFAE Delete Paste: cut_paste whose source region is set to 0 (two anomalies).

  The source rectangle is zeroed first, then its original content is pasted at the
  destination (the paste wins where the two overlap). Sampling is as in
  :func:`cut_paste`.

  Args:
    key: PRNG key; split into one key per image.
    images: float32 [B, H, W, C] in [0, 1].
    area_ratio: (lo, hi) with 0 < lo <= hi < 1, or one number (default (0.02, 0.15)).
    aspect_ratio: (lo, hi) with 0 < lo <= hi (default (0.3, 3.3)).
    rotation: maximum absolute angle in degrees, in [0, 180]; 0 = off.
    jitter: colour jitter of the pasted patch; 0 = off.
    in_place: write into a donated input buffer; see :func:`copy_paste`.

  Returns:
    (augmented float32 [B, H, W, C] in [0, 1], mask float32 [B, H, W] in {0, 1} =
    source region union pasted region).

  References:
    RAMFAE Sec. 3.2 and Fig. 5 (M_{S_i}: mask zero on the source region S_i).
  """
  cfg = _check_cut_config(area_ratio, aspect_ratio, rotation, jitter, in_place)
  _check_images(images)
  return _cut_paste(key, images, *cfg, delete=True)


def cutout(key: Any, images: Array, *, num_patches: int = 30, area_ratio: float = 0.01,
           fill: str = "black") -> tuple[Array, Array]:
  """Cutout baseline: N squares filled with black or with one random colour each.

  Geometry as :func:`copy_paste` (uniform positions, overlaps allowed), so it is
  the SCGAN ablation's like-for-like baseline.

  Args:
    key: PRNG key; split into one key per image.
    images: float32 [B, H, W, C] in [0, 1].
    num_patches: N >= 0 (default 30, as CopyPaste; DeVries & Taylor use 1).
    area_ratio: area of one square as a fraction of H * W, in (0, 1) (default 0.01).
    fill: "black" (0) or "random" (a U[0, 1]^C colour per square).

  Returns:
    (augmented float32 [B, H, W, C] in [0, 1], mask float32 [B, H, W] in {0, 1}).

  References:
    DeVries & Taylor, Cutout (2017); SCGAN Table 6, Fig. 13 ("Cutout", "Cutout (Color)").
  """
  fill = _check_fill(fill, ("black", "random"))
  num_patches, side = _check_squares(num_patches, area_ratio, images)
  _, height, width, channels = images.shape

  def one(k, img):
    k_geo, k_col = jax.random.split(k)
    p = _squares(k_geo, height, width, num_patches, side, with_source=False)
    if fill == "black":
      colours = jnp.zeros((1, channels), jnp.float32)
    else:
      colours = jax.random.uniform(k_col, (num_patches, channels), jnp.float32)
    return _fill(img, p, colours)

  return _batched(key, images, one, identity=num_patches == 0)


def random_erasing(key: Any, images: Array, *, probability: float = 1.0,
                   area_ratio: float | tuple[float, float] = (0.02, 0.4),
                   aspect_ratio: float | tuple[float, float] = (0.3, 3.3),
                   fill: str = "random") -> tuple[Array, Array]:
  """Random Erasing baseline: one rectangle per image erased with noise or a colour.

  Sizes are drawn as in :func:`cut_paste` (log-uniform aspect, clipped to the image
  instead of the original rejection loop).

  Args:
    key: PRNG key; split into one key per image.
    images: float32 [B, H, W, C] in [0, 1].
    probability: chance that an image is erased, in [0, 1] (default 1: always;
      Zhong et al. use 0.5 for classification).
    area_ratio: (lo, hi), 0 < lo <= hi < 1 (Zhong et al.: (0.02, 0.4)).
    aspect_ratio: (lo, hi), 0 < lo <= hi (Zhong et al.: (0.3, 1/0.3)).
    fill: "random" (per-pixel U[0, 1) noise, as Zhong et al.; a counter-based hash
      keyed by the image's key, computed only where it is used), "colour" (one
      random colour) or "black".

  Returns:
    (augmented float32 [B, H, W, C] in [0, 1], mask float32 [B, H, W] in {0, 1};
    all zeros for images that were not erased).

  References:
    Zhong et al., Random Erasing Data Augmentation (AAAI 2020); AFF-GAN Table 4.
  """
  if not _is_number(probability):
    raise TypeError(f"probability: expected a number in [0, 1], got {probability!r}")
  if not 0.0 <= float(probability) <= 1.0:
    raise ValueError(f"probability: expected a number in [0, 1], got {probability}")
  probability = float(probability)
  area = _check_range("area_ratio", area_ratio, 0.0, 1.0)
  aspect = _check_range("aspect_ratio", aspect_ratio, 0.0, math.inf)
  fill = _check_fill(fill, ("random", "colour", "black"))
  _check_images(images)
  _, height, width, channels = images.shape

  def one(k, img):
    k_size, k_geo, k_val, k_p = jax.random.split(k, 4)
    h, w = _rect_sizes(k_size, (1,), height, width, area, aspect)
    apply = jax.random.uniform(k_p, ()) < probability
    h = jnp.where(apply, h, 0)  # an empty rectangle covers nothing
    p = _sample_patches(k_geo, height, width, jnp.maximum(h, 1), w, with_source=False,
                        rotation=0.0)
    p.h = h
    if fill == "random":
      values = _hash_uniform(k_val, img.shape)
    elif fill == "colour":
      values = jax.random.uniform(k_val, (1, channels), jnp.float32)
    else:
      values = jnp.zeros((1, channels), jnp.float32)
    return _fill(img, p, values)

  return _batched(key, images, one)


def confetti(key: Any, images: Array, *, num_patches: int = 30,
             size: float | tuple[float, float] = (0.02, 0.06)) -> tuple[Array, Array]:
  """Confetti baseline: N small rectangles ("speckles"), each one random colour.

  Each speckle has height and width drawn independently as U(size) * H (resp. W),
  rounded, at least 1 pixel, at a uniform position; overlaps allowed.

  Args:
    key: PRNG key; split into one key per image.
    images: float32 [B, H, W, C] in [0, 1].
    num_patches: N >= 0 (default 30).
    size: side as a fraction of the image side, (lo, hi) with 0 < lo <= hi <= 1.

  Returns:
    (augmented float32 [B, H, W, C] in [0, 1], mask float32 [B, H, W] in {0, 1}).

  References:
    Liznerski et al., FCDD (ICLR 2021), confetti noise; SCGAN Table 6, Fig. 13.
  """
  num_patches = _check_int("num_patches", num_patches, 0)
  lo, hi = _check_range("size", size, 0.0, 1.0, high_inclusive=True)
  _check_images(images)
  _, height, width, channels = images.shape

  def one(k, img):
    k_h, k_w, k_geo, k_col = jax.random.split(k, 4)
    fh = jax.random.uniform(k_h, (num_patches,), minval=lo, maxval=hi)
    fw = jax.random.uniform(k_w, (num_patches,), minval=lo, maxval=hi)
    h = jnp.clip(jnp.round(fh * height), 1, height).astype(jnp.int32)
    w = jnp.clip(jnp.round(fw * width), 1, width).astype(jnp.int32)
    p = _sample_patches(k_geo, height, width, h, w, with_source=False, rotation=0.0)
    colours = jax.random.uniform(k_col, (num_patches, channels), jnp.float32)
    return _fill(img, p, colours)

  return _batched(key, images, one, identity=num_patches == 0)
