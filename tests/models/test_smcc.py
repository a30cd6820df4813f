"""SMCC: patch-feature fusion vs PyTorch, centre losses vs NumPy, fit/predict shapes, kNN scores vs
brute force, self-update lowers L_c, fixed bank size, best-pair bookkeeping, determinism,
no recompilation after re-init, sharded == single device, validation."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import run_jax_subprocess
from jaxad import cluster, data
from jaxad import maps as maps_lib
from jaxad.models import patch_features as pf
from jaxad.models import smcc
from jaxad.models.protocol import Run
from jaxad.train import loop, rng
from jaxad.train.mesh import make_mesh, replicate
from jaxad.train.predict import make_predict

# Tiny: random ResNet18 at 32 px, layer1 (stride 4) + layer2 (stride 8) on an 8x8 grid; the same
# config as tests/train/test_fit_methods.py, so both share compilations.
TINY = dict(image_size=32, backbone="resnet18", layers=("layer1", "layer2"), pretrained=False,
            feature_stride=4, gmm_k=3, knn_k=2, sigma=1.0,
            learning_rate=1e-4)  # 1e-4: a random backbone's frozen BN makes Adam 1e-3 overshoot
CONFIG = smcc.Config(**TINY)
RUN = Run(total_steps=4, steps_per_epoch=2, batch_size=4)  # 8 images, batch 4, W = 2


def _images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
  """Smooth random images (low-frequency noise upsampled), float32 in [0, 1]."""
  rng = np.random.default_rng(seed)
  low = rng.random((n, size // 4, size // 4, 3)).astype(np.float32)
  return np.asarray(jax.image.resize(low, (n, size, size, 3), "bilinear")).clip(0, 1)


def _batches(images: np.ndarray, bs: int) -> list[dict]:
  return [{"image": images[i:i + bs], "valid": np.ones(len(images[i:i + bs]), bool)}
          for i in range(0, len(images), bs)]


def _fit(images, epochs=2):
  return loop.fit("smcc", CONFIG, images, seed=1, epochs=epochs, batch_size=4, show_progress=False)


def _predict(state, images):
  return make_predict(smcc, make_mesh())(CONFIG, state, images)


def _step(state, batch):
  """The engine's compiled self-update step (state replicated, batch sharded)."""
  mesh = make_mesh()
  from jaxad.data import shard_batch
  from jaxad.train.mesh import data_sharding
  return loop.make_train_step(smcc, mesh)(CONFIG, RUN, replicate(state, mesh),
                                           shard_batch(batch, data_sharding(mesh)))


@pytest.fixture(scope="module")
def fitted():
  images = _images(8)
  result = _fit(images)
  return CONFIG, images, result.state, result.history


@pytest.fixture(scope="module")
def initial(fitted):
  _, images, _, _ = fitted
  return smcc.init(CONFIG, RUN, rng.stream(1, rng.INIT), {"image": images[:4]})  # as fit's


# ----------------------------------------------------------------------------- patch features


