"""jaxad.nn.layers against PyTorch CPU with copied weights (tolerance 1e-4 abs/rel)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn as tnn

import torch_reference as tr
from jaxad.nn import layers

TOL = dict(rtol=1e-4, atol=1e-4)


def _randomise_stats(stats, seed):
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.asarray(rng.uniform(0.5, 2.0, v.shape) if path[-1].key == "var"
                                  else rng.normal(0, 0.5, v.shape), jnp.float32), stats)


@pytest.mark.parametrize("k,s,p,d", [(3, 1, 1, 1), (4, 2, 1, 1), (3, 1, 5, 5), (1, 1, 0, 1)])
def test_conv_bn_relu_matches_torch_train_and_eval(k, s, p, d):
  x = np.random.default_rng(0).normal(size=(3, 16, 16, 5)).astype(np.float32)
  mod = layers.ConvBNReLU(7, k, s, p, d)
  v = mod.init(jax.random.key(1), x)
  y, upd = mod.apply(v, x, train=True, mutable=["batch_stats"])
  ref = tr.CBR(5, 7, k, s, p, d)
  ref.load(v["params"], v["batch_stats"])
  ref.train()
  y_t = ref(tr.nhwc_to_nchw(x))
  np.testing.assert_allclose(np.asarray(y), tr.nchw_to_nhwc(y_t), **TOL)
  # Running mean follows PyTorch's momentum 0.1 (variance: see the next test).
  np.testing.assert_allclose(upd["batch_stats"]["bn"]["mean"], ref[1].running_mean.numpy(), **TOL)
  # Eval mode with non-trivial running statistics.
  stats = _randomise_stats(v["batch_stats"], 2)
  ref.load(v["params"], stats)
  ref.eval()
  y = mod.apply({"params": v["params"], "batch_stats": stats}, x, train=False)
  np.testing.assert_allclose(np.asarray(y), tr.nchw_to_nhwc(ref(tr.nhwc_to_nchw(x))), **TOL)
  side = (16 + 2 * p - d * (k - 1) - 1) // s + 1
  assert y.shape == (3, side, side, 7)


def test_batch_norm_running_var_convention():
  """Flax stores the biased batch variance; PyTorch the unbiased one (documented gap)."""
  x = np.random.default_rng(0).normal(size=(4, 6, 6, 3)).astype(np.float32)
  bn = layers.batch_norm(train=True)
  v = bn.init(jax.random.key(0), x)
  _, upd = bn.apply(v, x, mutable=["batch_stats"])
  biased = x.reshape(-1, 3).var(0)
  np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * biased, rtol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * x.reshape(-1, 3).mean(0), atol=1e-6)


@pytest.mark.parametrize("method,hw", [("transpose", (5, 7)), ("subpixel", (5, 7)),
                                       ("subpixel", (1, 1)), ("subpixel", (1, 3))])
def test_upsample_matches_torch_conv_transpose(method, hw):
  # (1, 1): the sub-pixel path's matrix-product branch; (1, 3): its conv on a one-row map.
  x = np.random.default_rng(0).normal(size=(2, *hw, 4)).astype(np.float32)
  mod = layers.Upsample2x(6, method=method)
  v = mod.init(jax.random.key(0), x)
  v = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape), v)
  y = mod.apply(v, x)
  ref = tnn.ConvTranspose2d(4, 6, 4, 2, 1)
  tr.copy_convt(ref, v["params"])
  y_t = tr.nchw_to_nhwc(ref(tr.nhwc_to_nchw(x)))
  assert y.shape == (2, 2 * hw[0], 2 * hw[1], 6)
  np.testing.assert_allclose(np.asarray(y), y_t, **TOL)


def test_upsample_paths_have_equal_outputs_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  mods = {m: layers.Upsample2x(5, method=m) for m in layers.UPSAMPLE_METHODS}
  v = mods["transpose"].init(jax.random.key(1), x)
  v2 = mods["subpixel"].init(jax.random.key(1), x)
  assert jax.tree.structure(v) == jax.tree.structure(v2)
  target = jax.random.normal(jax.random.key(2), (2, 16, 16, 5))

  def loss(params, m):
    return jnp.sum((mods[m].apply({"params": params}, x) - target) ** 2)

  g = {m: jax.grad(loss)(v["params"], m) for m in mods}
  np.testing.assert_allclose(mods["transpose"].apply(v, x), mods["subpixel"].apply(v, x), **TOL)
  for a, b in zip(jax.tree.leaves(g["transpose"]), jax.tree.leaves(g["subpixel"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_depth_to_space_layout():
  x = np.arange(2 * 3 * 3 * 8, dtype=np.float32).reshape(2, 3, 3, 8)
  y = np.asarray(layers.depth_to_space(jnp.asarray(x), 2))
  # Channel index (a, b, c) of input pixel (i, j) lands at (2i + a, 2j + b, c).
  for a in range(2):
    for b in range(2):
      np.testing.assert_array_equal(y[:, a::2, b::2, :], x[..., (a * 2 + b) * 2:(a * 2 + b + 1) * 2])
  with pytest.raises(ValueError, match="divisible"):
    layers.depth_to_space(jnp.zeros((1, 2, 2, 3)))


def test_upsample_method_choice():
  assert layers.default_upsample("cpu") == "subpixel"
  assert layers.default_upsample("gpu") == "transpose"
  assert layers.resolve_upsample("auto") == layers.default_upsample()
  with pytest.raises(ValueError, match="upsample"):
    layers.resolve_upsample("bilinear")


def test_encoder_and_decoder_blocks_match_torch():
  x = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype(np.float32)
  enc = layers.EncoderBlock(6, 4, 2, 1)
  ve = enc.init(jax.random.key(0), x)
  ye, _ = enc.apply(ve, x, train=True, mutable=["batch_stats"])
  dec = layers.ResidualDecoderBlock(3, upsample="subpixel")
  vd = dec.init(jax.random.key(1), ye)
  yd, _ = dec.apply(vd, ye, train=True, mutable=["batch_stats"])
  assert ye.shape == (2, 4, 4, 6) and yd.shape == (2, 8, 8, 3)

  t_enc = tnn.Sequential(tr.CBR(4, 6, 4, 2, 1), tr.CBR(6, 6))
  t_enc[0].load(ve["params"]["cbr1"], ve["batch_stats"]["cbr1"])
  t_enc[1].load(ve["params"]["cbr2"], ve["batch_stats"]["cbr2"])
  up = tnn.ConvTranspose2d(6, 3, 4, 2, 1)
  up_bn = tnn.BatchNorm2d(3)
  tr.copy_convt(up, vd["params"]["up"])
  tr.copy_bn(up_bn, vd["params"]["up_bn"], vd["batch_stats"]["up_bn"])
  c1, c2 = tr.CBR(3, 3), tr.CBR(3, 3)
  c1.load(vd["params"]["cbr1"], vd["batch_stats"]["cbr1"])
  c2.load(vd["params"]["cbr2"], vd["batch_stats"]["cbr2"])
  h = t_enc(tr.nhwc_to_nchw(x))
  np.testing.assert_allclose(np.asarray(ye), tr.nchw_to_nhwc(h), **TOL)
  u = torch.relu(up_bn(up(h)))
  out = u + c2(c1(u))
  np.testing.assert_allclose(np.asarray(yd), tr.nchw_to_nhwc(out), **TOL)

  plain = layers.ResidualDecoderBlock(3, upsample="subpixel", residual=False)
  yp, _ = plain.apply(vd, ye, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(np.asarray(yp), tr.nchw_to_nhwc(c2(c1(u))), **TOL)


def test_transpose_kernel_to_subpixel_rejects_bad_kernel():
  with pytest.raises(ValueError, match="kernel"):
    layers.transpose_kernel_to_subpixel(jnp.zeros((3, 3, 1, 1)))


def test_single_conv_subpixel_kernel_equals_transposed_conv():
  x = jax.random.normal(jax.random.key(0), (2, 6, 5, 3))
  mod = layers.Upsample2x(4, method="transpose", use_bias=False)
  v = mod.init(jax.random.key(1), x)
  w = layers.transpose_kernel_to_subpixel(v["params"]["kernel"])
  assert w.shape == (3, 3, 3, 16)
  y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(layers.depth_to_space(y, 2), mod.apply(v, x), **TOL)


@pytest.mark.parametrize("size", [8, 9])
def test_strided_conv_matches_plain_strided_conv(size):
  """The space-to-depth path equals a strided conv (odd sizes use the fallback)."""
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  mod = layers.StridedConv(5, 4, 2, 1)
  v = mod.init(jax.random.key(1), x)
  ref = jax.lax.conv_general_dilated(x, v["params"]["kernel"], (2, 2), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(mod.apply(v, x), ref, **TOL)
  np.testing.assert_array_equal(layers.depth_to_space(layers.space_to_depth(x[:, :8, :8], 2), 2),
                                x[:, :8, :8])
