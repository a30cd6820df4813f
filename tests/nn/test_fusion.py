"""MS-CAM, AFF and the DCGAN blocks against PyTorch references (experiments/torch_blocks.py), 1e-4."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_reference as tr
from jaxad.nn.fusion import MSCAM, AttentionalFeatureFusion, MultiScaleChannelWeights
from jaxad.nn.gan import DCGANDecoder, DCGANEncoder, Discriminator, check_gan_size, dcgan_init, dcgan_widths

TOL = dict(rtol=1e-4, atol=1e-4)


def _variables(module, seed, *inputs, train):
  """Random parameters (and, for eval mode, random BN statistics) of ``module``'s shapes.

  Shapes come from ``jax.eval_shape`` and values from NumPy, so no init is compiled.
  """
  shapes = jax.eval_shape(module.init, jax.random.key(0), *inputs)
  rng = np.random.default_rng(seed)

  def draw(path, a):
    name = path[-1].key
    if name in ("scale", "var"):
      return np.abs(rng.normal(1.0, 0.3, a.shape)).astype(np.float32)
    if name == "mean" and train:
      return np.zeros(a.shape, np.float32)
    return rng.normal(0.0, 0.3, a.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, dict(shapes))


def _apply(module, variables, *inputs, train):
  if train:
    return jax.jit(lambda v, *a: module.apply(v, *a, train=True, mutable=["batch_stats"])[0])(
        variables, *inputs)
  return jax.jit(module.apply)(variables, *inputs)


@pytest.mark.parametrize("train", [True, False])
def test_mscam_matches_torch(train):
  x = np.random.default_rng(0).normal(size=(4, 6, 5, 16)).astype(np.float32)
  mod = MSCAM(reduction=4)
  v = _variables(mod, 0, x, train=train)
  assert v["params"]["weights"]["local_pwc1"]["kernel"].shape == (1, 1, 16, 4)
  ref = tr.TorchMSCAM(16, 4)
  ref.load(v["params"], v["batch_stats"])
  ref.train(train)
  with torch.no_grad():
    want = tr.nchw_to_nhwc(ref(tr.nhwc_to_nchw(x)))
  np.testing.assert_allclose(np.asarray(_apply(mod, v, x, train=train)), want, **TOL)


@pytest.mark.parametrize("train", [True, False])
def test_aff_matches_torch_and_reuses_the_mscam_branches(train):
  rng = np.random.default_rng(2)
  x, y = (rng.normal(size=(3, 4, 4, 8)).astype(np.float32) for _ in range(2))
  mod = AttentionalFeatureFusion(reduction=2)
  v = _variables(mod, 3, x, y, train=train)
  # Same parameter tree as MS-CAM: the branches are one module, not a copy.
  mscam_tree = jax.tree.structure(jax.eval_shape(MSCAM(reduction=2).init, jax.random.key(0), x)["params"])
  assert jax.tree.structure(v["params"]) == mscam_tree
  ref = tr.TorchAFF(8, 2)
  ref.load(v["params"], v["batch_stats"])
  ref.train(train)
  with torch.no_grad():
    want = tr.nchw_to_nhwc(ref(tr.nhwc_to_nchw(x), tr.nhwc_to_nchw(y)))
  np.testing.assert_allclose(np.asarray(_apply(mod, v, x, y, train=train)), want, **TOL)


def test_aff_is_x_when_weights_are_one_and_y_when_zero():
  rng = np.random.default_rng(4)
  x, y = (rng.normal(size=(2, 3, 3, 4)).astype(np.float32) for _ in range(2))
  mod = AttentionalFeatureFusion(reduction=2)
  v = _variables(mod, 0, x, y, train=False)
  for bias, want in ((60.0, x), (-60.0, y)):  # BN shift of the last local layer saturates the sigmoid
    p = jax.tree.map(lambda a: a, v["params"])
    p["weights"]["local_bn2"]["bias"] = np.full((4,), bias, np.float32)
    got = _apply(mod, {"params": p, "batch_stats": v["batch_stats"]}, x, y, train=False)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)


def test_weights_are_in_unit_interval_and_branches_are_switchable():
  x = np.random.default_rng(5).normal(size=(2, 4, 4, 8)).astype(np.float32) * 10
  for local, glob in ((True, True), (True, False), (False, True)):
    mod = MultiScaleChannelWeights(reduction=4, use_local=local, use_global=glob)
    v = _variables(mod, 0, x, train=False)
    assert ("local_pwc1" in v["params"]) == local and ("global_pwc1" in v["params"]) == glob
    w = np.asarray(_apply(mod, v, x, train=False))
    assert w.shape == x.shape and (w >= 0).all() and (w <= 1).all()
    if not local:  # global only: one weight per (image, channel)
      np.testing.assert_array_equal(w, np.broadcast_to(w[:, :1, :1], w.shape))
  with pytest.raises(ValueError, match="at least one"):
    jax.eval_shape(MultiScaleChannelWeights(use_local=False, use_global=False).init,
                   jax.random.key(0), x)


@pytest.mark.parametrize("size,blocks", [(32, 3), (64, 4), (256, 6), (512, 7)])
def test_dcgan_widths_follow_the_size(size, blocks):
  assert len(dcgan_widths(size)) == blocks == check_gan_size(size)
  assert dcgan_widths(size, 8, 32)[-1] == 32


@pytest.mark.parametrize("size", [16, 48, 1024, 64.0])
def test_dcgan_rejects_sizes_that_do_not_halve_to_4(size):
  with pytest.raises(ValueError, match="power of two"):
    dcgan_widths(size)


def test_dcgan_encoder_decoder_discriminator_match_torch():
  """Eval mode, random BN statistics, MS-CAM on: the GANomaly layout, layer for layer."""
  widths, latent = (4, 8, 16), 6
  x = np.random.default_rng(6).uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32)
  enc = DCGANEncoder(widths, latent, attention=True, attention_reduction=2)
  v = _variables(enc, 10, x, train=False)
  z, feat = _apply(enc, v, x, train=False)
  assert z.shape == (2, latent) and feat.shape == (2, 4, 4, 16)
  ref = tr.TorchDCGANEncoder(3, widths, latent, attention=True, r=2).eval()
  ref.load(v["params"], v["batch_stats"])
  with torch.no_grad():
    rz, rf = ref(tr.nhwc_to_nchw(x))
  np.testing.assert_allclose(np.asarray(z), rz.numpy(), **TOL)
  np.testing.assert_allclose(np.asarray(feat), tr.nchw_to_nhwc(rf), **TOL)

  dec = DCGANDecoder(widths, 3, upsample="subpixel")
  zz = np.asarray(z)
  vd = _variables(dec, 11, zz, train=False)
  y = _apply(dec, vd, zz, train=False)
  assert y.shape == (2, 32, 32, 3)
  rd = tr.TorchDCGANDecoder(3, widths, latent).eval()
  rd.load(vd["params"], vd["batch_stats"])
  with torch.no_grad():
    np.testing.assert_allclose(np.asarray(y), tr.nchw_to_nhwc(rd(tr.t(zz))), **TOL)

  disc = Discriminator(widths)
  vv = _variables(disc, 12, x, train=False)
  logit, f = _apply(disc, vv, x, train=False)
  assert logit.shape == (2,) and f.shape == (2, 4, 4, 16)
  rdisc = tr.TorchDiscriminator(3, widths).eval()
  rdisc.load(vv["params"], vv["batch_stats"])
  with torch.no_grad():
    np.testing.assert_allclose(np.asarray(logit), rdisc(tr.nhwc_to_nchw(x))[0].numpy(), **TOL)


def test_dcgan_init_draws_ganomaly_statistics():
  params = jax.eval_shape(DCGANEncoder((64, 128), 100).init, jax.random.key(0),
                          jnp.zeros((1, 16, 16, 3)))["params"]
  params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), params)
  drawn = jax.jit(dcgan_init)(jax.random.key(1), params)
  assert jax.tree.structure(drawn) == jax.tree.structure(params)
  k = np.asarray(drawn["block1"]["conv"]["kernel"])
  assert abs(k.std() - 0.02) < 0.002 and abs(k.mean()) < 0.002
  s = np.asarray(drawn["block1"]["bn"]["scale"])
  assert abs(s.mean() - 1) < 0.01 and 0.01 < s.std() < 0.03
  np.testing.assert_array_equal(drawn["block1"]["bn"]["bias"], 0)