@pytest.mark.parametrize("size", [1, 3, 5])
def test_local_average_matches_torch(size):
  x = np.random.default_rng(0).normal(size=(2, 7, 6, 5)).astype(np.float32)
  got = np.asarray(pf.local_average(jnp.asarray(x), size))
  t = torch.nn.functional.avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), size, 1, size // 2,
                                     count_include_pad=False)
  np.testing.assert_allclose(got, t.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cin,cout", [(10, 3), (128, 50), (7, 7)])
def test_channel_avg_matches_torch_adaptive_pool(cin, cout):
  x = np.random.default_rng(1).normal(size=(11, cin)).astype(np.float32)
  got = x @ pf.channel_avg_matrix(cin, cout)
  want = torch.nn.functional.adaptive_avg_pool1d(torch.from_numpy(x)[:, None], cout)[:, 0].numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fuse_layers_resizes_concatenates_projects():
  rng = np.random.default_rng(2)
  feats = {"a": jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(2, 4, 4, 5)), jnp.float32)}
  out = pf.fuse_layers(feats, ["a", "b"], (8, 8), pool=1)
  assert out.shape == (2, 8, 8, 8)
  np.testing.assert_array_equal(out[..., :3], feats["a"])  # already on the grid: untouched
  up = torch.nn.functional.interpolate(torch.from_numpy(np.array(feats["b"])).permute(0, 3, 1, 2),
                                       size=(8, 8), mode="bilinear", align_corners=False)
  np.testing.assert_allclose(out[..., 3:], up.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)
  proj = pf.projection_matrix(jax.random.key(0), "random", 8, 4)
  out_p = pf.fuse_layers(feats, ["a", "b"], (8, 8), pool=1, projection=proj)
  np.testing.assert_allclose(out_p, np.asarray(out) @ np.asarray(proj), rtol=1e-4, atol=1e-5)
  assert pf.projection_matrix(jax.random.key(0), "random", 8, None) is None
  with pytest.raises(ValueError, match="kind"):
    pf.projection_matrix(jax.random.key(0), "pca", 8, 4)


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("margin", [None, 0.5])
def test_center_losses_match_numpy(margin):
  rng = np.random.default_rng(3)
  p = rng.normal(size=(50, 6)).astype(np.float32)
  c = rng.normal(size=(4, 6)).astype(np.float32)
  w = (rng.random(50) > 0.2).astype(np.float32)
  lc, lo = smcc.center_losses(jnp.asarray(p), jnp.asarray(c), jnp.asarray(w), lo_margin=margin)
  d = np.sort(np.linalg.norm(p[:, None] - c[None], axis=-1), axis=1)
  lo_ref = d[:, 0] - d[:, 1] if margin is None else np.maximum(d[:, 0] - d[:, 1] + margin, 0)
  np.testing.assert_allclose(float(lc), (w * d[:, 0]).sum() / w.sum(), rtol=1e-4)
  np.testing.assert_allclose(float(lo), (w * lo_ref).sum() / w.sum(), rtol=1e-4, atol=1e-6)
  # Eq. 5 is bounded below by minus the largest centre distance (triangle inequality).
  cmax = np.max(np.linalg.norm(c[:, None] - c[None], axis=-1))
  assert float(lo) >= -cmax


# ----------------------------------------------------------------------------- fit / predict


def test_fit_and_predict_shapes(fitted, initial):
  config, images, state, history = fitted
  h, w = smcc.grid_size(config)
  d = smcc.feature_dim(config)
  assert (h, w) == (8, 8) and d == 64 + 128
  assert state.centres.shape == (config.gmm_k, d)
  assert state.bank.shape[1] == d
  assert int(state.best_bank_valid.sum()) == RUN.batch_size * h * w
  assert len(history) == 2 * 2 and int(state.step) == len(history)
  scores, maps = _predict(state, jnp.asarray(images[:4]))
  assert scores.shape == (4,) and maps.shape == (4, 32, 32)
  assert np.all(np.isfinite(maps)) and float(maps.min()) >= 0
  assert len({tuple(np.round(r, 4)) for r in np.asarray(state.centres)}) == config.gmm_k


