"""Property tests for jaxad.augment (synthetic-anomaly transforms).

Images are 16-64 px; "many draws" statistics come from one vmapped/batched call.
Compile time dominates: every transform call is jitted (an eager call compiles each
primitive separately) and tests reuse one compiled function per (config, shape)
through ``JITTED`` wherever the assertions allow the same input shape.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance
from scipy import ndimage
from skimage import color as skcolor

from jaxad import augment as A

H = W = 32

# name -> transform with paper defaults (jitter / rotation off where optional)
TRANSFORMS = {
    "copy_paste": A.copy_paste,
    "cut_paste": A.cut_paste,
    "delete_paste": A.delete_paste,
    "cutout_black": A.cutout,
    "cutout_random": functools.partial(A.cutout, fill="random"),
    "random_erasing": A.random_erasing,
    "random_erasing_colour": functools.partial(A.random_erasing, fill="colour"),
    "confetti": A.confetti,
}
# configurations whose written values are random/jittered/rotated
EXTRA = {
    "copy_paste_jitter": functools.partial(A.copy_paste, jitter=0.2),
    "cut_paste_rot_jitter": functools.partial(A.cut_paste, rotation=45.0, jitter=0.1),
    "delete_paste_rot": functools.partial(A.delete_paste, rotation=30.0),
}
ALL = {**TRANSFORMS, **EXTRA}


def _images(seed: int = 0, batch: int = 4, channels: int = 3, size: int = H) -> jax.Array:
  """Random images with (almost surely) pairwise-distinct, non-zero pixels in (0.05, 0.95)."""
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, channels), jnp.float32,
                            0.05, 0.95)


def _coord_images(batch: int, size: int = 64) -> jax.Array:
  """Pixels encode their own coordinates: ch0 = (i + 1) / (size + 2), ch1 = (j + 1) / (size + 2)."""
  i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  img = np.stack([(i + 1) / (size + 2), (j + 1) / (size + 2), np.full(i.shape, 0.5)], -1)
  return jnp.asarray(np.broadcast_to(img, (batch, size, size, 3)), jnp.float32)


def _decode(aug: np.ndarray, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """Inverse of _coord_images: source row/column of every pixel (-1 where zeroed)."""
  si = np.rint(aug[..., 0] * (size + 2)).astype(int) - 1
  sj = np.rint(aug[..., 1] * (size + 2)).astype(int) - 1
  return si, sj


def _changed(aug, images) -> np.ndarray:
  return np.asarray(jnp.any(aug != images, axis=-1))


# ------------------------------------------------------------------ determinism, shapes, range


# one compiled function per transform, shared by the tests below (same input shapes)
JITTED = {name: jax.jit(fn) for name, fn in ALL.items()}


@pytest.mark.parametrize("name", sorted(ALL))
def test_determinism_shape_dtype_range_and_changed_pixels(name):
  fn = JITTED[name]
  x = _images(1)
  a1, m1 = fn(jax.random.key(3), x)
  a2, m2 = fn(jax.random.key(3), x)
  np.testing.assert_array_equal(np.asarray(a1), np.asarray(a2))  # same key -> bitwise equal
  np.testing.assert_array_equal(np.asarray(m1), np.asarray(m2))
  b1, n1 = fn(jax.random.key(4), x)
  assert not np.array_equal(np.asarray(a1), np.asarray(b1))  # different key -> different
  assert not np.array_equal(np.asarray(m1), np.asarray(n1))
  # one independent key per image: the images of one batch get different regions
  m = np.asarray(m1)
  assert not all(np.array_equal(m[0], m[b]) for b in range(1, m.shape[0]))
  assert a1.shape == x.shape and a1.dtype == jnp.float32
  assert m1.shape == x.shape[:3] and m1.dtype == jnp.float32
  assert set(np.unique(m)) <= {0.0, 1.0} and m.sum() > 0
  changed = _changed(a1, x)
  if name in TRANSFORMS:
    # Distinct, non-zero pixels: every written value differs from the old one, so the
    # region mask equals `augmented != images` exactly (see the module docstring).
    np.testing.assert_array_equal(m > 0, changed)
  else:
    # jitter / rotation: nothing changes outside the mask, (almost) everything inside does
    assert not (changed & ~(m > 0)).any()
    assert changed[m > 0].mean() > 0.99
  # value range preserved, also when jitter must clip at 0 and 1
  xe = x.at[:, :8].set(1.0).at[:, -8:].set(0.0)
  ae, _ = fn(jax.random.key(5), xe)
  ae = np.asarray(ae)
  assert np.isfinite(ae).all() and ae.min() >= 0.0 and ae.max() <= 1.0


@pytest.mark.parametrize("name", ["cut_paste_rot_jitter", "confetti"])
def test_grayscale_images(name):
  x = _images(2, batch=2, channels=1, size=16)
  aug, mask = JITTED[name](jax.random.key(0), x)
  assert aug.shape == x.shape and aug.dtype == jnp.float32 and mask.shape == x.shape[:3]
  a = np.asarray(aug)
  assert a.min() >= 0.0 and a.max() <= 1.0 and np.asarray(mask).sum() > 0
  assert not (_changed(aug, x) & ~(np.asarray(mask) > 0)).any()


def test_region_mask_marks_patch_even_where_values_do_not_change():
  # a constant image: pasting copies identical values, but the region is still marked
  x = jnp.full((4, H, W, 3), 0.5, jnp.float32)  # the shape of _images(): reuses the compile
  aug, mask = JITTED["cut_paste"](jax.random.key(0), x)
  np.testing.assert_array_equal(np.asarray(aug), np.asarray(x))
  assert np.asarray(mask).sum(axis=(1, 2)).min() >= 0.02 * 32 * 32 * 0.8


# ------------------------------------------------------------------ paste content / geometry


def test_cut_paste_pastes_an_exact_translated_copy_of_the_source():
  size, batch = 64, 64
  x = _coord_images(batch, size)
  aug, mask = jax.jit(A.cut_paste)(jax.random.key(7), x)
  aug, mask = np.asarray(aug), np.asarray(mask) > 0
  si, sj = _decode(aug, size)
  ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  for b in range(batch):
    m = mask[b]
    rows, cols = np.nonzero(m)
    # the pasted region is a filled axis-aligned rectangle
    assert m.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
    dy, dx = si[b][m] - ii[m], sj[b][m] - jj[m]
    # one constant non-zero offset: pasted content == source content pixel for pixel
    assert (dy == dy[0]).all() and (dx == dx[0]).all() and (dy[0], dx[0]) != (0, 0)
    assert 0 <= rows.min() + dy[0] and rows.max() + dy[0] < size
    assert 0 <= cols.min() + dx[0] and cols.max() + dx[0] < size
    # everything else untouched
    np.testing.assert_array_equal(aug[b][~m], np.asarray(x[b])[~m])


def test_delete_paste_zeroes_source_region_and_pastes_its_content():
  size, batch = 64, 64
  x = _coord_images(batch, size)
  aug, mask = jax.jit(A.delete_paste)(jax.random.key(8), x)
  aug, mask = np.asarray(aug), np.asarray(mask) > 0
  si, sj = _decode(aug, size)
  ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  for b in range(batch):
    zero = (aug[b] == 0).all(-1)
    pasted = mask[b] & ~zero
    rows, cols = np.nonzero(pasted)
    assert pasted.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # destination rectangle
    dy, dx = si[b][pasted] - ii[pasted], sj[b][pasted] - jj[pasted]
    assert (dy == dy[0]).all() and (dx == dx[0]).all()
    src = np.zeros_like(zero)
    src[rows.min() + dy[0]:rows.max() + dy[0] + 1, cols.min() + dx[0]:cols.max() + dx[0] + 1] = True
    # zeros = source rectangle minus the part the paste covers; mask = source | destination
    np.testing.assert_array_equal(zero, src & ~pasted)
    np.testing.assert_array_equal(mask[b], src | pasted)
    assert zero.any()


def test_copy_paste_patches_are_translated_squares_of_one_percent():
  size, batch = 64, 32
  side = A.patch_side(size, size, 0.01)
  assert side == 6
  x = _coord_images(batch, size)
  aug1, mask1 = jax.jit(functools.partial(A.copy_paste, num_patches=1))(jax.random.key(9), x)
  m1 = np.asarray(mask1) > 0
  assert (m1.sum(axis=(1, 2)) == side * side).all()
  aug, mask = jax.jit(A.copy_paste)(jax.random.key(9), x)
  aug, mask = np.asarray(aug), np.asarray(mask) > 0
  si, sj = _decode(aug, size)
  ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  for b in range(batch):
    m = mask[b]
    assert m.sum() <= 30 * side * side
    offsets = np.stack([si[b][m] - ii[m], sj[b][m] - jj[m]], -1)
    assert not (offsets == 0).all(-1).any()  # every pasted pixel moved
    uniq = np.unique(offsets, axis=0)
    assert len(uniq) <= 30
    for off in uniq:  # pixels sharing an offset form squares of side <= side
      sel = m.copy()
      sel[m] = (offsets == off).all(-1)
      labels, count = ndimage.label(sel, structure=np.ones((3, 3)))
      for lab in range(1, count + 1):
        r, c = np.nonzero(labels == lab)
        assert np.ptp(r) < side and np.ptp(c) < side
        assert 0 <= r.min() + off[0] and r.max() + off[0] < size


def test_rotated_cut_paste_copies_source_pixels():
  size, batch = 64, 32
  x = _coord_images(batch, size)
  aug, mask = jax.jit(functools.partial(A.cut_paste, rotation=90.0))(jax.random.key(10), x)
  aug, mask = np.asarray(aug), np.asarray(mask) > 0
  si, sj = _decode(aug, size)
  not_axis_aligned = 0
  for b in range(batch):
    m = mask[b]
    rows, cols = np.nonzero(m)
    # every pasted pixel is an original pixel (nearest neighbour, no blending)
    assert ((si[b][m] >= 0) & (si[b][m] < size) & (sj[b][m] >= 0) & (sj[b][m] < size)).all()
    np.testing.assert_allclose(aug[b][m][:, 2], 0.5)
    src = set(zip(si[b][m].tolist(), sj[b][m].tolist()))
    assert len(src) >= 0.8 * m.sum()  # a rotation is (nearly) one-to-one
    not_axis_aligned += m.sum() < 0.95 * (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
  assert not_axis_aligned >= batch // 2


# ------------------------------------------------------------------ statistics over many draws


def _many_masks(fn, draws: int, size: int = 64, channels: int = 1) -> np.ndarray:
  x = jnp.full((draws, size, size, channels), 0.5, jnp.float32)
  _, mask = jax.jit(fn)(jax.random.key(123), x)
  return np.asarray(mask) > 0


def test_cut_paste_area_and_aspect_ratios_match_config():
  size, draws = 64, 2000
  lo, hi = 0.02, 0.15
  masks = _many_masks(functools.partial(A.cut_paste, area_ratio=(lo, hi)), draws, size)
  area = masks.sum(axis=(1, 2)) / (size * size)
  rows, cols = masks.any(2), masks.any(1)
  h, w = rows.sum(1), cols.sum(1)
  tol = (h + w) / 2 / (size * size) + 1e-3  # rounding h and w to integers
  assert (area >= lo - tol).all() and (area <= hi + tol).all()
  # uniform area ratio: mean and quantiles of U(lo, hi)
  assert abs(area.mean() - (lo + hi) / 2) < 0.004
  for q in (0.1, 0.5, 0.9):
    assert abs(np.quantile(area, q) - (lo + q * (hi - lo))) < 0.008
  # log-uniform aspect w/h in (0.3, 3.3)
  log_aspect = np.log(w / h)
  assert log_aspect.min() > np.log(0.3) - 0.25 and log_aspect.max() < np.log(3.3) + 0.25
  assert abs(log_aspect.mean() - 0.5 * (np.log(0.3) + np.log(3.3))) < 0.05
  assert abs((log_aspect < 0).mean() - np.log(1 / 0.3) / np.log(3.3 / 0.3)) < 0.05


def test_delete_paste_area_between_one_and_two_rectangles():
  size, draws = 64, 1000
  masks = _many_masks(functools.partial(A.delete_paste, area_ratio=0.05), draws, size)
  area = masks.sum(axis=(1, 2)) / (size * size)
  assert area.min() > 0.05 * 0.8 and area.max() < 2 * 0.05 * 1.2
  assert area.mean() > 0.05 * 1.5  # mostly non-overlapping


def test_copy_paste_positions_are_uniform():
  size, draws = 48, 3000
  side = A.patch_side(size, size, 0.01)
  masks = _many_masks(functools.partial(A.copy_paste, num_patches=1), draws, size)
  assert (masks.sum(axis=(1, 2)) == side * side).all()
  # coverage probability of pixel i under a uniform top-left t in [0, size - side]
  n = size - side + 1
  t = np.arange(size)
  p1 = (np.minimum(t, size - side) - np.maximum(0, t - side + 1) + 1) / n
  expected = p1[:, None] * p1[None, :]
  coverage = masks.mean(0)
  assert np.abs(coverage - expected).max() < 0.035
  assert abs(coverage.sum() - side * side) < 1e-6 * draws


def test_copy_paste_union_area_matches_simulation():
  size, draws, num = 48, 400, 30
  side = A.patch_side(size, size, 0.01)
  masks = _many_masks(A.copy_paste, draws, size)
  area = masks.sum(axis=(1, 2))
  # independent NumPy simulation of the union of 30 uniformly placed squares
  rng = np.random.default_rng(0)
  sim = []
  for _ in range(draws):
    m = np.zeros((size, size), bool)
    for t, l in rng.integers(0, size - side + 1, size=(num, 2)):
      m[t:t + side, l:l + side] = True
    sim.append(m.sum())
  assert abs(area.mean() - np.mean(sim)) < 4 * np.std(sim) / np.sqrt(draws) * np.sqrt(2) + 2


def test_random_erasing_probability():
  masks = _many_masks(functools.partial(A.random_erasing, probability=0.3), 1000, 32)
  frac = masks.any(axis=(1, 2)).mean()
  assert abs(frac - 0.3) < 0.05
  masks = _many_masks(functools.partial(A.random_erasing, probability=0.0), 64, 32)
  assert not masks.any()


def test_random_erasing_noise_is_uniform_and_uncorrelated():
  # the noise is a counter-based hash keyed per image (computed only where used)
  x = jnp.zeros((64, 32, 32, 3), jnp.float32)
  aug, mask = jax.jit(A.random_erasing)(jax.random.key(11), x)
  aug, m = np.asarray(aug), np.asarray(mask) > 0
  v = aug[m]  # [n, 3], n ~ 14k
  assert v.min() >= 0.0 and v.max() < 1.0
  assert abs(v.mean() - 0.5) < 0.01 and abs(v.var() - 1 / 12) < 0.004
  hist, _ = np.histogram(v, bins=16, range=(0.0, 1.0))
  expected = v.size / 16
  assert ((hist - expected) ** 2 / expected).sum() < 45  # chi2, 15 dof: p ~ 1e-4
  pairs = m[:, :, 1:] & m[:, :, :-1]  # horizontal neighbours, channels, images
  assert abs(np.corrcoef(aug[:, :, 1:][pairs][:, 0], aug[:, :, :-1][pairs][:, 0])[0, 1]) < 0.03
  assert np.abs(np.corrcoef(v.T) - np.eye(3)).max() < 0.03
  both = m[:32] & m[32:]
  assert abs(np.corrcoef(aug[:32][both][:, 1], aug[32:][both][:, 1])[0, 1]) < 0.05
  # zeros stay outside the rectangle
  assert not aug[~m].any()


@pytest.mark.parametrize("fn", [
    functools.partial(A.copy_paste, num_patches=12, area_ratio=0.02),
    functools.partial(A.cut_paste, area_ratio=(0.1, 0.2), aspect_ratio=(0.25, 4.0), rotation=90.0),
    functools.partial(A.delete_paste, area_ratio=(0.1, 0.2), aspect_ratio=(0.5, 2.0)),
], ids=["copy_paste", "cut_paste_rot", "delete_paste"])
def test_weak_jitter_keeps_the_pasted_geometry(fn):
  # With jitter the patches are read through static-size source windows (start clamped
  # into the image); a near-zero jitter must give the plain paste up to the jitter itself.
  # The windows here (42 or 58 px of 64) are smaller than the image: clamping is exercised.
  x = _images(12, batch=24, size=64)
  plain, m0 = jax.jit(fn)(jax.random.key(6), x)
  weak, m1 = jax.jit(functools.partial(fn, jitter=1e-3))(jax.random.key(6), x)
  np.testing.assert_array_equal(np.asarray(m0), np.asarray(m1))
  np.testing.assert_allclose(np.asarray(weak), np.asarray(plain), atol=0.01)
  assert np.abs(np.asarray(weak) - np.asarray(plain)).max() > 0  # the jitter did run


def test_confetti_speckle_sizes():
  size = 64
  masks = _many_masks(functools.partial(A.confetti, num_patches=1, size=(0.05, 0.1)), 500, size)
  h, w = masks.any(2).sum(1), masks.any(1).sum(1)
  assert h.min() >= round(0.05 * size) and h.max() <= round(0.1 * size)
  assert w.min() >= round(0.05 * size) and w.max() <= round(0.1 * size)
  assert (masks.sum(axis=(1, 2)) == h * w).all()


# ------------------------------------------------------------------ jit / vmap / scan


@pytest.mark.parametrize("name", ["copy_paste", "delete_paste"])
def test_vmap_and_scan_match_separate_calls(name):
  fn = TRANSFORMS[name]
  keys = jax.random.split(jax.random.key(0), 3)
  x = _images(7, batch=2, size=16)
  xs = jnp.stack([x, x + 0.01, x - 0.01])
  single = jax.jit(fn)  # one compile serves the three separate calls
  want = [single(k, xi) for k, xi in zip(keys, xs)]
  va, vm = jax.jit(jax.vmap(fn))(keys, xs)

  def body(carry, inp):
    k, xi = inp
    a, m = fn(k, xi)
    return carry + m.sum(), (a, m)

  total, (sa, sm) = jax.jit(lambda ks, xs: jax.lax.scan(body, 0.0, (ks, xs)))(keys, xs)
  for i, (a, m) in enumerate(want):
    np.testing.assert_array_equal(np.asarray(va[i]), np.asarray(a))
    np.testing.assert_array_equal(np.asarray(vm[i]), np.asarray(m))
    np.testing.assert_array_equal(np.asarray(sa[i]), np.asarray(a))
    np.testing.assert_array_equal(np.asarray(sm[i]), np.asarray(m))
  assert float(total) == sum(float(m.sum()) for _, m in want)


@pytest.mark.parametrize("name, in_place", [
    ("copy_paste", functools.partial(A.copy_paste, in_place=True)),
    ("delete_paste", functools.partial(A.delete_paste, rotation=30.0, in_place=True)),
])
def test_in_place_and_donated_input_give_the_same_result(name, in_place):
  # in_place=True reads the sources from copied windows so that XLA can write the
  # output into a donated input buffer (jax.jit(..., donate_argnums=1)); it must be
  # bitwise the default result.
  x = _images(9, batch=3, size=16)
  default = EXTRA["delete_paste_rot"] if name == "delete_paste" else TRANSFORMS[name]
  want = jax.jit(default)(jax.random.key(2), x)
  got = jax.jit(in_place, donate_argnums=1)(jax.random.key(2), jnp.copy(x))
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_jit_with_static_config_and_raw_key():
  x = _images(8, batch=2, size=16)
  cfg = {"area_ratio": (0.05, 0.1), "rotation": 10.0}
  a, m = jax.jit(functools.partial(A.cut_paste, **cfg))(jax.random.key(1), x)
  # eager call with a raw uint32[2] key: wrapped into the same typed key, same result as jit
  a2, m2 = A.cut_paste(jax.random.key_data(jax.random.key(1)), x, **cfg)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(a2))
  np.testing.assert_array_equal(np.asarray(m), np.asarray(m2))


def test_zero_patches_is_identity():
  x = _images(9, batch=2, size=32)
  for fn in (A.copy_paste, A.cutout, A.confetti):
    a, m = fn(jax.random.key(0), x, num_patches=0)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(x))
    assert not np.asarray(m).any()


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("call, exc, match", [
    (lambda x: A.cut_paste(jax.random.key(0), x, area_ratio=(0.0, 0.1)), ValueError, "area_ratio"),
    (lambda x: A.cut_paste(jax.random.key(0), x, area_ratio=(0.2, 1.0)), ValueError, "area_ratio"),
    (lambda x: A.cut_paste(jax.random.key(0), x, area_ratio=(0.2, 0.1)), ValueError, "area_ratio"),
    (lambda x: A.cut_paste(jax.random.key(0), x, area_ratio="big"), TypeError, "area_ratio"),
    (lambda x: A.delete_paste(jax.random.key(0), x, aspect_ratio=(-1, 2)), ValueError,
     "aspect_ratio"),
    (lambda x: A.cut_paste(jax.random.key(0), x, rotation=-5), ValueError, "rotation"),
    (lambda x: A.cut_paste(jax.random.key(0), x, jitter=(0.1, 0.1, 0.1, 0.7)), ValueError, "hue"),
    (lambda x: A.cut_paste(jax.random.key(0), x, jitter=(0.1, 0.1)), TypeError, "jitter"),
    (lambda x: A.copy_paste(jax.random.key(0), x, num_patches=-1), ValueError, "num_patches"),
    (lambda x: A.copy_paste(jax.random.key(0), x, num_patches=2.5), TypeError, "num_patches"),
    (lambda x: A.copy_paste(jax.random.key(0), x, area_ratio=1.5), ValueError, "area_ratio"),
    (lambda x: A.cutout(jax.random.key(0), x, fill="blue"), ValueError, "fill"),
    (lambda x: A.random_erasing(jax.random.key(0), x, probability=2), ValueError, "probability"),
    (lambda x: A.cut_paste(jax.random.key(0), x, in_place=1), TypeError, "in_place"),
    (lambda x: A.confetti(jax.random.key(0), x, size=(0.1, 1.5)), ValueError, "size"),
    (lambda x: A.color_jitter(jax.random.key(0), x, brightness=-1), ValueError, "brightness"),
    (lambda x: A.cut_paste(jax.random.key(0), x[0]), ValueError, "rank 4"),
    (lambda x: A.cut_paste(jax.random.key(0), x.astype(jnp.float16)), TypeError, "float32"),
    (lambda x: A.cut_paste(jax.random.key(0), np.asarray(x * 255, np.uint8)), TypeError, "float32"),
    (lambda x: A.cut_paste(jax.random.split(jax.random.key(0), 2), x), ValueError, "key"),
    (lambda x: A.cut_paste(3, x), TypeError, "key"),
])
def test_invalid_arguments_raise_clear_errors(call, exc, match):
  with pytest.raises(exc, match=match):
    call(_images(0, batch=1, size=16))


def test_validation_raises_inside_jit_at_trace_time():
  def f(key, x):
    return A.copy_paste(key, x, num_patches=-3)

  with pytest.raises(ValueError, match="num_patches"):
    jax.jit(f)(jax.random.key(0), _images(0, batch=1, size=16))


# ------------------------------------------------------------------ colour (vs scikit-image / PIL)


def test_hsv_conversions_match_scikit_image():
  rgb = np.array(_images(3, batch=2, size=32))
  rgb[0, :4] = 0.5  # grey pixels (hue undefined -> 0)
  rgb[0, 4:8, :, 0] = rgb[0, 4:8, :, 1]  # ties in the maximum
  hsv = np.asarray(A.rgb_to_hsv(jnp.asarray(rgb)))
  np.testing.assert_allclose(hsv, skcolor.rgb2hsv(rgb), atol=2e-6)
  back = np.asarray(A.hsv_to_rgb(jnp.asarray(hsv)))
  np.testing.assert_allclose(back, skcolor.hsv2rgb(skcolor.rgb2hsv(rgb)), atol=2e-6)
  np.testing.assert_allclose(back, rgb, atol=2e-6)


def test_adjust_hue_matches_scikit_image():
  rgb = np.asarray(_images(4, batch=2, size=16))
  shift = np.array([0.2, -0.35], np.float32)
  out = np.asarray(A.adjust_hue(jnp.asarray(rgb), shift))
  hsv = skcolor.rgb2hsv(rgb)
  hsv[..., 0] = np.mod(hsv[..., 0] + shift[:, None, None], 1.0)
  np.testing.assert_allclose(out, skcolor.hsv2rgb(hsv), atol=2e-5)


@pytest.mark.parametrize("ours, pil, factor", [
    (A.adjust_brightness, ImageEnhance.Brightness, 1.3),
    (A.adjust_brightness, ImageEnhance.Brightness, 0.6),
    (A.adjust_contrast, ImageEnhance.Contrast, 1.4),
    (A.adjust_contrast, ImageEnhance.Contrast, 0.5),
    (A.adjust_saturation, ImageEnhance.Color, 1.5),
    (A.adjust_saturation, ImageEnhance.Color, 0.3),
])
def test_adjust_matches_pil_image_enhance(ours, pil, factor):
  # PIL works on uint8 (grey mean rounded to an integer), hence the 2.5/255 tolerance.
  u8 = np.asarray(_images(5, batch=1, size=32)[0] * 255).round().astype(np.uint8)
  want = np.asarray(pil(Image.fromarray(u8)).enhance(factor), np.float32) / 255
  got = np.asarray(ours(jnp.asarray(u8[None] / 255, jnp.float32), factor))[0]
  np.testing.assert_allclose(got, want, atol=2.5 / 255)


def test_color_jitter_factor_ranges():
  x = _images(6, batch=64, size=16) * 0.5  # no clipping for brightness <= 2
  out = A.color_jitter(jax.random.key(0), x, brightness=0.3)
  ratio = np.asarray(out / x)
  per_image = ratio.reshape(64, -1)
  np.testing.assert_allclose(per_image, np.broadcast_to(per_image[:, :1], per_image.shape), rtol=1e-5)  # one factor per image
  f = per_image[:, 0]
  assert f.min() >= 0.7 - 1e-6 and f.max() <= 1.3 + 1e-6 and f.std() > 0.1
  # hue only: saturation and value unchanged, hue shifted by at most 0.1 turn
  out = A.color_jitter(jax.random.key(1), x, hue=0.1)
  h0, h1 = np.asarray(A.rgb_to_hsv(x)), np.asarray(A.rgb_to_hsv(out))
  np.testing.assert_allclose(h1[..., 1:], h0[..., 1:], atol=1e-5)
  d = np.abs((h1[..., 0] - h0[..., 0] + 0.5) % 1.0 - 0.5)
  assert d.max() <= 0.1 + 1e-5 and d.max() > 0.05
  # all strengths zero -> identity; same key -> same output
  np.testing.assert_array_equal(np.asarray(A.color_jitter(jax.random.key(2), x)), np.asarray(x))
  a = A.color_jitter(jax.random.key(3), x, brightness=.2, contrast=.2, saturation=.2, hue=.1)
  b = A.color_jitter(jax.random.key(3), x, brightness=.2, contrast=.2, saturation=.2, hue=.1)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_jitted_pixel_jitter_matches_numpy_scikit_image():
  # Regression: rgb_to_hsv chose the hue sextant by `max == channel`; under jit XLA
  # recomputed the fused blends with different rounding in the two places and picked a
  # wrong sextant (errors up to 0.99). Reference: the same four steps in float64 NumPy
  # with scikit-image's HSV conversions.
  rng = np.random.default_rng(0)
  x = rng.uniform(0.0, 1.0, (4096, 3)).astype(np.float32)
  x[:256, 1] = x[:256, 0]  # ties between channels
  f = np.stack([rng.uniform(0.8, 1.2, 4096), rng.uniform(0.8, 1.2, 4096),
                rng.uniform(0.8, 1.2, 4096), rng.uniform(-0.1, 0.1, 4096)], -1).astype(np.float32)
  mean = rng.uniform(0.2, 0.8, 4096).astype(np.float32)
  got = jax.jit(lambda x_, f_, m_: A._jitter_pixels(x_, f_, m_, (.2, .2, .2, .1)))(x, f, mean)
  y = x.astype(np.float64)
  y = np.clip(f[:, 1:2] * y + (1 - f[:, 1:2]) * mean[:, None], 0, 1)  # contrast
  y = np.clip(f[:, 0:1] * y, 0, 1)  # brightness
  grey = y @ np.array([0.2989, 0.587, 0.114])
  y = np.clip(f[:, 2:3] * y + (1 - f[:, 2:3]) * grey[:, None], 0, 1)  # saturation
  hsv = skcolor.rgb2hsv(y[:, None, :])
  hsv[..., 0] = np.mod(hsv[..., 0] + f[:, None, 3], 1.0)  # hue
  want = np.clip(skcolor.hsv2rgb(hsv)[:, 0], 0, 1)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


@pytest.mark.parametrize("num", [5, 70])
def test_last_patch_index_matches_brute_force(num):
  # the bit-packed winner (32 patches per uint32 word) vs a per-patch NumPy loop
  size = 24
  rng = np.random.default_rng(num)
  h, w = rng.integers(0, 9, num), rng.integers(1, 9, num)  # h = 0: an empty patch
  top, left = rng.integers(0, size - 8, num), rng.integers(0, size - 8, num)
  winner = jax.jit(lambda *geo: A._winner(A._Patches(*geo), size, size))
  got = np.asarray(winner(*(jnp.asarray(v, jnp.int32) for v in (h, w, top, left))))
  want = np.full((size, size), -1)
  for k in range(num):
    want[top[k]:top[k] + h[k], left[k]:left[k] + w[k]] = k
  np.testing.assert_array_equal(got, want)


def test_copy_paste_jitter_changes_only_pasted_content():
  x = _images(7)  # same shapes as above: reuses the compiled functions
  plain, m0 = JITTED["copy_paste"](jax.random.key(5), x)
  jit, m1 = JITTED["copy_paste_jitter"](jax.random.key(5), x)
  np.testing.assert_array_equal(np.asarray(m0), np.asarray(m1))  # same geometry
  m = np.asarray(m0) > 0
  np.testing.assert_array_equal(np.asarray(jit)[~m], np.asarray(x)[~m])
  assert np.abs(np.asarray(jit)[m] - np.asarray(plain)[m]).mean() > 0.01


# ------------------------------------------------------------------ packaging


def test_import_augment_is_light():
  code = "import sys, json, jaxad.augment; print(json.dumps(sorted(sys.modules)))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  mods = set(json.loads(out.stdout.strip().splitlines()[-1]))
  assert not mods & {"torch", "tensorflow", "tensorflow_datasets", "PIL", "skimage"}
