"""jaxad.nn.conv: tap pruning gives the plain convolution's outputs and gradients."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_reference as tr
from jaxad.nn.conv import (Conv2D, conv2d, conv_tap_sum, conv_valid, live_fraction, matmul_form_chosen, prune_taps,
                           tap_sum_chosen)
from jaxad.nn.layers import StridedConv

TOL = dict(rtol=1e-4, atol=1e-4)
DN = ("NHWC", "HWIO", "NHWC")


def _plain(x, w, pad, d):
  return jax.lax.conv_general_dilated(x, w, (1, 1), pad, rhs_dilation=(d, d), dimension_numbers=DN)


@pytest.mark.parametrize("h,w,k,pad,d,kept", [
    (8, 8, 3, 5, 5, (3, 3)),    # RAMFAE ASPP at 64 px: rate 5 keeps every tap
    (8, 8, 3, 7, 7, (3, 3)),    # rate 7: the outer taps still see one row / column
    (8, 8, 3, 9, 9, (1, 1)),    # rate 9: only the centre tap sees the 8x8 map
    (8, 10, 3, 9, 9, (1, 3)),   # per dimension: W = 10 > 9 keeps the outer columns
    (5, 5, 3, 12, 12, (1, 1)),
    (9, 9, 3, 1, 1, (3, 3)),    # ordinary 3x3
    (6, 6, 2, ((0, 0), (0, 0)), 1, (2, 2)),
    (4, 4, 3, ((3, 0), (0, 3)), 2, (2, 2)),  # asymmetric padding
    (1, 4, 2, 1, 2, (1, 2)),    # H: no tap sees the 1-row map (zeros, crop path)
])
@pytest.mark.parametrize("form", ["conv", "matmul", "tap_sum"])
def test_conv2d_equals_plain_conv_outputs_and_gradients(h, w, k, pad, d, kept, form):
  x = jax.random.normal(jax.random.key(0), (2, h, w, 3))
  kern = jax.random.normal(jax.random.key(1), (k, k, 3, 4))
  p = ((pad, pad), (pad, pad)) if isinstance(pad, int) else pad
  (sy, sx), _ = prune_taps(x.shape, kern.shape, p, d)
  assert (sy.stop - sy.start, sx.stop - sx.start) == kept
  y0 = _plain(x, kern, p, d)
  y = jax.jit(lambda a, b: conv2d(a, b, pad, d, form=form))(x, kern)
  assert y.shape == y0.shape
  np.testing.assert_allclose(y, y0, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(jax.random.key(2), y0.shape)
  g0 = jax.grad(lambda a, b: jnp.sum(_plain(a, b, p, d) * g), (0, 1))(x, kern)
  g1 = jax.jit(jax.grad(lambda a, b: jnp.sum(conv2d(a, b, pad, d, form=form) * g), (0, 1)))(x, kern)
  np.testing.assert_allclose(g1[0], g0[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(g1[1], g0[1], rtol=1e-5, atol=1e-5)
  # Pruned taps: exactly zero gradient, as for the plain convolution.
  mask = np.ones(kern.shape[:2], bool)
  mask[sy, sx] = False
  assert np.all(np.asarray(g1[1])[mask] == 0) and np.all(np.asarray(g0[1])[mask] == 0)


def test_conv2d_module_matches_torch_and_flax_conv():
  """Same parameter tree and initial values as nn.Conv; outputs equal PyTorch Conv2d."""
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 6)).astype(np.float32)
  mod = Conv2D(5, 3, 9, 9)
  v = mod.init(jax.random.key(0), x)
  ref = nn.Conv(5, (3, 3), padding=((9, 9), (9, 9)), kernel_dilation=(9, 9))
  v_ref = ref.init(jax.random.key(0), x)
  assert jax.tree.structure(v) == jax.tree.structure(v_ref)
  for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(v_ref)):
    np.testing.assert_array_equal(a, b)
  v = jax.tree.map(lambda a: a + 0.1, v)  # non-zero bias
  np.testing.assert_allclose(mod.apply(v, x), ref.apply(v, x), rtol=1e-5, atol=1e-5)
  t = torch.nn.Conv2d(6, 5, 3, 1, 9, dilation=9)
  tr.copy_conv(t, v["params"])
  np.testing.assert_allclose(np.asarray(mod.apply(v, x)), tr.nchw_to_nhwc(t(tr.nhwc_to_nchw(x))), **TOL)


def test_conv2d_rejects_mismatched_channels():
  with pytest.raises(ValueError, match="same C"):
    conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 1)), 1)


@pytest.mark.parametrize("form", ["conv", "matmul"])
def test_conv_valid_and_tap_sum_reject_bad_operands(form):
  x, k = jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 2))
  with pytest.raises(ValueError, match="same C"):
    conv_valid(jnp.zeros((4, 4, 3)), k, form=form)
  with pytest.raises(ValueError, match="padding must be >= 0"):
    conv_valid(x, k, ((-1, 0), (0, 0)), form=form)
  with pytest.raises(ValueError, match="same C"):
    conv_tap_sum(x, jnp.zeros((3, 3, 2, 2)), ((1, 1), (1, 1)))


@pytest.mark.parametrize("shape,kshape,pad,d", [
    ((4, 2, 2, 64), (2, 2, 64, 96), ((1, 1), (1, 1)), 1),   # a U-Net bottom: 3x3 outputs, wide
    ((3, 2, 2, 32), (2, 2, 32, 16), ((0, 0), (0, 0)), 1),   # 1x1 output
    ((2, 5, 4, 8), (3, 3, 8, 8), ((2, 2), (0, 3)), 2),      # dilation, asymmetric padding
    ((2, 3, 3, 16), (1, 1, 16, 8), ((0, 0), (0, 0)), 1),    # 1x1 kernel
])
def test_conv_valid_matmul_form_equals_convolution(shape, kshape, pad, d):
  """The matrix-product form: same outputs and input / kernel gradients as the convolution."""
  x = jax.random.normal(jax.random.key(0), shape)
  kern = jax.random.normal(jax.random.key(1), kshape)
  fwd = {f: jax.jit(lambda a, b, f=f: conv_valid(a, b, pad, d, form=f)) for f in ("conv", "matmul")}
  y0, y1 = fwd["conv"](x, kern), fwd["matmul"](x, kern)
  assert y1.shape == y0.shape == _plain(x, kern, pad, d).shape
  np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(jax.random.key(2), y0.shape)
  grads = {f: jax.jit(jax.grad(lambda a, b, f=f: jnp.sum(conv_valid(a, b, pad, d, form=f) * g), (0, 1)))(x, kern)
           for f in ("conv", "matmul")}
  for a, b in zip(grads["matmul"], grads["conv"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_matmul_form_choice():
  """auto: the matrix product on CPU when the output has no more pixels than channels."""
  assert matmul_form_chosen("auto", 16, 512, "cpu")
  assert matmul_form_chosen("auto", 512, 512, "cpu")
  assert not matmul_form_chosen("auto", 513, 512, "cpu")
  assert not matmul_form_chosen("auto", 16, 512, "gpu") and not matmul_form_chosen("auto", 16, 512, "tpu")
  assert matmul_form_chosen("matmul", 10**6, 1, "tpu") and not matmul_form_chosen("conv", 1, 10**6, "cpu")
  with pytest.raises(ValueError, match="form must be one of"):
    matmul_form_chosen("im2col", 1, 1, "cpu")


def _primitives(fun, *args) -> set[str]:
  return {e.primitive.name for e in jax.make_jaxpr(fun)(*args).eqns}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the auto choice is CPU-specific")
def test_strided_conv_auto_form_on_cpu():
  """A U-Net's last 4x4/s2 conv (2x2 -> 1x1, 512 channels) becomes a dot; a 32x32 map stays a conv."""
  for hw, cin, cout, want, not_want in [(2, 64, 512, "dot_general", "conv_general_dilated"),
                                        (32, 8, 16, "conv_general_dilated", "dot_general")]:
    x = jnp.zeros((16, hw, hw, cin))
    mod = StridedConv(cout)
    v = mod.init(jax.random.key(0), x)
    prims = _primitives(lambda v, x: mod.apply(v, x), v, x)
    assert want in prims and not_want not in prims, prims


