"""Tests for jaxad.losses against independent references.

References: scikit-image's ``structural_similarity`` (SSIM), NumPy/SciPy implementations of
GMS/GMSD/MSGMS written here from the formulas (Xue et al. 2014; RIAD), NumPy float64 formulas for
the BCE losses, and central finite differences (``jax.test_util.check_grads`` in float64).
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest
from scipy import ndimage
from skimage import data as skdata
from skimage import metrics as skmetrics
from skimage import transform as sktransform

from jaxad import losses

# ------------------------------------------------------------------------------------------
# Fixtures: real photographs shipped with scikit-image, downscaled to small sizes.
# ------------------------------------------------------------------------------------------


def _photo(name: str, size: int) -> np.ndarray:
  img = getattr(skdata, name)()
  img = img.astype(np.float64) / 255.0
  if img.ndim == 2:
    img = img[..., None]
  h, w = img.shape[:2]
  s = min(h, w)
  img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
  return sktransform.resize(img, (size, size, img.shape[-1]), anti_aliasing=True).astype(np.float32)


def _distort(img: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  if kind == "noise":
    out = img + rng.normal(0, 0.08, img.shape)
  elif kind == "blur":
    out = ndimage.gaussian_filter(img, sigma=(1.2, 1.2, 0))
  elif kind == "shift":
    out = np.roll(img, (2, -1), axis=(0, 1))
  elif kind == "contrast":
    out = 0.6 * img + 0.2
  else:
    raise ValueError(kind)
  return np.clip(out, 0, 1).astype(np.float32)


PHOTOS = [("astronaut", 64), ("camera", 48), ("coffee", 64), ("chelsea", 40)]
DISTORTIONS = ["noise", "blur", "shift", "contrast"]


def _sk_ssim(x, y, data_range, full=False):
  return skmetrics.structural_similarity(
      np.asarray(x, np.float64), np.asarray(y, np.float64), gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=data_range, channel_axis=-1, full=full)


# ------------------------------------------------------------------------------------------
# Import hygiene.
# ------------------------------------------------------------------------------------------


def test_import_losses_pulls_only_jax_and_numpy():
  code = "import sys, json\nimport jaxad.losses\nprint(json.dumps(sorted(sys.modules)))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  mods = set(json.loads(out.stdout.strip().splitlines()[-1]))
  roots = {m.split(".")[0] for m in mods}
  forbidden = {"flax", "tensorflow", "tensorflow_datasets", "torch", "optax", "orbax", "skimage",
               "sklearn", "PIL", "datasets"}
  assert not roots & forbidden, sorted(roots & forbidden)
  assert "jax" in roots and "numpy" in roots
  jaxad_mods = sorted(m for m in mods if m.startswith("jaxad"))
  assert jaxad_mods == ["jaxad", "jaxad.losses"], jaxad_mods


# ------------------------------------------------------------------------------------------
# SSIM.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,size", PHOTOS)
def test_ssim_matches_skimage_on_photographs(name, size):
  img = _photo(name, size)
  for kind in DISTORTIONS:
    dis = _distort(img, kind)
    ref = _sk_ssim(img, dis, 1.0)
    got = float(losses.ssim(img, dis, max_val=1.0, padding="valid"))
    assert abs(got - ref) < 1e-4, (name, kind, got, ref)


def test_ssim_same_map_matches_skimage_full_map():
  # skimage filters with scipy "reflect" (half-sample symmetric) padding, as padding="same".
  img = _photo("astronaut", 48)
  dis = _distort(img, "noise")
  _, ref_map = _sk_ssim(img, dis, 1.0, full=True)
  got = np.asarray(losses.ssim(img, dis, max_val=1.0, return_map=True))
  assert got.shape == img.shape
  np.testing.assert_allclose(got, ref_map, atol=1e-4)


@pytest.mark.parametrize("max_val,offset", [(1.0, 0.0), (255.0, 0.0), (2.0, -1.0)])
def test_ssim_matches_skimage_on_random_images(max_val, offset):
  rng = np.random.default_rng(1)
  x = rng.random((3, 32, 40, 2)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.15, x.shape), 0, 1).astype(np.float32)
  x, y = x * max_val + offset, y * max_val + offset
  got = np.asarray(losses.ssim(jnp.asarray(x), jnp.asarray(y), max_val=max_val, padding="valid"))
  ref = np.array([_sk_ssim(a, b, max_val) for a, b in zip(x, y)])
  assert got.shape == (3,)
  np.testing.assert_allclose(got, ref, atol=1e-4)


def test_ssim_valid_map_is_interior_of_same_map_and_shapes():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.random((2, 24, 30, 3)), jnp.float32)
  y = jnp.asarray(rng.random((2, 24, 30, 3)), jnp.float32)
  same = losses.ssim(x, y, max_val=1.0, return_map=True)
  valid = losses.ssim(x, y, max_val=1.0, return_map=True, padding="valid")
  assert same.shape == (2, 24, 30, 3) and valid.shape == (2, 14, 20, 3)
  np.testing.assert_allclose(same[:, 5:-5, 5:-5], valid, atol=1e-5)  # float32 summation order


def test_ssim_known_values_and_loss():
  img = jnp.asarray(_photo("coffee", 32))
  assert float(losses.ssim(img, img, max_val=1.0)) == pytest.approx(1.0, abs=1e-6)
  assert float(losses.ssim_loss(img, img, max_val=1.0)) == pytest.approx(0.0, abs=1e-6)
  # Inverted image: structure correlation -1, positive luminance term -> SSIM < 0.
  assert float(losses.ssim(img, 1.0 - img, max_val=1.0)) < 0.0
  dis = jnp.asarray(_distort(np.asarray(img), "noise"))
  np.testing.assert_allclose(losses.ssim_loss(img, dis, max_val=1.0),
                             1.0 - losses.ssim(img, dis, max_val=1.0), atol=1e-7)


def test_ssim_batch_equals_per_image_and_jit_vmap():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.random((4, 20, 20, 3)), jnp.float32)
  y = jnp.asarray(rng.random((4, 20, 20, 3)), jnp.float32)
  batched = losses.ssim(x, y, max_val=1.0)
  singles = jnp.stack([losses.ssim(a, b, max_val=1.0) for a, b in zip(x, y)])
  jitted = jax.jit(lambda a, b: losses.ssim(a, b, max_val=1.0))(x, y)
  vmapped = jax.vmap(lambda a, b: losses.ssim(a, b, max_val=1.0))(x, y)
  for other in (singles, jitted, vmapped):
    np.testing.assert_allclose(batched, other, atol=1e-6)


def _torch_ssim_value_and_grads(x, y, max_val, padding):
  """SSIM per image and d(sum(1 - SSIM))/dx, /dy from torch autograd, float64.

  Written like pytorch_msssim (separable Gaussian as two grouped conv2d over NCHW); "same"
  pads half-sample symmetrically by index gathering. Independent of jaxad's filtering code.
  """
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  r = np.arange(11) - 5.0
  g = np.exp(-0.5 * (r / 1.5) ** 2)
  g = torch.tensor(g / g.sum(), dtype=torch.float64)
  xt = torch.tensor(np.moveaxis(x, -1, 1), dtype=torch.float64, requires_grad=True)
  yt = torch.tensor(np.moveaxis(y, -1, 1), dtype=torch.float64, requires_grad=True)
  c, h, w = xt.shape[1:]

  def sym_idx(n):
    return torch.tensor(np.r_[np.arange(5)[::-1], np.arange(n), np.arange(n - 5, n)[::-1]])

  def blur(t):
    if padding == "same":
      t = t[:, :, sym_idx(h)][:, :, :, sym_idx(w)]
    t = F.conv2d(t, g.view(1, 1, 11, 1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(t, g.view(1, 1, 1, 11).repeat(c, 1, 1, 1), groups=c)

  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  mx, my = blur(xt), blur(yt)
  sxx, syy, sxy = blur(xt * xt) - mx ** 2, blur(yt * yt) - my ** 2, blur(xt * yt) - mx * my
  smap = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
  s = smap.mean(dim=(1, 2, 3))
  (1 - s).sum().backward()
  back = lambda t: np.moveaxis(t.grad.numpy(), 1, -1)
  return s.detach().numpy(), back(xt), back(yt)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_ssim_value_and_gradients_match_torch_autograd(padding):
  # Non-square, odd-sized, 3 channels: exercises the C-strided W pass and its custom VJP.
  rng = np.random.default_rng(9)
  x = rng.random((2, 23, 31, 3))
  y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
  ref_s, ref_gx, ref_gy = _torch_ssim_value_and_grads(x, y, 1.0, padding)
  loss = lambda a, b: losses.ssim_loss(a, b, max_val=1.0, padding=padding)

  @jax.jit
  def all_grads(a, b):
    f = lambda a_, b_: jnp.sum(loss(a_, b_))
    return (1.0 - loss(a, b), jax.grad(f, argnums=(0, 1))(a, b),
            jax.grad(f)(a, b),               # x only: only the x-dependent stack is transposed
            jax.vmap(jax.grad(loss))(a, b))  # per-example gradients (custom VJP under vmap)

  with jax.enable_x64(True):
    s, (gx, gy), gx_only, per_ex = all_grads(jnp.asarray(x), jnp.asarray(y))
    assert gx.dtype == jnp.float64
  scale = np.abs(ref_gx).max()
  np.testing.assert_allclose(s, ref_s, rtol=0, atol=1e-12)
  for got, ref in ((gx, ref_gx), (gy, ref_gy), (gx_only, ref_gx), (per_ex, ref_gx)):
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10 * scale)
  # float32 stays close to the float64 reference.
  _, (g32, _), _, _ = all_grads(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
  assert g32.dtype == jnp.float32
  np.testing.assert_allclose(g32, ref_gx, rtol=0, atol=1e-4 * scale)


def test_separable_filter_vjp_is_the_adjoint():
  # <L a, g> == <a, L^T g> for the custom VJP, and it equals JAX's own transpose.
  with jax.enable_x64(True):
    rng = np.random.default_rng(10)
    taps = (0.1, 0.5, 0.25, 0.15)  # asymmetric: the VJP must reverse the taps
    c = 2
    a = jnp.asarray(rng.normal(size=(3, 9, 13 * c)))
    out, vjp = jax.vjp(lambda v: losses._separable_valid(v, taps, c), a)
    assert out.shape == (3, 6, 10 * c)
    g = jnp.asarray(rng.normal(size=out.shape))
    (lt_g,) = vjp(g)
    np.testing.assert_allclose(jnp.vdot(out, g), jnp.vdot(a, lt_g), rtol=1e-12)
    (auto,) = jax.vjp(lambda v: losses._separable_valid_impl(v, taps, c), a)[1](g)
    np.testing.assert_allclose(lt_g, auto, rtol=0, atol=1e-12)
    # The forward equals scipy's correlate1d on each channel (interior = "valid").
    ref = np.asarray(a).reshape(3, 9, 13, c)
    for axis in (1, 2):  # origin -len//2: out[i] = sum_t taps[t] a[i + t]
      ref = ndimage.correlate1d(ref, taps, axis=axis, origin=-(len(taps) // 2),
                                mode="constant")
    np.testing.assert_allclose(out.reshape(3, 6, 10, c), ref[:, :6, :10], rtol=0, atol=1e-12)



def test_ssim_grad_with_batch_sharded_over_four_devices():
  # The training engine jits with the batch sharded over a "data" mesh axis: the custom VJP and
  # the optimization barrier must partition cleanly and give the unsharded result.
  from conftest import run_jax_subprocess
  out = run_jax_subprocess("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxad import losses
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.random((8, 20, 24, 3)), jnp.float32)
    y = jnp.asarray(rng.random((8, 20, 24, 3)), jnp.float32)
    f = jax.jit(jax.value_and_grad(lambda a, b: jnp.mean(losses.ssim_loss(a, b, max_val=1.0))))
    v0, g0 = f(x, y)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sh = NamedSharding(mesh, P("data"))
    v1, g1 = f(jax.device_put(x, sh), jax.device_put(y, sh))
    assert len(jax.devices()) == 4 and len(g1.sharding.device_set) == 4
    print(float(abs(v1 - v0)), float(jnp.max(jnp.abs(g1 - g0))), float(jnp.max(jnp.abs(g0))))
  """, devices=4)
  dv, dg, gmax = map(float, out.split()[-3:])
  assert gmax > 0
  assert dv < 1e-6 and dg < 1e-6 * gmax

