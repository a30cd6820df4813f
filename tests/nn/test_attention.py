"""jaxad.nn.attention.CoordinateAttention against the authors' CoordAtt in PyTorch (1e-4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch_reference as tr
from jaxad.nn.attention import CoordinateAttention, hard_swish

TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("train", [True, False])
def test_coordinate_attention_matches_torch(train):
  x = np.random.default_rng(0).normal(size=(3, 6, 10, 16)).astype(np.float32)  # H != W
  mod = CoordinateAttention()
  v = mod.init(jax.random.key(0), x)
  assert v["params"]["conv1"]["kernel"].shape == (1, 1, 16, 8)  # mip = max(8, 16 // 32)
  stats = v["batch_stats"]
  if not train:
    rng = np.random.default_rng(1)
    stats = jax.tree.map(lambda a: np.abs(rng.normal(1, 0.3, a.shape)).astype(np.float32), stats)
  variables = {"params": v["params"], "batch_stats": stats}
  if train:
    y, _ = mod.apply(variables, x, train=True, mutable=["batch_stats"])
  else:
    y = mod.apply(variables, x, train=False)
  ref = tr.TorchCoordAtt(16)
  ref.load(v["params"], stats)
  ref.train(train)
  np.testing.assert_allclose(np.asarray(y), tr.nchw_to_nhwc(ref(tr.nhwc_to_nchw(x))), **TOL)


def test_coordinate_attention_gates_are_separable():
  """y / x = g_h(i) g_w(j): the ratio map has rank one per (batch, channel)."""
  x = jnp.abs(jax.random.normal(jax.random.key(0), (2, 5, 7, 8))) + 0.5
  mod = CoordinateAttention(activation="relu")
  v = mod.init(jax.random.key(1), x)
  r = np.asarray(mod.apply(v, x) / x)
  assert (r > 0).all() and (r < 1).all()
  for b in range(2):
    for c in range(8):
      s = np.linalg.svd(r[b, :, :, c], compute_uv=False)
      assert s[1] < 1e-5 * s[0]
  with pytest.raises(ValueError, match="activation"):
    CoordinateAttention(activation="gelu").init(jax.random.key(0), x)


def test_hard_swish_values():
  x = jnp.array([-4.0, -3.0, 0.0, 1.0, 3.0, 5.0])
  np.testing.assert_allclose(hard_swish(x), [0, 0, 0, 4 / 6, 3, 5], atol=1e-6)