def _numpy_weighted_em(x, w, means, cov, mix, reg, iters, tol=1e-3):
  """Independent float64 weighted diagonal-GMM EM (stops like gmm_em: mean log-lik change < tol)."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  means, cov, mix = (np.asarray(a, np.float64) for a in (means, cov, mix))
  prev = -np.inf
  for _ in range(iters):
    lp = (-0.5 * (((x[:, None] - means[None]) ** 2) / cov[None]).sum(-1)
          - 0.5 * np.log(2 * np.pi * cov).sum(-1)[None] + np.log(mix)[None])
    top = lp.max(1, keepdims=True)
    norm = top[:, 0] + np.log(np.exp(lp - top).sum(1))
    ll = (w * norm).sum() / w.sum()
    if abs(ll - prev) < tol:
      break
    prev = ll
    r = np.exp(lp - norm[:, None]) * w[:, None]
    nk = r.sum(0)
    means = r.T @ x / nk[:, None]
    cov = (r[:, :, None] * (x[:, None] - means[None]) ** 2).sum(0) / nk[:, None] + reg
    mix = nk / nk.sum()
  return means


def test_centres_are_the_weighted_gmm_of_the_coreset(fitted, initial):
  # prepare's centres = an independent (NumPy) weighted EM on the sensitivity coreset from the
  # same start (jaxad's first EM iteration from the same keys). Dropping the coreset weights moves
  # the means by far more than the tolerance (asserted, so the comparison can tell).
  config, images, state, _ = fitted
  x = smcc.extract_patches(config, initial, _batches(images, 4))
  k_cs, k_gmm = jax.random.split(rng.stream(1, rng.PREPARE))
  m = max(config.gmm_k, int(round(config.coreset_rate * x.shape[0])))
  cs = cluster.sensitivity_coreset(k_cs, x, m, config.gmm_k, verbose=False)
  pts, w = x[np.asarray(cs.indices)], np.asarray(cs.weights)
  assert np.ptp(w) > 0.1 * w.mean()  # the weights differ, so they can matter
  start = cluster.gmm_em(k_gmm, pts, config.gmm_k, weights=w, covariance="diag",
                         reg_covar=config.gmm_reg_covar, max_iter=1, verbose=False).params
  want = _numpy_weighted_em(pts, w, *start, config.gmm_reg_covar, config.gmm_max_iter - 1)
  unweighted = _numpy_weighted_em(pts, np.ones_like(w), *start, config.gmm_reg_covar,
                                  config.gmm_max_iter - 1)
  got = np.asarray(state.centres)
  scale = np.abs(want).max()
  np.testing.assert_allclose(got, want, atol=1e-5 * scale)  # float32 EM vs float64 (seen: 2e-7)
  assert np.abs(unweighted - want).max() > 5e-3 * scale  # seen: 1.3e-2


def test_patch_scores_match_brute_force_knn(fitted):
  config, images, state, _ = fitted
  best = state.replace(params=state.best_params)
  queries = _images(4, seed=9)  # not in the bank (a distance ~0 carries the expansion's rounding)
  feats = smcc._features(config, best, jnp.asarray(queries))
  got = np.asarray(jax.jit(smcc._knn_scores, static_argnums=0)(config, state, feats))
  bank = np.asarray(state.best_bank)[np.asarray(state.best_bank_valid)].astype(np.float64)
  q = np.asarray(feats, np.float64).reshape(-1, bank.shape[1])
  dist = np.sqrt(((q[:, None] - bank[None]) ** 2).sum(-1))
  want = np.sort(dist, axis=1)[:, :config.knn_k].mean(1).reshape(got.shape)
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
  scores, _ = _predict(state, jnp.asarray(queries))
  np.testing.assert_allclose(scores, want.reshape(4, -1).max(1), rtol=2e-3, atol=2e-3)


def test_predict_equals_the_separate_stages(fitted):
  # predict is one jitted function (features, a values-only kNN over all patches of the batch,
  # upsampling and smoothing as one matrix per axis); the stages as computed before, separately:
  # the indexed blocked kNN of jaxad.cluster, maps.upsample, then maps.gaussian_smooth.
  config, _, state, _ = fitted
  queries = jnp.asarray(_images(4, seed=9))
  scores, maps = _predict(state, queries)
  feats = smcc._features(config, state.replace(params=state.best_params), queries)
  bank = np.asarray(state.best_bank)[np.asarray(state.best_bank_valid)]
  res = cluster.knn(np.asarray(feats).reshape(-1, bank.shape[1]), bank, config.knn_k, block=64)
  patch = np.asarray(res.distances).mean(1).reshape(4, 8, 8)
  want = maps_lib.gaussian_smooth(maps_lib.upsample(patch, (32, 32)), config.sigma)
  tol = 1e-5 * float(patch.max())  # float32 rounding of |q|^2 - 2 q.b + |b|^2 in other blocks
  np.testing.assert_allclose(np.asarray(scores), patch.reshape(4, -1).max(1), rtol=0, atol=tol)
  np.testing.assert_allclose(np.asarray(maps), np.asarray(want), rtol=0, atol=tol)
  assert float(np.ptp(np.asarray(maps))) > 1e3 * tol


def test_best_pair_is_kept(fitted):
  config, images, state, history = fitted
  losses = [h["score"] for h in history]  # the selection score (the batch loss by default)
  np.testing.assert_allclose(float(state.best_loss), min(losses), rtol=1e-6)
  # The kept bank is the best step's batch re-extracted with the kept parameters.
  best = history[int(np.argmin(losses))]
  batches = list(data.batches(data.as_split(images), 4, seed=1, epoch=best["epoch"]))
  batch = batches[(best["step"] - 1) % len(batches)]
  want = smcc.extract_patches(config, state.replace(params=state.best_params), [batch])
  got = np.asarray(state.best_bank)[np.asarray(state.best_bank_valid)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  if not np.array_equal(np.asarray(state.params["conv1"]["kernel"]),
                        np.asarray(state.best_params["conv1"]["kernel"])):
    # Parameters moved after the best step: the latest patches are not the kept ones.
    assert not np.allclose(np.asarray(state.bank)[:want.shape[0]], want, atol=1e-5)


def test_self_update_lowers_lc(fitted):
  config, images, state, _ = fitted
  # Restart Adam from the fitted centres and repeat steps on one batch (the step fit compiled).
  # float32 (not weak-typed) best_loss: same signature as in fit, so the compiled step is reused.
  state = state.replace(opt_state=smcc._optimizer(config).init(state.params),
                        best_loss=jnp.asarray(jnp.inf, jnp.float32))
  params0 = state.params
  batch = {"image": images[:4], "mask": np.zeros((4, 32, 32), np.float32),
           "label": np.zeros(4, np.int32), "valid": np.ones(4, bool)}
  step = loop.make_train_step(smcc, make_mesh())
  n_compiled = step._cache_size()
  lcs = []
  for _ in range(6):
    state, m = _step(state, batch)
    lcs.append(float(m["l_c"]))
  assert step._cache_size() == n_compiled  # keeps this test fast
  # Adam's first step overshoots (L_o pulls too); afterwards L_c falls every step.
  assert lcs[-1] < 0.97 * lcs[0], lcs
  assert all(b < a for a, b in zip(lcs[1:], lcs[2:])), lcs
  # Only conv kernels are trained (config.trainable == "conv"): BN affine params unchanged.
  bn0, bn1 = params0["bn1"], state.params["bn1"]
  np.testing.assert_array_equal(bn0["scale"], bn1["scale"])
  assert not np.array_equal(params0["conv1"]["kernel"], state.params["conv1"]["kernel"])


def test_padded_batch_never_becomes_the_bank(fitted):
  config, images, state, _ = fitted
  # With best_loss = inf any loss would win, but a batch with padding rows must not.
  pad = {"image": np.concatenate([images[:2], np.zeros_like(images[:2])]),
         "mask": np.zeros((4, 32, 32), np.float32), "label": np.zeros(4, np.int32),
         "valid": np.array([True, True, False, False])}
  s0 = state.replace(best_loss=jnp.asarray(jnp.inf, jnp.float32))
  s1, m = _step(s0, pad)
  assert np.isfinite(float(m["loss"])) and np.isinf(float(s1.best_loss))
  np.testing.assert_array_equal(s1.best_bank, s0.best_bank)
  full = dict(pad, image=images[:4], valid=np.ones(4, bool))
  s2, m = _step(s1, full)
  assert float(s2.best_loss) == float(m["score"])
  assert int(s2.best_bank_valid.sum()) == RUN.batch_size * 64  # bank size fixed by the batch


def test_deterministic(fitted):
  config, images, state, history = fitted
  again = _fit(images)
  assert history == again.history
  np.testing.assert_array_equal(again.state.centres, state.centres)
  np.testing.assert_array_equal(again.state.best_bank, state.best_bank)
  for a, b in zip(jax.tree.leaves(again.state.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_no_self_update_keeps_backbone_and_first_batch(fitted, initial):
  config, images, state0, _ = fitted
  state = _fit(images, epochs=0).state
  for a, b in zip(jax.tree.leaves(state.best_params), jax.tree.leaves(initial.params)):
    np.testing.assert_array_equal(a, b)
  want = smcc.extract_patches(config, initial, _batches(images[:4], 4))
  np.testing.assert_allclose(np.asarray(state.best_bank)[:want.shape[0]], want, rtol=1e-6,
                             atol=1e-6)
  np.testing.assert_allclose(state.centres, state0.centres, rtol=1e-5, atol=1e-5)


def test_reinit_with_same_config_does_not_recompile(fitted, initial):
  # Equal configs are equal static arguments: JAX's own cache serves a re-initialised state.
  config, images, state, _ = fitted
  again = smcc.init(config, RUN, jax.random.key(3), {"image": images[:4]})
  assert jax.tree.structure(again) == jax.tree.structure(initial)
  batches = _batches(images[:4], 4)
  smcc.extract_patches(smcc.Config(**TINY), initial, batches)
  n = smcc._features._cache_size()
  smcc.extract_patches(dataclasses.replace(config), again, batches)
  assert smcc._features._cache_size() == n


def test_with_bank_and_memory_bytes(fitted):
  config, images, state, _ = fitted
  d = smcc.feature_dim(config)
  bank = np.random.default_rng(0).normal(size=(5000, d)).astype(np.float32)
  s2 = smcc.with_bank(config, state, bank)
  # 5000 rows > 4096: 3 equal blocks of <= 2048 rows, 1,672 each (5,016 slots, 16 padding rows)
  assert int(s2.best_bank_valid.sum()) == 5000 and s2.best_bank.shape[0] == 5016
  assert pf.bank_layout(5000) == (5016, 1672) == pf.bank_layout(5016)
  assert pf.bank_layout(12544) == (12544, 1792) and pf.bank_layout(4096) == (4096, 4096)
  assert smcc.memory_bytes(s2)["bank"] == 5000 * d * 4
  scores, _ = _predict(s2, jnp.asarray(images[:4]))
  assert np.all(np.isfinite(scores))
  with pytest.raises(ValueError, match="bank"):
    smcc.with_bank(config, state, bank[:, :3])


def test_validation():
  with pytest.raises(ValueError, match="layers"):
    smcc.Config(backbone="resnet18", layers=("stride8",))
  with pytest.raises(ValueError, match="backbone"):
    smcc.Config(backbone="vgg16")
  with pytest.raises(ValueError, match="pool"):
    smcc.Config(pool=2)
  with pytest.raises(ValueError, match="example_batch"):
    smcc.init(CONFIG, RUN, jax.random.key(0), {"image": np.zeros((2, 64, 64, 3), np.float32)})
  with pytest.raises(TypeError, match="config"):
    smcc.init(dict(TINY), RUN, jax.random.key(0), {"image": np.zeros((2, 32, 32, 3), np.float32)})


def test_sharded_equals_single_device():
  code = f"""
    import jax, numpy as np
    from jaxad.models import smcc
    from jaxad.train import loop
    from jaxad.train.mesh import make_mesh
    from jaxad.train.predict import predict_dataset
    assert jax.device_count() == 4
    rng = np.random.default_rng(0)
    low = rng.random((8, 8, 8, 3)).astype(np.float32)
    images = np.asarray(jax.image.resize(low, (8, 32, 32, 3), "bilinear")).clip(0, 1)
    # Unseen queries: a query in the bank has distance ~0, where sqrt amplifies rounding.
    queries = np.asarray(jax.image.resize(rng.random((4, 8, 8, 3)).astype(np.float32),
                                          (4, 32, 32, 3), "bilinear")).clip(0, 1)
    config = smcc.Config(**{TINY!r})
    out = {{}}
    for n in (1, 4):
      mesh = make_mesh(n)
      r = loop.fit("smcc", config, images, seed=1, epochs=1, batch_size=4, mesh=mesh,
                   show_progress=False)
      s, m = predict_dataset("smcc", config, r.state, queries, batch_size=4, mesh=mesh)
      out[n] = (s, m, np.asarray(r.state.best_bank), [h["loss"] for h in r.history])
    np.testing.assert_allclose(out[4][2], out[1][2], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[4][3], out[1][3], rtol=1e-4)
    np.testing.assert_allclose(out[4][0], out[1][0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[4][1], out[1][1], rtol=1e-4, atol=1e-4)
    print("OK", out[1][3])
  """
  assert "OK" in run_jax_subprocess(code, devices=4)


# ----------------------------------------------------------------------------- paper readings


@pytest.mark.parametrize("margin", [None, 0.3])
def test_blocked_center_losses_match_dense(margin):
  rng = np.random.default_rng(4)
  p = rng.normal(size=(300, 5)).astype(np.float32)
  c = rng.normal(size=(40, 5)).astype(np.float32)
  valid = np.arange(48) < 40  # 8 padding rows (zeros: nearest to many patches if not ignored)
  cp = np.pad(c, ((0, 8), (0, 0)))
  w = (rng.random(300) > 0.1).astype(np.float32)
  want = smcc.center_losses(jnp.asarray(p), jnp.asarray(c), jnp.asarray(w), lo_margin=margin)
  got = smcc.center_losses(jnp.asarray(p), jnp.asarray(cp), jnp.asarray(w), lo_margin=margin,
                           centres_valid=jnp.asarray(valid), block=16)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  dense_padded = smcc.center_losses(jnp.asarray(p), jnp.asarray(cp), jnp.asarray(w),
                                    lo_margin=margin, centres_valid=jnp.asarray(valid))
  np.testing.assert_allclose(dense_padded, want, rtol=1e-5, atol=1e-6)
  # Gradients reach the patches through the recomputed distances.
  g = jax.grad(lambda x: sum(smcc.center_losses(x, jnp.asarray(cp), jnp.asarray(w),
                                                centres_valid=jnp.asarray(valid), block=16)))(
      jnp.asarray(p))
  g_ref = jax.grad(lambda x: sum(smcc.center_losses(x, jnp.asarray(c), jnp.asarray(w))))(
      jnp.asarray(p))
  np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-6)


# One fit with every non-default reading (one compilation): centre set, all parameters, summed
# losses, held-out selection; each property is checked against an independent computation.
READINGS = smcc.Config(**TINY, centres="center_set", trainable="all", loss_reduction="sum",
                       selection="heldout")


@pytest.fixture(scope="module")
def readings(fitted, initial):
  _, images, _, _ = fitted
  result = loop.fit("smcc", READINGS, images, seed=1, epochs=2, batch_size=4, show_progress=False)
  x = smcc.extract_patches(READINGS, initial, _batches(images, 4))
  return images, result.state, result.history, x


def _np_losses(patches, centres):
  d = np.sort(np.linalg.norm(patches[:, None].astype(np.float64) - centres[None], axis=-1), axis=1)
  return d[:, 0].sum(), (d[:, 0] - d[:, 1]).sum()


def test_center_set_reading_uses_the_coreset_points(readings, initial):
  images, state, history, x = readings
  k_cs, _ = jax.random.split(rng.stream(1, rng.PREPARE))
  m = max(READINGS.gmm_k, int(round(READINGS.coreset_rate * x.shape[0])))
  cs = cluster.sensitivity_coreset(k_cs, x, m, READINGS.gmm_k, verbose=False)
  valid = np.asarray(state.centres_valid)
  assert valid.sum() == m and state.centres.shape[0] >= m
  np.testing.assert_array_equal(np.asarray(state.centres)[valid], x[np.asarray(cs.indices)])
  # Step 1 ran the pretrained backbone on the epoch-0 first batch: its summed losses over all
  # centre-set points, from NumPy.
  batch = next(iter(data.batches(data.as_split(images), 4, seed=1, epoch=0)))
  p = smcc.extract_patches(READINGS, state.replace(params=initial.params), [batch])
  lc, lo = _np_losses(p, x[np.asarray(cs.indices)])
  np.testing.assert_allclose([history[0]["l_c"], history[0]["l_o"]], [lc, lo], rtol=1e-4)
  np.testing.assert_allclose(history[0]["loss"], lc + lo, rtol=1e-4)


def test_heldout_selection_scores_a_fixed_batch(readings):
  images, state, history, _ = readings
  np.testing.assert_array_equal(state.holdout, images[4:8])  # last full batch in file order
  scores = [h["score"] for h in history]
  assert float(state.best_loss) == min(scores)
  assert scores != [h["loss"] for h in history]  # not the batch loss
  # The kept score is the kept backbone's summed loss on the held-out batch.
  p = smcc.extract_patches(READINGS, state.replace(params=state.best_params),
                           _batches(images[4:8], 4))
  c = np.asarray(state.centres)[np.asarray(state.centres_valid)]
  lc, lo = _np_losses(p, c)
  np.testing.assert_allclose(float(state.best_loss), lc + lo, rtol=1e-4)


def test_trainable_all_updates_bn_affine_not_statistics(readings, initial):
  _, state, _, _ = readings
  assert not np.array_equal(initial.params["bn1"]["scale"], state.params["bn1"]["scale"])
  for a, b in zip(jax.tree.leaves(initial.batch_stats), jax.tree.leaves(state.batch_stats)):
    np.testing.assert_array_equal(a, b)


def test_reading_validation():
  for field in ("centres", "loss_reduction", "selection", "trainable"):
    with pytest.raises(ValueError, match=field):
      smcc.Config(**{field: "paper"})