# ------------------------------------------------------------------------------------------
# GMS / GMSD / MSGMS vs a NumPy/SciPy reference written from the formulas.
# ------------------------------------------------------------------------------------------

PREWITT_X = np.array([[1.0, 0.0, -1.0]] * 3) / 3.0  # h_x; h_y = h_x^T


def _ref_gms(x, y, c):
  """GMS per channel, float64, scipy correlate with 'reflect' (half-sample symmetric) borders."""
  def mag(img):
    out = np.empty_like(img)
    for ch in range(img.shape[-1]):
      gx = ndimage.correlate(img[..., ch], PREWITT_X, mode="reflect")
      gy = ndimage.correlate(img[..., ch], PREWITT_X.T, mode="reflect")
      out[..., ch] = np.sqrt(gx ** 2 + gy ** 2)
    return out
  mx, my = mag(np.asarray(x, np.float64)), mag(np.asarray(y, np.float64))
  return (2 * mx * my + c) / (mx ** 2 + my ** 2 + c)


def _ref_pool(img):
  h, w, ch = img.shape
  img = img[: h // 2 * 2, : w // 2 * 2]
  return img.reshape(h // 2, 2, w // 2, 2, ch).mean(axis=(1, 3))


def _ref_msgms(x, y, c, scales=4):
  """Returns (loss, anomaly map [H, W]) following RIAD: avgpool pyramid, bilinear upsampling."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  h, w = x.shape[:2]
  loss, amap = 0.0, np.zeros((h, w))
  for level in range(scales):
    if level:
      x, y = _ref_pool(x), _ref_pool(y)
    g = _ref_gms(x, y, c)
    loss += np.mean(1 - g)
    gm = g.mean(axis=-1)
    # Half-pixel-centre bilinear with clamped edges (= torch align_corners=False).
    up = ndimage.zoom(gm, (h / gm.shape[0], w / gm.shape[1]), order=1, grid_mode=True,
                      mode="nearest")
    amap += up
  return loss / scales, 1 - amap / scales


C01 = 170.0 / 255.0 ** 2


@pytest.mark.parametrize("name,size", [("astronaut", 48), ("camera", 40)])
def test_gms_and_gmsd_match_reference_on_photographs(name, size):
  img = _photo(name, size)
  for kind in DISTORTIONS:
    dis = _distort(img, kind)
    ref = _ref_gms(img, dis, C01)
    got = np.asarray(losses.gms_map(img, dis, max_val=1.0))
    assert got.shape == img.shape
    np.testing.assert_allclose(got, ref, atol=2e-5)
    ref_gmsd = np.mean(np.std(ref, axis=(0, 1)))
    assert float(losses.gmsd(img, dis, max_val=1.0)) == pytest.approx(ref_gmsd, abs=1e-5)
    assert float(losses.gmsd(img, dis, max_val=1.0, squared=True)) == pytest.approx(
        np.mean(np.var(ref, axis=(0, 1))), abs=1e-6)


def test_gms_eps_effect_is_tiny_and_scale_invariance():
  rng = np.random.default_rng(4)
  x = rng.random((2, 32, 32, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
  x[0, :8, :8] = 0.3  # flat regions where the eps dominates the magnitude
  y[0, :8, :8] = 0.3
  ref = np.stack([_ref_gms(a, b, C01) for a, b in zip(x, y)])
  got = np.asarray(losses.gms_map(x, y, max_val=1.0))
  np.testing.assert_allclose(got, ref, atol=2e-5)
  np.testing.assert_allclose(got[0, 1:7, 1:7], 1.0, atol=1e-6)  # flat vs flat -> 1
  # Same images on a 0..255 scale with max_val=255: c and eps scale with max_val^2.
  np.testing.assert_allclose(losses.gmsd(x * 255, y * 255, max_val=255.0),
                             losses.gmsd(x, y, max_val=1.0), rtol=1e-4, atol=1e-6)
  # Explicit c (RIAD's 0.0026).
  np.testing.assert_allclose(losses.gms_map(x, y, max_val=1.0, c=0.0026),
                             np.stack([_ref_gms(a, b, 0.0026) for a, b in zip(x, y)]), atol=2e-5)


@pytest.mark.parametrize("shape", [(32, 32, 3), (2, 40, 24, 1), (1, 37, 45, 2)])
def test_msgms_matches_reference(shape):
  rng = np.random.default_rng(5)
  x = rng.random(shape).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
  xs, ys = (x, y) if x.ndim == 4 else (x[None], y[None])
  refs = [_ref_msgms(a, b, C01) for a, b in zip(xs, ys)]
  loss = np.asarray(losses.msgms_loss(x, y, max_val=1.0))
  amap = np.asarray(losses.msgms_map(x, y, max_val=1.0))
  sim = np.asarray(losses.msgms(x, y, max_val=1.0))
  assert loss.shape == shape[:-3] and amap.shape == shape[:-1]
  np.testing.assert_allclose(loss.reshape(-1), [r[0] for r in refs], atol=1e-5)
  np.testing.assert_allclose(amap.reshape(len(refs), *shape[-3:-1]), [r[1] for r in refs],
                             atol=2e-5)
  np.testing.assert_allclose(sim, 1 - loss, atol=1e-6)


def test_msgms_map_mean_equals_loss_for_divisible_sizes():
  img = _photo("chelsea", 64)
  dis = _distort(img, "blur")
  loss = float(losses.msgms_loss(img, dis, max_val=1.0))
  amap = losses.msgms_map(img, dis, max_val=1.0)
  assert amap.shape == (64, 64)
  assert float(jnp.mean(amap)) == pytest.approx(loss, abs=1e-5)
  assert loss > 0.01


def test_known_values_identical_images():
  img = jnp.asarray(_photo("astronaut", 32))
  assert float(losses.gmsd(img, img, max_val=1.0)) == pytest.approx(0.0, abs=1e-6)
  np.testing.assert_allclose(losses.gms_map(img, img, max_val=1.0), 1.0, atol=1e-6)
  assert float(losses.msgms_loss(img, img, max_val=1.0)) == pytest.approx(0.0, abs=1e-6)
  np.testing.assert_allclose(losses.msgms_map(img, img, max_val=1.0), 0.0, atol=1e-6)
  assert float(losses.l1(img, img)) == 0.0 and float(losses.l2(img, img)) == 0.0


# ------------------------------------------------------------------------------------------
# L1 / L2 and GAN losses.
# ------------------------------------------------------------------------------------------


def test_l1_l2_match_numpy():
  rng = np.random.default_rng(6)
  x = rng.random((3, 8, 9, 2)).astype(np.float32)
  y = rng.random((3, 8, 9, 2)).astype(np.float32)
  d = x.astype(np.float64) - y
  np.testing.assert_allclose(losses.l1(x, y), np.abs(d).mean(axis=(1, 2, 3)), rtol=1e-6)
  np.testing.assert_allclose(losses.l2(x, y), (d ** 2).mean(axis=(1, 2, 3)), rtol=1e-6)
  assert losses.l2(x[0], y[0]).shape == ()


def _np_log_sigmoid(z):
  return -np.logaddexp(0.0, -z)


def test_bce_losses_match_float64_formulas():
  rng = np.random.default_rng(7)
  z = rng.normal(0, 4, (5, 7)).astype(np.float32)
  t = rng.random((5, 7)).astype(np.float32)
  z64, t64 = z.astype(np.float64), t.astype(np.float64)
  ref = -np.mean(t64 * _np_log_sigmoid(z64) + (1 - t64) * _np_log_sigmoid(-z64))
  assert float(losses.bce_with_logits(z, t)) == pytest.approx(ref, rel=1e-5)
  p = 1 / (1 + np.exp(-z64))
  p_clip = np.clip(p, 1e-7, 1 - 1e-7)
  ref_p = -np.mean(t64 * np.log(p_clip) + (1 - t64) * np.log(1 - p_clip))
  assert float(losses.bce(p.astype(np.float32), t)) == pytest.approx(ref_p, rel=1e-4)
  assert float(losses.generator_loss_nonsaturating(z)) == pytest.approx(
      -np.mean(_np_log_sigmoid(z64)), rel=1e-5)
  zf = rng.normal(0, 3, (4,)).astype(np.float32)
  ref_d = -np.mean(_np_log_sigmoid(z64)) - np.mean(_np_log_sigmoid(-zf.astype(np.float64)))
  assert float(losses.discriminator_loss(z, zf)) == pytest.approx(ref_d, rel=1e-5)
  assert float(losses.discriminator_loss(jnp.zeros(3), jnp.zeros(3))) == pytest.approx(
      2 * np.log(2), rel=1e-6)


def test_bce_with_logits_is_stable_for_extreme_logits():
  z = jnp.array([-200.0, -50.0, 50.0, 200.0])
  ones = jnp.ones(4)
  per = [float(losses.bce_with_logits(z[i:i + 1], ones[:1])) for i in range(4)]
  np.testing.assert_allclose(per, [200.0, 50.0, 0.0, 0.0], atol=1e-6)
  g = jax.grad(lambda v: losses.bce_with_logits(v, ones))(z)
  assert np.all(np.isfinite(g))
  np.testing.assert_allclose(g, [-0.25, -0.25, 0.0, 0.0], atol=1e-6)  # (sigmoid(z) - t) / n
  gp = jax.grad(lambda p: losses.bce(p, ones))(jnp.array([0.0, 0.5, 1.0, 1.0]))
  assert np.all(np.isfinite(gp))
  assert np.isfinite(float(losses.generator_loss_nonsaturating(jnp.array([-1e4, 1e4]))))


# ------------------------------------------------------------------------------------------
# Gradients: finite differences (float64) and finiteness on identical / flat images.
# ------------------------------------------------------------------------------------------


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.random((1, 12, 12, 1)))
    y = jnp.asarray(np.clip(np.asarray(x) + rng.normal(0, 0.2, x.shape), 0, 1))
    fns = {
        "ssim_same": lambda a: jnp.sum(losses.ssim(a, y, max_val=1.0)),
        "ssim_valid": lambda a: jnp.sum(losses.ssim(a, y, max_val=1.0, padding="valid")),
        "gmsd": lambda a: jnp.sum(losses.gmsd(a, y, max_val=1.0)),
        "msgms_loss": lambda a: jnp.sum(losses.msgms_loss(a, y, max_val=1.0)),
        "msgms_map": lambda a: jnp.sum(losses.msgms_map(a, y, max_val=1.0) ** 2),
        "l2": lambda a: jnp.sum(losses.l2(a, y)),
    }
    for name, f in fns.items():
      f = jax.jit(f)  # compiled once: check_grads evaluates it several times
      assert f(x).dtype == jnp.float64, name
      check_grads(f, (x,), order=1, modes=("rev",), eps=1e-4, atol=1e-4, rtol=1e-3)
    z = jnp.asarray(rng.normal(0, 2, (6,)))
    t = jnp.asarray(rng.random(6))
    check_grads(lambda v: losses.bce_with_logits(v, t), (z,), order=2, modes=("rev",))
    check_grads(lambda v: losses.bce(jax.nn.sigmoid(v), t), (z,), order=1, modes=("rev",))
    check_grads(losses.generator_loss_nonsaturating, (z,), order=2, modes=("rev",))
    check_grads(lambda v: losses.discriminator_loss(v, -v[:3]), (z,), order=1, modes=("rev",))


def test_gradients_are_finite_on_degenerate_inputs():
  img = jnp.asarray(_photo("camera", 24).repeat(3, axis=-1))[None]
  cases = {"identical": (img, img), "flat": (jnp.full_like(img, 0.5), jnp.full_like(img, 0.5)),
           "zeros": (jnp.zeros_like(img), img)}
  fns = {
      "ssim_loss": lambda a, b: jnp.sum(losses.ssim_loss(a, b, max_val=1.0)),
      "ssim_map": lambda a, b: jnp.sum(losses.ssim(a, b, max_val=1.0, return_map=True)),
      "gmsd": lambda a, b: jnp.sum(losses.gmsd(a, b, max_val=1.0)),
      "gmsd_sq": lambda a, b: jnp.sum(losses.gmsd(a, b, max_val=1.0, squared=True)),
      "gms_map": lambda a, b: jnp.sum(losses.gms_map(a, b, max_val=1.0)),
      "msgms_loss": lambda a, b: jnp.sum(losses.msgms_loss(a, b, max_val=1.0)),
      "msgms_map": lambda a, b: jnp.sum(losses.msgms_map(a, b, max_val=1.0)),
      "l1_l2": lambda a, b: jnp.sum(losses.l1(a, b) + losses.l2(a, b)),
  }
  # One compilation for all losses; the three cases share shapes.
  all_grads = jax.jit(lambda a, b: {k: jax.grad(f, argnums=(0, 1))(a, b) for k, f in fns.items()})
  for case, (x, y) in cases.items():
    for name, (gx, gy) in all_grads(x, y).items():
      assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy)), (case, name)


# ------------------------------------------------------------------------------------------
# Validation.
# ------------------------------------------------------------------------------------------

IMAGE_FNS = {
    "ssim": lambda a, b: losses.ssim(a, b, max_val=1.0),
    "ssim_loss": lambda a, b: losses.ssim_loss(a, b, max_val=1.0),
    "gms_map": lambda a, b: losses.gms_map(a, b, max_val=1.0),
    "gmsd": lambda a, b: losses.gmsd(a, b, max_val=1.0),
    "msgms": lambda a, b: losses.msgms(a, b, max_val=1.0),
    "msgms_loss": lambda a, b: losses.msgms_loss(a, b, max_val=1.0),
    "msgms_map": lambda a, b: losses.msgms_map(a, b, max_val=1.0),
    "l1": losses.l1,
    "l2": losses.l2,
}


@pytest.mark.parametrize("name", sorted(IMAGE_FNS))
def test_image_losses_reject_bad_inputs(name):
  fn = IMAGE_FNS[name]
  good = jnp.zeros((2, 16, 16, 3))
  with pytest.raises(ValueError, match="same shape"):
    fn(good, jnp.zeros((2, 16, 16, 1)))
  with pytest.raises(ValueError, match="rank"):
    fn(jnp.zeros((16, 16)), jnp.zeros((16, 16)))
  with pytest.raises(ValueError, match="rank"):
    fn(jnp.zeros((1, 2, 16, 16, 3)), jnp.zeros((1, 2, 16, 16, 3)))
  with pytest.raises(ValueError, match="floating"):
    fn(jnp.zeros((2, 16, 16, 3), jnp.int32), good)
  with pytest.raises(ValueError, match="array"):
    fn(good.tolist(), good)
  # Static validation also works on tracers inside jit.
  with pytest.raises(ValueError, match="same shape"):
    jax.jit(fn)(good, jnp.zeros((2, 16, 8, 3)))


def test_hyperparameter_validation():
  x = jnp.zeros((16, 16, 1))
  with pytest.raises(ValueError, match="padding"):
    losses.ssim(x, x, max_val=1.0, padding="reflect")
  with pytest.raises(ValueError, match="filter_size"):
    losses.ssim(x, x, max_val=1.0, filter_size=10)
  with pytest.raises(ValueError, match="max_val"):
    losses.ssim(x, x, max_val=0.0)
  with pytest.raises(ValueError, match="max_val"):
    losses.gmsd(x, x, max_val=-1.0)
  with pytest.raises(ValueError, match="at least 11x11"):
    losses.ssim(jnp.zeros((8, 8, 1)), jnp.zeros((8, 8, 1)), max_val=1.0, padding="valid")
  with pytest.raises(ValueError, match="8x8"):
    losses.msgms(jnp.zeros((6, 6, 1)), jnp.zeros((6, 6, 1)), max_val=1.0)
  with pytest.raises(ValueError, match="num_scales"):
    losses.msgms_map(x, x, max_val=1.0, num_scales=0)
  with pytest.raises(ValueError, match="same shape"):
    losses.bce_with_logits(jnp.zeros(3), jnp.zeros(4))
  with pytest.raises(ValueError, match="floating"):
    losses.bce(jnp.zeros(3, jnp.int32), jnp.zeros(3))
  with pytest.raises(ValueError, match="floating"):
    losses.generator_loss_nonsaturating(jnp.zeros(3, jnp.int32))
  with pytest.raises(ValueError, match="array"):
    losses.discriminator_loss([0.0], jnp.zeros(1))
  # A traced max_val is accepted (no value check possible inside jit).
  out = jax.jit(lambda m: losses.ssim(x + 0.5, x + 0.25, max_val=m))(1.0)
  assert np.isfinite(float(out))
