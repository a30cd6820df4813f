"""DFDA-AD: shapes, identity-initialised features = fused backbone maps, k-means bank (same seed ->
same bank, equal to jaxad.cluster.kmeans), nearest-centre scores vs NumPy, one train step vs NumPy
(objective and mini-batch k-means), ablation layouts, validation, sharded == single device."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_jax_subprocess
from jaxad import backbones, cluster, data, maps as maps_lib
from jaxad.models import dfdaad
from jaxad.models import patch_features as pf
from jaxad.models.protocol import Run
from jaxad.data import shard_batch
from jaxad.train import loop, rng
from jaxad.train.mesh import data_sharding, make_mesh, replicate
from jaxad.train.predict import predict_dataset

# Tiny: random MobileNetV2 stride 4 (8x8x24) for the CBAM branch, random EfficientNet-Lite0 stride 8
# (4x4x40) for the query-key branch, 32 px, 8x8 grid, D = 64, 16 centres.
TINY = dict(image_size=32, backbone_a="mobilenet_v2", layer_a="stride4",
            backbone_b="efficientnet_lite0", layer_b="stride8", pretrained=False, feature_stride=4,
            bank_size=16, qk_dim=8, sigma=1.0, learning_rate=1e-4)  # 1e-3 overshoots on random backbones
CONFIG = dfdaad.Config(**TINY)
RUN = Run(total_steps=2, steps_per_epoch=2, batch_size=4)


def _images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
  """Smooth random images (low-frequency noise upsampled), float32 in [0, 1]."""
  r = np.random.default_rng(seed)
  low = r.random((n, size // 4, size // 4, 3)).astype(np.float32)
  return np.asarray(jax.image.resize(low, (n, size, size, 3), "bilinear")).clip(0, 1)


def _feats(state, images):
  """The jitted patch features of ``prepare`` (compiled once for batches of 4)."""
  return np.asarray(dfdaad._features(CONFIG, state, jnp.asarray(images)), np.float64)


def _step(state, images, valid=(True, True, True, True)):
  """The engine's compiled train step (the one ``fit`` used: same batch keys, no recompilation)."""
  batch = dict(next(data.batches(data.as_split(images), 4, seed=1, shuffle=False)))
  batch["valid"] = np.asarray(valid, bool)
  mesh = make_mesh()
  return loop.make_train_step(dfdaad, mesh)(CONFIG, RUN, replicate(state, mesh),
                                             shard_batch(batch, data_sharding(mesh)))


def _batches(images: np.ndarray, bs: int = 4) -> list[dict]:
  return [{"image": images[i:i + bs], "valid": np.ones(len(images[i:i + bs]), bool)}
          for i in range(0, len(images), bs)]


@pytest.fixture(scope="module")
def fitted():
  images = _images(8)
  result = loop.fit(dfdaad, CONFIG, images, seed=1, epochs=1, batch_size=4, show_progress=False)
  return images, result.state, result.history


@pytest.fixture(scope="module")
def prepared(fitted):
  images, _, _ = fitted
  state = dfdaad.init(CONFIG, RUN, rng.stream(1, rng.INIT), {"image": images[:4]})  # as fit's
  return images, state, dfdaad.prepare(CONFIG, RUN, rng.stream(1, rng.PREPARE), state,
                                       lambda: _batches(images))


def test_shapes(fitted):
  images, state, history = fitted
  assert dfdaad.branch_shapes(CONFIG) == {"a": (8, 8, 24), "b": (4, 4, 40)}
  assert dfdaad.grid_size(CONFIG) == (8, 8) and dfdaad.feature_dim(CONFIG) == 64
  assert state.bank.shape == (dfdaad.bank_capacity(CONFIG, RUN), 64) and state.bank.shape[0] % 8 == 0
  assert int(state.bank_valid.sum()) == 16 and int(state.step) == 2 and len(history) == 2
  assert set(state.params) == {"cbam", "qk"}
  assert state.params["cbam"]["fc1"]["kernel"].shape == (24, 8)
  assert state.params["qk"]["query"]["kernel"].shape == (40, 8)
  assert _feats(state, images[:4]).shape == (4, 8, 8, 64)
  mem = dfdaad.memory_bytes(state)
  assert mem["bank"] == 16 * 64 * 4 and mem["total"] == mem["bank"] + mem["attention"] + mem["backbone"]


def test_untrained_features_are_the_fused_backbone_maps(prepared):
  images, state, _ = prepared

  @jax.jit
  def reference(x):
    fa = backbones.extract_features(backbones.create("mobilenet_v2"), state.backbone_a, x,
                                    ("stride4",))
    fb = backbones.extract_features(backbones.create("efficientnet_lite0"), state.backbone_b, x,
                                    ("stride8",))
    return pf.fuse_layers({**fa, **fb}, ["stride4", "stride8"], (8, 8), pool=3)

  np.testing.assert_allclose(_feats(state, images[:4]), np.asarray(reference(images[:4])),
                             rtol=1e-5, atol=1e-5)


