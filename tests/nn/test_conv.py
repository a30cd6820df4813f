"""jaxad.nn.conv: tap pruning gives the plain convolution's outputs and gradients."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_reference as tr
from jaxad.nn.conv import Conv2D, conv2d, prune_taps

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
def test_conv2d_equals_plain_conv_outputs_and_gradients(h, w, k, pad, d, kept):
  x = jax.random.normal(jax.random.key(0), (2, h, w, 3))
  kern = jax.random.normal(jax.random.key(1), (k, k, 3, 4))
  p = ((pad, pad), (pad, pad)) if isinstance(pad, int) else pad
  (sy, sx), _ = prune_taps(x.shape, kern.shape, p, d)
  assert (sy.stop - sy.start, sx.stop - sx.start) == kept
  y0 = _plain(x, kern, p, d)
  y = jax.jit(lambda a, b: conv2d(a, b, pad, d))(x, kern)
  assert y.shape == y0.shape
  np.testing.assert_allclose(y, y0, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(jax.random.key(2), y0.shape)
  g0 = jax.grad(lambda a, b: jnp.sum(_plain(a, b, p, d) * g), (0, 1))(x, kern)
  g1 = jax.jit(jax.grad(lambda a, b: jnp.sum(conv2d(a, b, pad, d) * g), (0, 1)))(x, kern)
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
