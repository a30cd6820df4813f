"""Tests for jaxad.cluster.gmm against scikit-learn's GaussianMixture on the same data."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from jaxad.cluster import GMMParams, gmm_em, log_prob


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  x, _ = make_blobs(n_samples=2000, n_features=8, centers=5, cluster_std=[1.0, 2.0, 0.5, 1.5, 3.0],
                    random_state=1)
  return (x @ rng.normal(size=(8, 8)) * 0.5).astype(np.float32)  # correlated features


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_log_likelihood_within_one_percent_of_sklearn(data, covariance):
  for seed in range(3):
    ours = gmm_em(jax.random.key(seed), data, 5, covariance=covariance, verbose=False)
    ref = GaussianMixture(5, covariance_type=covariance, random_state=seed).fit(data)
    ref_ll = ref.score(data)
    # Tolerance: 1% relative (the target).
    assert abs(float(ours.log_likelihood) - ref_ll) <= 0.01 * abs(ref_ll), (seed, ours, ref_ll)
    # The reported log-likelihood is the mean of log_prob under the returned parameters.
    np.testing.assert_allclose(np.asarray(log_prob(ours.params, data)).mean(),
                               float(ours.log_likelihood), rtol=1e-5)
    np.testing.assert_allclose(float(np.sum(ours.params.weights)), 1.0, rtol=1e-5)
    assert bool(ours.converged)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_log_prob_equals_sklearn_score_samples(data, covariance):
  ref = GaussianMixture(4, covariance_type=covariance, random_state=0).fit(data)
  params = GMMParams(ref.means_, ref.covariances_, ref.weights_)
  # Tolerance: float32 vs float64 evaluation, 1e-3 absolute on values of order 10-30.
  np.testing.assert_allclose(np.asarray(log_prob(params, data, block=300)),
                             ref.score_samples(data), atol=1e-3, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_weighted_fit_matches_repeated_points(data):
  # Integer weights w: the weighted EM must equal plain EM on the points repeated w times, step by
  # step from one fixed start (scikit-learn with means/weights/precisions_init, tol 0 = exactly t
  # iterations). A deliberately poor start makes every step move, so an E- or M-step that ignored
  # the weights differs by far more than the float32 tolerance (checked below).
  x, _ = make_blobs(n_samples=2000, n_features=8, centers=5, cluster_std=1.0, random_state=2)
  x = x.astype(np.float32)
  w = np.random.default_rng(1).integers(1, 4, size=len(x))
  w[np.argsort(x[:, 0])[-600:]] = 8  # heavy weights on one side: weights move the means
  rep = np.repeat(x, w, axis=0)
  start = GMMParams(x[np.random.default_rng(2).choice(len(x), 5, replace=False)],
                    np.ones((5, 8), np.float32) * 4.0, np.full(5, 0.2, np.float32))
  for t in (1, 2, 5):
    ours = gmm_em(jax.random.key(0), x, 5, weights=w.astype(np.float32), covariance="diag",
                  init=start, max_iter=t, tol=0.0, verbose=False)
    assert int(ours.n_iter) == t
    ref = GaussianMixture(5, covariance_type="diag", means_init=start.means,
                          weights_init=start.weights, precisions_init=1.0 / start.covariances,
                          max_iter=t, tol=0.0, reg_covar=1e-6).fit(rep)
    # Tolerance: float32 (ours) vs float64 (scikit-learn) over t steps, means of order 10.
    np.testing.assert_allclose(ours.params.means, ref.means_, rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(ours.params.covariances, ref.covariances_, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(ours.params.weights, ref.weights_, rtol=1e-4, atol=1e-5)
  # The test can tell: the same steps on the unrepeated points land elsewhere.
  plain = GaussianMixture(5, covariance_type="diag", means_init=start.means,
                          weights_init=start.weights, precisions_init=1.0 / start.covariances,
                          max_iter=5, tol=0.0, reg_covar=1e-6).fit(x)
  assert np.abs(plain.means_ - ref.means_).max() > 0.1
  assert np.abs(plain.weights_ - ref.weights_).max() > 0.01
  # Weighted mean log-likelihood of our fit == plain mean over the repeated points.
  np.testing.assert_allclose(np.asarray(log_prob(ours.params, rep)).mean(),
                             float(ours.log_likelihood), rtol=1e-5)


def test_same_key_identical(data):
  a = gmm_em(jax.random.key(7), data, 5, covariance="full", verbose=False)
  b = gmm_em(jax.random.key(7), data, 5, covariance="full", verbose=False)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_errors(data):
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="covariance must be"):
    gmm_em(key, data, 3, covariance="spherical")
  with pytest.raises(ValueError, match="larger than the number of points"):
    gmm_em(key, data[:3], 4)
  bad = data.copy()
  bad[0, 0] = np.inf
  with pytest.raises(ValueError, match="finite"):
    gmm_em(key, bad, 3)
  with pytest.raises(ValueError, match="reg_covar"):
    gmm_em(key, data, 3, reg_covar=-1.0)
  params = GMMParams(np.zeros((2, 8)), np.ones((2, 8)), np.full(2, 0.5))
  with pytest.raises(ValueError, match="same|match"):
    log_prob(params, data[:, :4])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_em_from_same_init_follows_sklearn(data, covariance):
  # Both libraries start from the same parameters (scikit-learn: means_init/weights_init/
  # precisions_init) and run 5 EM iterations (tol=0): same EM map, so the iterates agree up to
  # float32 vs float64 rounding; different k-means inits are then the only source of differences.
  k, d = 5, data.shape[1]
  rng = np.random.default_rng(3)
  means = data[rng.choice(len(data), k, replace=False)].astype(np.float64)
  var = data.var(0).astype(np.float64)
  cov = np.tile(np.diag(var), (k, 1, 1)) if covariance == "full" else np.tile(var, (k, 1))
  weights = np.full(k, 1.0 / k)
  prec = np.linalg.inv(cov) if covariance == "full" else 1.0 / cov
  ref = GaussianMixture(k, covariance_type=covariance, max_iter=5, tol=0.0, means_init=means,
                        weights_init=weights, precisions_init=prec).fit(data)
  assert ref.n_iter_ == 5
  ours = gmm_em(jax.random.key(0), data, k, covariance=covariance, max_iter=5, tol=0.0,
                init=GMMParams(means, cov, weights), verbose=False)
  assert int(ours.n_iter) == 5
  # Tolerance: float32 EM vs float64 EM over 5 iterations (values of order 10-30).
  np.testing.assert_allclose(float(ours.log_likelihood), ref.score(data), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(ours.params.weights), ref.weights_, atol=1e-4)
  np.testing.assert_allclose(np.asarray(ours.params.means), ref.means_, atol=1e-3 * np.abs(data).max())
  np.testing.assert_allclose(np.asarray(ours.params.covariances), ref.covariances_, rtol=1e-3,
                             atol=1e-3 * var.max())


def test_init_errors(data):
  key = jax.random.key(0)
  good = GMMParams(data[:3], np.ones((3, 8)), np.full(3, 1 / 3))
  with pytest.raises(ValueError, match="init.means"):
    gmm_em(key, data, 3, init=GMMParams(data[:2], good.covariances, good.weights))
  with pytest.raises(ValueError, match="init.covariances"):
    gmm_em(key, data, 3, covariance="full", init=good)
  with pytest.raises(ValueError, match="init.weights"):
    gmm_em(key, data, 3, init=GMMParams(good.means, good.covariances, np.zeros(3)))


@pytest.mark.parametrize("width", [8, 16])
def test_block_triangular_helpers_match_dense(width):
  # D = 37 is not a multiple of the column blocks: width 8 -> 5 blocks (last 5 wide), width 16 ->
  # [0, 24), [24, 37). The blocked products skip only structural zeros / mirrored duplicates.
  from jaxad.cluster.gmm import _col_blocks, _cov_full, _maha_full
  k, d, nb, b = 3, 37, 2, 16
  cols = _col_blocks(d, width)
  assert len(cols) >= 2 and cols[-1][1] == d and (cols[-1][1] - cols[-1][0]) < (cols[0][1] - cols[0][0])
  rng = np.random.default_rng(0)
  x = rng.normal(size=(nb, b, d)).astype(np.float32)
  means = rng.normal(size=(k, d)).astype(np.float32)
  u = np.triu(rng.normal(size=(k, d, d))).astype(np.float32)
  rw = rng.uniform(size=(nb, b, k)).astype(np.float32)
  diff = x.astype(np.float64)[:, :, None, :] - means.astype(np.float64)  # [nb, B, k, D]
  maha_ref = np.sum(np.einsum("nbkd,kde->nbke", diff, u.astype(np.float64)) ** 2, axis=-1)
  cov_ref = np.einsum("nbk,nbkd,nbke->kde", rw.astype(np.float64), diff, diff)
  maha = np.asarray(_maha_full(x, means, u, width))
  cov = np.asarray(_cov_full(x, rw, means, width))
  # Tolerance: float32 products of length <= 37 (maha) / 32 (cov) vs float64, relative to the max.
  np.testing.assert_allclose(maha, maha_ref, rtol=1e-5, atol=1e-5 * np.abs(maha_ref).max())
  np.testing.assert_allclose(cov, cov_ref, rtol=1e-5, atol=1e-5 * np.abs(cov_ref).max())
  np.testing.assert_array_equal(cov, np.swapaxes(cov, 1, 2))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_full_em_with_column_blocks_follows_sklearn():
  # D = 600 > _TRI_WIDTH: the default column blocks [0, 304), [304, 600) are used in both passes.
  from jaxad.cluster.gmm import _col_blocks
  k, d, n = 2, 600, 1200
  assert len(_col_blocks(d)) == 2
  rng = np.random.default_rng(4)
  centres = rng.normal(scale=2.0, size=(k, d))
  mix = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features
  x = (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)) @ mix).astype(np.float32)
  means = x[rng.choice(n, k, replace=False)].astype(np.float64)
  cov = np.tile(np.diag(x.var(0).astype(np.float64)), (k, 1, 1))
  weights = np.full(k, 1.0 / k)
  ref = GaussianMixture(k, covariance_type="full", max_iter=2, tol=0.0, reg_covar=0.1,
                        means_init=means, weights_init=weights,
                        precisions_init=np.linalg.inv(cov)).fit(x)
  ours = gmm_em(jax.random.key(0), x, k, covariance="full", max_iter=2, tol=0.0, reg_covar=0.1,
                init=GMMParams(means, cov, weights), verbose=False)
  # Tolerance: float32 EM vs scikit-learn (float32 data, float64 init) over 2 iterations, log-lik
  # of order 1e3.
  np.testing.assert_allclose(float(ours.log_likelihood), ref.score(x), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(ours.params.weights), ref.weights_, atol=1e-4)
  np.testing.assert_allclose(np.asarray(ours.params.means), ref.means_, atol=1e-3 * np.abs(x).max())
  np.testing.assert_allclose(np.asarray(ours.params.covariances), ref.covariances_, rtol=1e-3,
                             atol=1e-3 * np.abs(ref.covariances_).max())