def test_live_fraction_and_tap_sum_choice():
  """Live share of the multiply-adds, and auto's choice of the tap sum on CPU only."""
  x, k = (16, 8, 8, 512), (3, 3, 512, 512)
  assert live_fraction(x, k, ((5, 5), (5, 5)), 5) == pytest.approx((8 + 3 + 3) ** 2 / (9 * 64))
  assert live_fraction(x, k, ((7, 7), (7, 7)), 7) == pytest.approx((8 + 1 + 1) ** 2 / (9 * 64))
  assert live_fraction(x, k, ((1, 1), (1, 1)), 1) == pytest.approx((8 + 7 + 7) ** 2 / (9 * 64))
  assert live_fraction(x, (1, 1, 512, 512), ((0, 0), (0, 0)), 1) == 1.0
  assert tap_sum_chosen("auto", x, k, ((5, 5), (5, 5)), 5, "cpu")
  assert tap_sum_chosen("auto", x, k, ((1, 1), (1, 1)), 1, "cpu")  # 0.84: small map
  assert not tap_sum_chosen("auto", (16, 16, 16, 512), k, ((1, 1), (1, 1)), 1, "cpu")  # 0.92
  assert not tap_sum_chosen("auto", x, k, ((5, 5), (5, 5)), 5, "gpu")
  assert tap_sum_chosen("tap_sum", x, k, ((1, 1), (1, 1)), 1, "tpu")
  with pytest.raises(ValueError, match="form must be one of"):
    tap_sum_chosen("winograd", x, k, ((1, 1), (1, 1)), 1, "cpu")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the auto choice is CPU-specific")
def test_conv2d_auto_sums_taps_of_dilated_convs_on_small_maps():
  """RAMFAE's rate-5 ASPP branch on an 8x8 map: no convolution left; a 3x3 on 16x16 stays one."""
  x, k = jnp.zeros((2, 8, 8, 16)), jnp.zeros((3, 3, 16, 16))
  prims = _primitives(lambda a, b: conv2d(a, b, 5, 5), x, k)
  assert "conv_general_dilated" not in prims and "dot_general" in prims, prims
  assert "conv_general_dilated" in _primitives(lambda a, b: conv2d(a, b, 1, 1), jnp.zeros((2, 16, 16, 16)), k)