def test_bank_is_kmeans_of_the_training_patches_and_seeded(prepared):
  images, state, bank_state = prepared
  x = dfdaad.extract_patches(CONFIG, state, _batches(images))
  assert x.shape == (8 * 64, 64)
  # Balanced branches: columns 0-23 (A) and 24-63 (B) scaled to a unit mean squared norm.
  scale = dfdaad.branch_scales(CONFIG, x)
  want = [1 / np.sqrt(np.mean(np.sum(x[:, c].astype(np.float64) ** 2, 1))) for c in (slice(0, 24),
                                                                                   slice(24, 64))]
  np.testing.assert_allclose(scale, want, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(bank_state.branch_scale), scale, rtol=1e-6)
  x[:, :24] *= scale[0]
  x[:, 24:] *= scale[1]
  balanced = dfdaad.extract_patches(CONFIG, bank_state, _batches(images))
  np.testing.assert_allclose(balanced, x, rtol=1e-5, atol=1e-6)  # predict sees the same scaling
  for c in (slice(0, 24), slice(24, 64)):
    np.testing.assert_allclose(np.mean(np.sum(x[:, c].astype(np.float64) ** 2, 1)), 1.0, rtol=1e-5)
  ref = cluster.kmeans(rng.stream(1, rng.PREPARE), x, 16, max_iter=100, tol=1e-4)
  np.testing.assert_array_equal(np.asarray(bank_state.bank[:16]), np.asarray(ref.centers))
  assert not np.asarray(bank_state.bank_valid[16:]).any() and not np.asarray(bank_state.bank[16:]).any()
  sizes = np.bincount(np.asarray(ref.assignments), minlength=16)
  np.testing.assert_array_equal(np.asarray(bank_state.counts[:16]), sizes)
  again = dfdaad.prepare(CONFIG, RUN, rng.stream(1, rng.PREPARE), state, lambda: _batches(images))
  np.testing.assert_array_equal(np.asarray(again.bank), np.asarray(bank_state.bank))
  other = dfdaad.prepare(CONFIG, RUN, jax.random.key(7), state, lambda: _batches(images))
  assert not np.array_equal(np.asarray(other.bank), np.asarray(bank_state.bank))


def test_scores_are_the_distance_to_the_nearest_centre(fitted):
  images, state, _ = fitted
  queries = _images(4, seed=5)
  feats = _feats(state, queries)
  bank = np.asarray(state.bank, np.float64)[np.asarray(state.bank_valid)]
  d = np.sqrt(((feats.reshape(-1, 1, 64) - bank[None]) ** 2).sum(-1)).min(1).reshape(4, 8, 8)
  scores, maps = predict_dataset(dfdaad, CONFIG, state, queries, batch_size=4)
  assert scores.shape == (4,) and maps.shape == (4, 32, 32)
  np.testing.assert_allclose(scores, d.reshape(4, -1).max(1), rtol=1e-4)
  up = maps_lib.gaussian_smooth(maps_lib.upsample(jnp.asarray(d, jnp.float32), (32, 32),
                                                  method="bilinear"), 1.0)
  np.testing.assert_allclose(maps, np.asarray(up), rtol=1e-4, atol=1e-4)


def test_train_step_matches_numpy(prepared):
  images, _, state = prepared
  new, m = _step(state, images[:4], valid=(True, True, True, False))
  f = _feats(state, images[:4])[:3].reshape(-1, 64)  # the padded image does not count
  c = np.asarray(state.bank, np.float64)[:16]
  idx = ((f[:, None] - c[None]) ** 2).sum(-1).argmin(1)
  inertia = ((f - c[idx]) ** 2).sum(1).mean()
  total = ((f - f.mean(0)) ** 2).sum(1).mean()
  np.testing.assert_allclose(float(m["inertia"]), inertia, rtol=1e-4)
  np.testing.assert_allclose(float(m["loss"]), inertia / total, rtol=1e-4)
  counts = np.asarray(state.counts, np.float64)[:16] + np.bincount(idx, minlength=16)
  want = c.copy()
  for n in np.unique(idx):
    hits = (idx == n).sum()
    want[n] += hits / counts[n] * (f[idx == n].mean(0) - c[n])
  np.testing.assert_allclose(np.asarray(new.bank[:16]), want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(new.counts[:16]), counts)
  assert int(new.step) == int(state.step) + 1
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.params, state.params)
  # From the identity initialisation only the zero-initialised layers get a gradient at first
  # (the layers before them are multiplied by zero); Adam's first step moves them by ~lr.
  for block, layer in (("cbam", "fc3"), ("cbam", "spatial"), ("qk", "query")):
    assert min(jax.tree.leaves(moved[block][layer])) > 0.5 * CONFIG.learning_rate
  for block, layer in (("cbam", "fc1"), ("cbam", "fc2"), ("qk", "key")):
    assert max(jax.tree.leaves(moved[block][layer])) == 0.0


