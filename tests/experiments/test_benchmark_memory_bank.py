"""The PyTorch PatchCore of ``benchmark_memory_bank.py``: greedy coreset and scoring against NumPy /
SciPy references (tiny inputs; the features are compared with jaxad's by the benchmark's ``--check``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

tp = pytest.importorskip("experiments.torch_patchcore")


@pytest.fixture(scope="module")
def model():
  try:
    path = tp.default_weights_path()
  except (FileNotFoundError, ModuleNotFoundError) as e:
    pytest.skip(f"MobileNetV2 weights not installed: {e}")
  return tp.PatchCore(path, seed=3)


def test_greedy_coreset_is_the_farthest_point_loop(model):
  # NumPy float64 k-center loop on the same projection and start (the seeded generator's draws).
  x = torch.from_numpy(np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32))
  got = model.greedy_coreset(x, 25).numpy()
  gen = torch.Generator().manual_seed(3)
  proj = (torch.randn(16, model.projection_dim, generator=gen) / np.sqrt(model.projection_dim))
  p = (x @ proj).double().numpy()
  sel = [int(torch.randint(300, (1,), generator=gen))]
  dist = ((p - p[sel[0]]) ** 2).sum(1)
  for _ in range(24):
    sel.append(int(np.argmax(dist)))
    dist = np.minimum(dist, ((p - p[sel[-1]]) ** 2).sum(1))
  np.testing.assert_array_equal(got, sel)
  assert len(set(sel)) == 25


def test_predict_is_1nn_upsampled_and_smoothed(model):
  images = np.random.default_rng(1).random((2, 64, 64, 3)).astype(np.float32)
  feats = model.patch_features(images)  # [2, 8, 8, 128]
  assert tuple(feats.shape) == (2, 8, 8, 128)
  bank = feats[0].reshape(-1, 128)[::3].numpy() + 0.1
  model.set_bank(bank)
  scores, maps = model.predict(images)
  q = feats.reshape(-1, 128).double().numpy()
  d = np.sqrt(((q[:, None] - bank[None].astype(np.float64)) ** 2).sum(-1)).min(1).reshape(2, 8, 8)
  np.testing.assert_allclose(scores, d.reshape(2, -1).max(1), rtol=1e-4)
  up = torch.nn.functional.interpolate(torch.from_numpy(d)[:, None], size=(64, 64), mode="bilinear",
                                       align_corners=False)[:, 0].numpy()
  ref = np.stack([ndimage.gaussian_filter(m, 4.0, mode="reflect", truncate=4.0) for m in up])
  np.testing.assert_allclose(maps, ref, rtol=1e-4, atol=1e-4 * d.max())
  assert np.abs(maps - up).max() > 0.01 * d.max()  # the smoothing is applied
