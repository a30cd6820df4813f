"""Tests for jaxad.cluster.coreset: SMCC sensitivity sampling and PatchCore greedy k-center."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import make_blobs

from jaxad.cluster import greedy_coreset, kmeans, kmeans_plusplus, sensitivity_coreset
from jaxad.cluster.coreset import _greedy_lazy, default_alpha, greedy_coreset_core, project


@pytest.fixture(scope="module")
def data():
  x, _ = make_blobs(n_samples=2000, n_features=16, centers=10, cluster_std=2.5, random_state=0)
  return x.astype(np.float32)


def _kmeans_cost(x, centers, w=None):
  x = np.asarray(x, np.float64)
  d = ((x[:, None, :] - np.asarray(centers, np.float64)[None]) ** 2).sum(-1).min(1)
  return float(d.sum() if w is None else (np.asarray(w, np.float64) * d).sum())


def test_sensitivity_weights_sum_to_n_and_cost_is_approximated(data):
  n = len(data)
  m = n // 10
  rng = np.random.default_rng(0)
  km = kmeans(jax.random.key(0), data, 10, verbose=False)
  center_sets = [np.asarray(km.centers), data[rng.choice(n, 10, replace=False)],
                 data[rng.choice(n, 3, replace=False)]]
  for seed in range(4):
    cs = sensitivity_coreset(jax.random.key(seed), data, m, 10, verbose=False)
    idx, w = np.asarray(cs.indices), np.asarray(cs.weights)
    assert idx.shape == (m,) and w.shape == (m,) and idx.min() >= 0 and idx.max() < n
    # Tolerance: unbiased estimator of N; 10% covers its spread at m = 200.
    assert abs(w.sum() / n - 1) < 0.10, w.sum()
    for centers in center_sets:
      full = _kmeans_cost(data, centers)
      core = _kmeans_cost(data[idx], centers, w)
      assert abs(core / full - 1) < 0.10, (seed, core, full)


def test_sensitivities_match_numpy_algorithm_2(data):
  """Recovers q(x) = 1 / (m w) of the sampled points and compares with a NumPy Algorithm 2."""
  key = jax.random.key(3)
  m, k = 200, 10
  cs = sensitivity_coreset(key, data, m, k, block=500, verbose=False)  # 2000 % 500 == 0: no padding
  kb, _ = jax.random.split(key)
  centers, _ = kmeans_plusplus(kb, data, k)
  x = data.astype(np.float64)
  d = ((x[:, None] - np.asarray(centers, np.float64)[None]) ** 2).sum(-1)
  lab, dist = d.argmin(1), d.min(1)
  alpha = default_alpha(k)
  size = np.bincount(lab, minlength=k)
  cost = np.bincount(lab, weights=dist, minlength=k)
  s = alpha * dist + 2 * alpha * cost[lab] / size[lab] + 2 * dist.sum() / size[lab]
  q = s / s.sum()
  idx = np.asarray(cs.indices)
  np.testing.assert_allclose(1.0 / (m * np.asarray(cs.weights, np.float64)), q[idx], rtol=1e-4)


def _greedy_reference(p, start, m):
  """Plain NumPy k-center greedy loop (float64, exact distances)."""
  p = np.asarray(p, np.float64)
  sel = [start]
  min_d = np.full(len(p), np.inf)
  last = start
  for _ in range(1, m):
    min_d = np.minimum(min_d, ((p - p[last]) ** 2).sum(1))
    last = int(np.argmax(min_d))
    sel.append(last)
  return np.array(sel)


@pytest.mark.parametrize("projection_dim,prune", [(None, False), (8, True)])
def test_greedy_equals_numpy_loop(data, projection_dim, prune):
  key = jax.random.key(1)
  m = 200
  cs = greedy_coreset(key, data, m, projection_dim=projection_dim, prune=prune, verbose=False)
  kp, ks = jax.random.split(key)
  start = int(jax.random.randint(ks, (), 0, len(data), dtype=np.int32))
  p = np.asarray(project(kp, data, projection_dim))
  ref = _greedy_reference(p, start, m)
  np.testing.assert_array_equal(np.asarray(cs.indices), ref)
  assert len(np.unique(np.asarray(cs.indices))) == m
  np.testing.assert_array_equal(np.asarray(cs.weights), np.ones(m))


def _integer_blobs(n_half=1650, d=16, centers=40, seed=2):
  """Clustered points with small integer coordinates and mean exactly 0 (rows ``y`` and ``-y``).

  Every float32 quantity of the greedy loop (centring, ``||p||^2``, dot products, distances) is an
  exact integer here, so all code paths compute identical distances and every tie is exact: the
  selection must match the float64 loop index for index, ties going to the smallest index.
  """
  rng = np.random.default_rng(seed)
  c = rng.integers(-30, 31, (centers, d))
  y = c[rng.integers(0, centers, n_half)] + rng.integers(-2, 3, (n_half, d))
  k = n_half // 11
  y[n_half - k:] = y[:k]                                    # exact duplicates
  return np.concatenate([y, -y]).astype(np.float32)


def test_pruned_greedy_selects_same_indices_as_unpruned():
  """Lazy leaf refreshes with triangle-inequality pruning change the work, not the selection."""
  x = _integer_blobs()
  n, m = len(x), 400
  key = jax.random.key(7)
  plain = greedy_coreset(key, x, m, projection_dim=None, prune=False, verbose=False)
  pruned = greedy_coreset(key, x, m, projection_dim=None, prune=True, verbose=False)
  kp, ks = jax.random.split(key)
  start = int(jax.random.randint(ks, (), 0, n, dtype=np.int32))
  ref = _greedy_reference(x, start, m)
  np.testing.assert_array_equal(np.asarray(plain.indices), ref)
  np.testing.assert_array_equal(np.asarray(pruned.indices), ref)
  # Smaller leaves (more pruning on this small set): same selection. Step 1 refreshes every leaf
  # against the start point (N distances); afterwards far fewer than the plain loop's N per step.
  small_leaves, evals = greedy_coreset_core(key, x, m=m, projection_dim=None, prune=True,
                                            leaf_size=32, return_stats=True)
  np.testing.assert_array_equal(np.asarray(small_leaves.indices), ref)
  evals = np.asarray(evals)
  assert evals[0] == 0 and evals[1] == n
  assert np.median(evals[2:]) < 0.2 * n, np.median(evals[2:]) / n
  assert evals[2:].sum() < 0.5 * n * (m - 2), evals[2:].sum() / (n * (m - 2))
  # Tiny leaves, scan chunks and matrix-product widths (many chunks per refresh): same selection.
  tiny = jax.jit(lambda p, s: _greedy_lazy(jax.random.fold_in(kp, 1), p, s, m, 16,
                                           scan_chunk=16, gemm_width=4))
  sel, evals_tiny = tiny(jnp.asarray(x), jnp.int32(start))
  np.testing.assert_array_equal(np.asarray(sel), ref)
  assert np.asarray(evals_tiny)[1] == n


@pytest.mark.parametrize("n,m", [(50, 50), (130, 2), (200, 199)])
def test_pruned_greedy_edge_sizes(n, m):
  """m = N, m = 2 and a partial last leaf: pruned == plain == float64, ties at 0 included."""
  x = _integer_blobs(n_half=n // 2, centers=5)
  for seed in (0, 1):
    key = jax.random.key(seed)
    a = greedy_coreset(key, x, m, projection_dim=None, prune=True, verbose=False)
    b = greedy_coreset(key, x, m, projection_dim=None, prune=False, verbose=False)
    start = int(jax.random.randint(jax.random.split(key)[1], (), 0, n, dtype=np.int32))
    np.testing.assert_array_equal(np.asarray(b.indices), _greedy_reference(x, start, m))
    np.testing.assert_array_equal(np.asarray(a.indices), np.asarray(b.indices))


def test_greedy_default_prune_follows_backend(data, monkeypatch):
  """prune=None picks the lazy path on the CPU backend and the plain pass on GPU/TPU."""
  from jaxad.cluster import coreset as coreset_module
  seen = []
  real_core = coreset_module.greedy_coreset_core

  def spy(*args, **kwargs):
    seen.append(kwargs["prune"])
    return real_core(*args, **kwargs)

  monkeypatch.setattr(coreset_module, "greedy_coreset_core", spy)
  greedy_coreset(jax.random.key(3), data, 20, projection_dim=8, verbose=False)
  assert seen == [jax.default_backend() == "cpu"]
  for backend, expected in (("cpu", True), ("gpu", False), ("tpu", False)):
    monkeypatch.setattr(coreset_module.jax, "default_backend", lambda b=backend: b)
    greedy_coreset(jax.random.key(3), data, 20, projection_dim=8, verbose=False)
    assert seen[-1] is expected, (backend, seen)
  greedy_coreset(jax.random.key(3), data, 20, projection_dim=8, prune=True, verbose=False)
  assert seen[-1] is True                                    # explicit choice wins


def test_projection_preserves_distances_roughly(data):
  # Johnson-Lindenstrauss sanity check of the projection itself; None: centring only.
  p = np.asarray(project(jax.random.key(0), data, 12), np.float64)
  x = data.astype(np.float64)
  i, j = np.arange(0, 1000), np.arange(1000, 2000)
  ratio = ((p[i] - p[j]) ** 2).sum(1) / ((x[i] - x[j]) ** 2).sum(1)
  assert 0.8 < ratio.mean() < 1.2, ratio.mean()
  np.testing.assert_allclose(np.asarray(project(jax.random.key(0), data, None)),
                             x - x.mean(0), atol=1e-4)


def test_same_key_identical(data):
  for fn in (lambda key: sensitivity_coreset(key, data, 200, 10, verbose=False),
             lambda key: greedy_coreset(key, data, 200, projection_dim=8, verbose=False)):
    a, b, c = fn(jax.random.key(4)), fn(jax.random.key(4)), fn(jax.random.key(5))
    np.testing.assert_array_equal(np.asarray(a.indices), np.asarray(b.indices))
    np.testing.assert_array_equal(np.asarray(a.weights), np.asarray(b.weights))
    assert not np.array_equal(np.asarray(a.indices), np.asarray(c.indices))


def test_errors(data):
  key = jax.random.key(0)
  for m in (0, -3):
    with pytest.raises(ValueError, match="m must be >= 1"):
      sensitivity_coreset(key, data, m, 5)
    with pytest.raises(ValueError, match="m must be >= 1"):
      greedy_coreset(key, data, m)
  with pytest.raises(ValueError, match="larger than the number of points"):
    greedy_coreset(key, data[:10], 11)
  with pytest.raises(ValueError, match="larger than the number of points"):
    sensitivity_coreset(key, data[:10], 5, 11)
  with pytest.raises(TypeError, match="m must be an int"):
    greedy_coreset(key, data, 2.5)
  with pytest.raises(ValueError, match="projection_dim"):
    greedy_coreset(key, data, 5, projection_dim=0)
  bad = data.copy()
  bad[1, 1] = np.nan
  with pytest.raises(ValueError, match="finite"):
    greedy_coreset(key, bad, 5)
  with pytest.raises(ValueError, match="finite"):
    sensitivity_coreset(key, bad, 5, 2)


def test_sensitivity_cost_estimate_is_unbiased(data):
  """E[weighted coreset k-means cost] = full cost for any fixed centres (importance sampling with
  weights 1 / (m q)); the mean over many small draws must land within 4 standard errors.

  A sampler whose weights do not match its sampling distribution (uniform weights N / m, or an
  index shifted from the one its weight came from) is biased by many standard errors."""
  n, m, draws = len(data), 40, 400
  rng = np.random.default_rng(5)
  km = kmeans(jax.random.key(0), data, 10, verbose=False)
  # k-means centres: the cost per point follows the sensitivities, so mismatched weights show.
  center_sets = [np.asarray(km.centers), data[rng.choice(n, 3, replace=False)],
                 data[rng.choice(n, 10, replace=False)]]
  full = np.array([_kmeans_cost(data, c) for c in center_sets])
  x = np.asarray(data, np.float64)
  d = [((x[:, None] - np.asarray(c, np.float64)[None]) ** 2).sum(-1).min(1) for c in center_sets]
  est = np.zeros((draws, len(center_sets)))
  for i in range(draws):
    cs = sensitivity_coreset(jax.random.key(1000 + i), data, m, 10, block=500, verbose=False)
    idx, w = np.asarray(cs.indices), np.asarray(cs.weights, np.float64)
    est[i] = [(w * dj[idx]).sum() for dj in d]
  mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(draws)
  assert np.all(np.abs(mean - full) < 4 * se), (mean / full, se / full)
  assert np.all(np.abs(mean / full - 1) < 0.05), mean / full
  assert np.all(se / full < 0.02), se / full  # the draws are many enough to resolve a bias
