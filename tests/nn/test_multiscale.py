"""jaxad.nn.multiscale.ASPP against a torchvision-style PyTorch ASPP (copied weights, 1e-4)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import torch_reference as tr
from jaxad.nn.multiscale import ASPP

TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("train", [True, False])
def test_aspp_matches_torch(train):
  x = np.random.default_rng(0).normal(size=(2, 12, 12, 6)).astype(np.float32)
  mod = ASPP(8, rates=(5, 7, 9))
  v = mod.init(jax.random.key(0), x)
  stats = v["batch_stats"]
  if not train:
    rng = np.random.default_rng(1)
    stats = jax.tree.map(lambda a: np.abs(rng.normal(1, 0.3, a.shape)).astype(np.float32), stats)
  apply = jax.jit(mod.apply, static_argnames=("train", "mutable"))
  if train:
    y, _ = apply({"params": v["params"], "batch_stats": stats}, x, train=True, mutable=("batch_stats",))
  else:
    y = apply({"params": v["params"], "batch_stats": stats}, x, train=False)
  ref = tr.TorchASPP(6, 8, (5, 7, 9))
  ref.load(v["params"], stats)
  ref.train(train)
  y_t = tr.nchw_to_nhwc(ref(tr.nhwc_to_nchw(x)))
  assert y.shape == (2, 12, 12, 8)
  np.testing.assert_allclose(np.asarray(y), y_t, **TOL)


def test_aspp_branches_and_receptive_field():
  mod = ASPP(4, rates=(2,), branch_features=3, image_pooling=False)
  x = np.zeros((1, 9, 9, 2), np.float32)
  v = mod.init(jax.random.key(0), x)
  assert set(v["params"]) == {"branch_1x1", "branch_d0", "project"}
  assert v["params"]["project"]["conv"]["kernel"].shape == (1, 1, 6, 4)
  # A dilated 3x3 (rate 2) sees pixels 2 away: perturbing (4, 6) changes output (4, 4),
  # perturbing (4, 5) only through the 1x1 branch at (4, 5), not at (4, 4).
  base = mod.apply(v, x)
  x2 = x.copy()
  x2[0, 4, 6, :] = 1.0
  assert np.abs(np.asarray(mod.apply(v, x2) - base))[0, 4, 4].max() > 0
  x3 = x.copy()
  x3[0, 4, 5, :] = 1.0
  assert np.abs(np.asarray(mod.apply(v, x3) - base))[0, 4, 4].max() == 0