def test_an_attention_step_lowers_the_objective_against_the_same_bank(prepared):
  images, _, state = prepared
  w = jnp.ones((4 * 64,), jnp.float32)

  def objective(s):
    f = jnp.asarray(_feats(s, images[:4]), jnp.float32).reshape(-1, 64)
    return float(dfdaad.compactness(f, w, state.bank, state.bank_valid)[0])

  before = objective(state)
  new, m = _step(state, images[:4])
  np.testing.assert_allclose(float(m["loss"]), before, rtol=1e-5)
  after = objective(new)  # new attention, the old bank
  assert after < before, (before, after)


def test_ablation_layouts(prepared):
  images, state, _ = prepared
  example = {"image": images[:4]}
  one = dataclasses.replace(CONFIG, backbone_b="mobilenet_v2", layer_b="stride8", use_qk=False)
  assert one.shared_backbone and dfdaad.feature_dim(one) == 24 + 32
  s1 = dfdaad.init(one, RUN, jax.random.key(0), example)  # one network, no query-key block
  assert s1.backbone_b == {} and set(s1.params) == {"cbam"} and s1.branch_scale.shape == (2,)
  single = dataclasses.replace(CONFIG, backbone_b=None)
  assert dfdaad.branch_shapes(single) == {"a": (8, 8, 24)} and dfdaad.feature_dim(single) == 24
  assert set(dfdaad._attention_modules(single)) == {"cbam"}
  assert dfdaad.bank_count(dataclasses.replace(CONFIG, bank_size=0.1), 1000) == 100
  assert dfdaad.bank_count(CONFIG, 1000) == 16
  paper = dfdaad.paper_config()
  assert dfdaad.branch_shapes(paper) == {"a": (28, 28, 512), "b": (14, 14, 1024)}
  assert dfdaad.feature_dim(paper) == 1536 and dfdaad.grid_size(paper) == (28, 28)


def test_validation(prepared):
  images, state, _ = prepared
  bad = [dict(backbone_a="vgg16"), dict(layer_a="layer9"), dict(layer_b="stride4", backbone_b="mobilenet_v2"),
         dict(bank_size=1.5), dict(bank_size=0), dict(objective="nll"), dict(pool=2),
         dict(image_size=16), dict(gate_scale=0.0), dict(channels=2)]
  for kw in bad:
    with pytest.raises(ValueError):
      dfdaad.Config(**{**TINY, **kw})
  with pytest.raises(ValueError, match="example_batch"):
    dfdaad.init(CONFIG, RUN, jax.random.key(0), {"image": np.zeros((2, 64, 64, 3), np.float32)})
  with pytest.raises(TypeError, match="float32"):
    dfdaad.init(CONFIG, RUN, jax.random.key(0), {"image": np.zeros((2, 32, 32, 3), np.uint8)})
  with pytest.raises(TypeError, match="config"):
    dfdaad.init(dict(TINY), RUN, jax.random.key(0), {"image": images[:2]})
  big = dataclasses.replace(CONFIG, bank_size=10_000)
  with pytest.raises(ValueError, match="bank"):
    dfdaad.prepare(big, RUN, jax.random.key(0), state, lambda: _batches(images))
  with pytest.raises(FileNotFoundError, match="densenet121-a639ec97.pth"):
    dfdaad.init(dfdaad.paper_config(weights_a="missing/densenet121-a639ec97.pth", image_size=32),
                RUN, jax.random.key(0), {"image": images[:2]})


# slow: a 4-device subprocess compile; the shared memory-bank path is checked sharded by
# tests/models/test_smcc.py and tests/cluster/test_knn.py in the default suite.
@pytest.mark.slow
def test_sharded_equals_single_device(fitted, tmp_path):
  """The 4-device run (batch sharded, state replicated) in a subprocess equals this process's
  single-device fit and predictions (the ``fitted`` fixture: same data, seed and config)."""
  _, state, history = fitted
  queries = _images(4, seed=5)  # unseen queries
  scores, maps = predict_dataset(dfdaad, CONFIG, state, queries, batch_size=4)
  out = tmp_path / "sharded.npz"
  code = f"""
    import sys
    import jax, numpy as np
    sys.path[:0] = ["tests", "tests/models"]
    import test_dfdaad as T
    from jaxad.train import loop
    from jaxad.train.mesh import make_mesh
    from jaxad.train.predict import predict_dataset
    assert jax.device_count() == 4
    mesh = make_mesh(4)
    fit = loop.fit(T.dfdaad, T.CONFIG, T._images(8), seed=1, epochs=1, batch_size=4, mesh=mesh,
                   show_progress=False)
    s, m = predict_dataset(T.dfdaad, T.CONFIG, fit.state, T._images(4, seed=5), batch_size=4,
                           mesh=mesh)
    np.savez({str(out)!r}, scores=s, maps=m, bank=np.asarray(fit.state.bank),
             loss=[h["loss"] for h in fit.history])
    print("OK")
  """
  assert "OK" in run_jax_subprocess(code, devices=4)
  four = np.load(out)
  np.testing.assert_allclose(four["bank"], np.asarray(state.bank), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(four["loss"], [h["loss"] for h in history], rtol=1e-4)
  np.testing.assert_allclose(four["scores"], scores, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(four["maps"], maps, rtol=1e-4, atol=1e-4)
