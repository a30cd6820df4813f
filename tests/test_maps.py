"""jaxad.maps against SciPy (smoothing) and PyTorch (resizing)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import ndimage

from jaxad import maps as maps_lib

F32_TOL = 2e-6  # float32 convolution vs SciPy's float64 filter on values in [0, 1]


def _random_maps(seed=0, shape=(3, 20, 26)):
  return np.random.default_rng(seed).random(shape).astype(np.float32)


# ----------------------------------------------------------------------------
# Gaussian smoothing
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("sigma,kernel_size", [(4.0, None), (1.5, None), (4.0, 21), (7.0, 21), (2.0, 5)])
def test_gaussian_smooth_matches_scipy_reflect(sigma, kernel_size):
  x = _random_maps()
  fn = jax.jit(functools.partial(maps_lib.gaussian_smooth, sigma=sigma, kernel_size=kernel_size))
  y = np.asarray(fn(x))
  radius = (maps_lib.default_kernel_size(sigma) if kernel_size is None else kernel_size) // 2
  ref = np.stack([ndimage.gaussian_filter(m.astype(np.float64), sigma, mode="reflect", radius=radius)
                  for m in x])
  assert y.shape == x.shape and y.dtype == np.float32
  np.testing.assert_allclose(y, ref, atol=F32_TOL)


def test_default_kernel_size_is_scipy_truncate_4():
  x = _random_maps(1)
  for sigma in (0.5, 2.3):  # 4.0 is covered above
    y = np.asarray(maps_lib.gaussian_smooth(x, sigma))
    ref = np.stack([ndimage.gaussian_filter(m.astype(np.float64), sigma, mode="reflect", truncate=4.0)
                    for m in x])
    np.testing.assert_allclose(y, ref, atol=F32_TOL)
  assert maps_lib.default_kernel_size(4.0) == 33
  k = maps_lib.gaussian_kernel1d(4.0, 21)
  assert k.shape == (21,) and abs(k.sum() - 1) < 1e-12 and np.argmax(k) == 10


@pytest.mark.parametrize("mode,scipy_mode", [("reflect", "mirror"), ("edge", "nearest"),
                                             ("constant", "constant"), ("wrap", "wrap")])
def test_gaussian_smooth_other_border_modes(mode, scipy_mode):
  x = _random_maps(2, (2, 30, 30))
  y = np.asarray(maps_lib.gaussian_smooth(x, 2.0, kernel_size=9, mode=mode))
  ref = np.stack([ndimage.gaussian_filter(m.astype(np.float64), 2.0, mode=scipy_mode, radius=4)
                  for m in x])
  np.testing.assert_allclose(y, ref, atol=F32_TOL)


def test_gaussian_smooth_preserves_constant_and_mass():
  x = jnp.full((2, 16, 16), 0.25, jnp.float32)
  np.testing.assert_allclose(np.asarray(maps_lib.gaussian_smooth(x, 4.0)), 0.25, atol=1e-6)


def test_gaussian_smooth_errors():
  x = _random_maps()
  with pytest.raises(ValueError, match="kernel_size"):
    maps_lib.gaussian_smooth(x, 4.0, kernel_size=20)
  with pytest.raises(ValueError, match="sigma"):
    maps_lib.gaussian_smooth(x, 0.0)
  with pytest.raises(ValueError, match="mode"):
    maps_lib.gaussian_smooth(x, 1.0, mode="mirror")
  with pytest.raises(ValueError, match=r"\[B,h,w\]"):
    maps_lib.gaussian_smooth(x[0], 1.0)


# ----------------------------------------------------------------------------
# Upsampling
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("src,dst", [((7, 7), (28, 28)), ((14, 10), (64, 48)), ((28, 28), (224, 224))])
def test_upsample_bilinear_matches_torch_align_corners_false(src, dst):
  x = _random_maps(3, (2, *src))
  y = np.asarray(jax.jit(maps_lib.upsample, static_argnums=(1, 2))(x, dst, "bilinear"))
  ref = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], size=dst, mode="bilinear",
                                        align_corners=False)[:, 0].numpy()
  assert y.shape == (2, *dst)
  np.testing.assert_allclose(y, ref, atol=1e-5)  # float32 interpolation weights


def test_upsample_nearest_matches_torch_nearest_exact():
  x = _random_maps(4, (2, 8, 6))
  y = np.asarray(maps_lib.upsample(x, (32, 30), method="nearest"))
  ref = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], size=(32, 30),
                                        mode="nearest-exact")[:, 0].numpy()
  np.testing.assert_array_equal(y, ref)


def test_upsample_int_size_and_errors():
  x = _random_maps(5, (1, 4, 4))
  assert maps_lib.upsample(x, 16).shape == (1, 16, 16)
  with pytest.raises(ValueError, match="method"):
    maps_lib.upsample(x, 16, method="bicubic")
  with pytest.raises(ValueError, match="size"):
    maps_lib.upsample(x, (0, 16))
  with pytest.raises(ValueError, match=r"\[B,h,w\]"):
    maps_lib.upsample(x[..., None], 16)


@pytest.mark.parametrize("src,dst,sigma,kernel_size,mode", [
    ((28, 28), (224, 224), 4.0, None, "symmetric"),  # PatchCore's maps
    ((8, 8), (32, 32), 4.0, None, "symmetric"),      # radius 16 > 8: repeated reflections
    ((7, 5), (40, 21), 2.0, 9, "reflect"),
    ((20, 26), (9, 13), 1.5, None, "edge"),          # shrinking (antialiased resize)
])
def test_upsample_smooth_equals_upsample_then_smooth(src, dst, sigma, kernel_size, mode):
  # Two references: jaxad's two steps (each tested above against PyTorch / SciPy) and, when
  # enlarging, PyTorch's bilinear interpolation followed by SciPy's float64 filter.
  x = _random_maps(6, (2, *src))
  fn = jax.jit(maps_lib.upsample_smooth, static_argnums=(1, 2, 3, 4))
  y = np.asarray(fn(x, dst, sigma, kernel_size, mode))
  two_steps = maps_lib.gaussian_smooth(maps_lib.upsample(x, dst), sigma, kernel_size, mode)
  assert y.shape == (2, *dst) and y.dtype == np.float32
  np.testing.assert_allclose(y, np.asarray(two_steps), atol=2e-6)
  if dst[0] >= src[0] and dst[1] >= src[1]:
    up = torch.nn.functional.interpolate(torch.from_numpy(x).double()[:, None], size=dst,
                                         mode="bilinear", align_corners=False)[:, 0].numpy()
    radius = (maps_lib.default_kernel_size(sigma) if kernel_size is None else kernel_size) // 2
    scipy_mode = {"symmetric": "reflect", "reflect": "mirror", "edge": "nearest"}[mode]
    ref = np.stack([ndimage.gaussian_filter(m, sigma, mode=scipy_mode, radius=radius) for m in up])
    np.testing.assert_allclose(y, ref, atol=F32_TOL)
    assert np.abs(y - up).max() > 100 * F32_TOL  # the smoothing is really applied


def test_upsample_smooth_matrices():
  r = maps_lib.bilinear_matrix(7, 28)
  assert r.shape == (28, 7)
  np.testing.assert_allclose(r.sum(1), 1.0, atol=1e-12)
  s = maps_lib.smooth_matrix(30, 2.0)
  np.testing.assert_allclose(s.sum(1), 1.0, atol=1e-12)  # symmetric borders keep the mass
  np.testing.assert_allclose(s[15, 7:24], maps_lib.gaussian_kernel1d(2.0), atol=1e-15)
  with pytest.raises(ValueError, match="mode"):
    maps_lib.upsample_smooth(_random_maps(), 40, 2.0, mode="mirror")
  with pytest.raises(ValueError, match="size"):
    maps_lib.upsample_smooth(_random_maps(), (0, 40), 2.0)


# ----------------------------------------------------------------------------
# Normalisation and image scores
# ----------------------------------------------------------------------------


def test_minmax_normalize_over_whole_set():
  x = np.random.default_rng(6).normal(size=(5, 8, 8)).astype(np.float32)
  y = np.asarray(jax.jit(maps_lib.minmax_normalize)(x))
  np.testing.assert_allclose(y, (x - x.min()) / (x.max() - x.min()), atol=1e-6)
  assert y.min() == 0.0 and abs(y.max() - 1.0) < 1e-6
  # Given range (e.g. computed over the whole test set, applied to one batch).
  z = np.asarray(maps_lib.minmax_normalize(x[:2], lo=x.min(), hi=x.max()))
  np.testing.assert_allclose(z, y[:2], atol=1e-6)
  # Constant input -> zeros, no NaN.
  np.testing.assert_array_equal(np.asarray(maps_lib.minmax_normalize(np.ones(4))), np.zeros(4))
  with pytest.raises(ValueError, match="empty"):
    maps_lib.minmax_normalize(np.zeros((0,)))


def test_score_from_map():
  x = _random_maps(7, (4, 10, 12))
  flat = x.reshape(4, -1)
  np.testing.assert_allclose(np.asarray(maps_lib.score_from_map(x)), flat.max(axis=1))
  fn = jax.jit(functools.partial(maps_lib.score_from_map, mode="topk_mean", k=10))
  np.testing.assert_allclose(np.asarray(fn(x)), np.sort(flat, axis=1)[:, -10:].mean(axis=1), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(maps_lib.score_from_map(x, "topk_mean", k=1)), flat.max(axis=1))
  with pytest.raises(ValueError, match="k must be"):
    maps_lib.score_from_map(x, "topk_mean")
  with pytest.raises(ValueError, match="k must be"):
    maps_lib.score_from_map(x, "topk_mean", k=121)
  with pytest.raises(ValueError, match="only used"):
    maps_lib.score_from_map(x, "max", k=3)
  with pytest.raises(ValueError, match="mode"):
    maps_lib.score_from_map(x, "mean")


def test_vmap_over_sets():
  # Static-only validation: works inside vmap (a leading axis of test sets).
  x = _random_maps(8, (2, 3, 12, 12))
  y = jax.vmap(lambda m: maps_lib.gaussian_smooth(m, 1.0))(x)
  np.testing.assert_allclose(np.asarray(y[1]), np.asarray(maps_lib.gaussian_smooth(x[1], 1.0)),
                             atol=1e-6)
