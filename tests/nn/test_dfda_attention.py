"""DFDA-AD's attention blocks against independent PyTorch references on fixed random weights (1e-5),
the identity initialisation, the gate range, gradients and validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torch_reference as tr
from jaxad.nn.attention import CBAMVariant, QueryKeyAttention

TOL = dict(rtol=1e-5, atol=1e-5)


def _x(shape=(2, 6, 5, 24), seed=0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _random_params(mod, x, seed=1):
  """Every parameter drawn at random (no zero layer), so the references check every term."""
  v = mod.init(jax.random.key(seed), x)["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.5, a.shape), jnp.float32), v)


def torch_cbam(x: torch.Tensor, p: dict, gate_scale: float) -> torch.Tensor:
  """NCHW CBAM variant written from the paper: (avg + max) -> 3 linear layers -> sigmoid; CBAM's
  spatial gate from [mean_C, max_C] through a k x k conv without bias."""
  lin = lambda z, q: F.linear(z, tr.t(np.asarray(q["kernel"]).T), tr.t(q["bias"]))
  z = x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))
  h = F.relu(lin(F.relu(lin(z, p["fc1"])), p["fc2"]))
  y = x * (gate_scale * torch.sigmoid(lin(h, p["fc3"])))[:, :, None, None]
  s = torch.cat([y.mean(dim=1, keepdim=True), y.amax(dim=1, keepdim=True)], dim=1)
  w = tr.t(np.asarray(p["spatial"]["kernel"]).transpose(3, 2, 0, 1))
  return y * gate_scale * torch.sigmoid(F.conv2d(s, w, padding=w.shape[-1] // 2))


def torch_qk(x: torch.Tensor, p: dict, pool: int, gate_scale: float,
             normalize: bool = True) -> torch.Tensor:
  """NCHW query-key attention: Q from 3x3 max pooling, K from 3x3 average pooling (valid pixels),
  each divided by its RMS over channels, S = Q K^T / sqrt(d), gate = gate_scale * mean_j
  sigmoid(S_ij)."""
  b, c, h, w = x.shape
  qin = F.max_pool2d(x, pool, 1, pool // 2)
  kin = F.avg_pool2d(x, pool, 1, pool // 2, count_include_pad=False)
  if normalize:
    qin = qin / torch.sqrt(qin.square().mean(dim=1, keepdim=True) + 1e-6)
    kin = kin / torch.sqrt(kin.square().mean(dim=1, keepdim=True) + 1e-6)
  tok = lambda m: m.flatten(2).transpose(1, 2)  # [B, N, C]
  q = tok(qin) @ tr.t(p["query"]["kernel"]) + tr.t(p["query"]["bias"])
  k = tok(kin) @ tr.t(p["key"]["kernel"]) + tr.t(p["key"]["bias"])
  s = q @ k.transpose(1, 2) / np.sqrt(q.shape[-1])
  g = gate_scale * torch.sigmoid(s).mean(dim=-1)  # [B, N]
  return x * g.reshape(b, 1, h, w)


@pytest.mark.parametrize("gate_scale", [1.0, 2.0])
def test_cbam_variant_matches_torch(gate_scale):
  x = _x()
  mod = CBAMVariant(gate_scale=gate_scale, spatial_kernel=5)
  p = _random_params(mod, x)
  m = max(8, 24 // 16)
  assert p["fc1"]["kernel"].shape == (24, m) and p["fc2"]["kernel"].shape == (m, m)
  assert p["fc3"]["kernel"].shape == (m, 24) and p["spatial"]["kernel"].shape == (5, 5, 2, 1)
  got = np.asarray(mod.apply({"params": p}, x))
  with torch.no_grad():
    want = tr.nchw_to_nhwc(torch_cbam(tr.nhwc_to_nchw(x), p, gate_scale))
  np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("pool,gate_scale,normalize", [(3, 2.0, True), (1, 1.0, False)])
def test_query_key_attention_matches_torch(pool, gate_scale, normalize):
  x = _x((2, 5, 7, 12), seed=2)  # H != W: the token order is row-major in both
  mod = QueryKeyAttention(dim=6, pool=pool, gate_scale=gate_scale, normalize=normalize)
  p = _random_params(mod, x, seed=3)
  assert p["query"]["kernel"].shape == (12, 6) and p["key"]["kernel"].shape == (12, 6)
  got = np.asarray(mod.apply({"params": p}, x))
  with torch.no_grad():
    want = tr.nchw_to_nhwc(torch_qk(tr.nhwc_to_nchw(x), p, pool, gate_scale, normalize))
  np.testing.assert_allclose(got, want, **TOL)


def test_query_key_gate_is_one_weight_per_position():
  """out / x is constant over channels, in (0, gate_scale), and varies over positions."""
  x = np.abs(_x((1, 4, 4, 8), seed=4)) + 0.5
  mod = QueryKeyAttention(dim=4, gate_scale=1.0, identity_init=False)
  r = np.asarray(mod.apply(mod.init(jax.random.key(0), x), x) / x)
  np.testing.assert_allclose(r, np.broadcast_to(r[..., :1], r.shape), rtol=1e-6)
  assert (r > 0).all() and (r < 1).all() and r[..., 0].std() > 1e-4


@pytest.mark.parametrize("mod", [CBAMVariant(), QueryKeyAttention(dim=4)])
def test_identity_initialisation_and_gradients(mod):
  x = _x((2, 4, 4, 16), seed=5)
  v = mod.init(jax.random.key(0), x)
  np.testing.assert_array_equal(np.asarray(mod.apply(v, x)), x)  # 2 * sigmoid(0) = 1 exactly
  loss = lambda p: jnp.sum(jnp.square(mod.apply({"params": p}, x) - 0.3 * x))
  grads = jax.jit(jax.grad(loss))(v["params"])
  last = grads["fc3"]["kernel"] if "fc3" in grads else grads["query"]["kernel"]
  assert float(jnp.abs(last).max()) > 0  # the zero layer is trainable: training can leave identity


def test_validation():
  x = _x((2, 4, 4, 8))
  with pytest.raises(ValueError, match="B, H, W, C"):
    CBAMVariant().init(jax.random.key(0), x[0])
  with pytest.raises(TypeError, match="float"):
    QueryKeyAttention().init(jax.random.key(0), x.astype(np.int32))
  with pytest.raises(ValueError, match="spatial_kernel"):
    CBAMVariant(spatial_kernel=4).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="pool"):
    QueryKeyAttention(pool=2).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="gate_scale"):
    QueryKeyAttention(gate_scale=0.0).init(jax.random.key(0), x)
