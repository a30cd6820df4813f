"""Tests for jaxad.cluster.knn against brute-force NumPy, block invariance and sharding."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import run_jax_subprocess
from jaxad.cluster import knn
from jaxad.cluster.knn import knn_core, nearest_sq_dists


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  bank = (rng.normal(size=(2003, 16)) + 3.0).astype(np.float32)  # offset: norms >> distances
  queries = (rng.normal(size=(301, 16)) + 3.0).astype(np.float32)
  return queries, bank


def _brute(queries, bank):
  d = ((queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1)
  order = np.argsort(d, axis=1, kind="stable")
  return np.take_along_axis(d, order, 1), order


@pytest.mark.parametrize("k,squared", [(1, False), (5, True)])
def test_matches_bruteforce_numpy(data, k, squared):
  queries, bank = data
  res = knn(queries, bank, k, block=256, query_block=64, squared=squared)  # padding on both
  ref_d, ref_i = _brute(queries, bank)
  ref_d = ref_d[:, :k] if squared else np.sqrt(ref_d[:, :k])
  # Tolerance: float32 expansion error ~1e-7 * (||q||^2 + ||b||^2) ~ 1e-5 on these scales.
  np.testing.assert_allclose(np.asarray(res.distances), ref_d, atol=2e-4 if squared else 1e-4)
  # Indices must agree wherever the reference is not a near-tie (gap > 1e-4 in squared distance).
  full_d, _ = _brute(queries, bank)
  gaps = np.diff(full_d[:, :k + 1], axis=1)  # gap of rank j to rank j+1
  clear = np.ones_like(gaps, dtype=bool)
  clear[:, 1:] &= gaps[:, :-1] > 1e-4
  clear &= gaps > 1e-4
  assert clear.mean() > 0.95
  got = np.asarray(res.indices)
  np.testing.assert_array_equal(got[clear], ref_i[:, :k][clear])
  assert np.all(np.diff(np.asarray(res.distances), axis=1) >= 0)


def test_block_sizes_do_not_change_result(data):
  queries, bank = data
  a = knn(queries, bank, 4)
  b = knn(queries, bank, 4, block=100, query_block=32)
  np.testing.assert_array_equal(np.asarray(a.indices), np.asarray(b.indices))
  # Blocks change the matrix-product tiling, hence the float32 rounding of |q|^2 - 2qb + |b|^2
  # (|q|^2 ~ 160 here): distances ~3 agree to a few float32 ulps of |q|^2, not to 1e-5.
  np.testing.assert_allclose(np.asarray(a.distances), np.asarray(b.distances), atol=5e-5)


@pytest.mark.parametrize("k", [1, 3])
def test_nearest_sq_dists_equals_knn_core_values(data, k):
  # The values-only search (predict's) against brute force and against knn_core's distances
  # (same expression and blocks: equal values); invalid rows (here the closest ones) are ignored.
  queries, bank = data
  n_pad, block = 2048, 256
  bank_p = np.zeros((n_pad, bank.shape[1]), np.float32)
  bank_p[:bank.shape[0]] = bank
  bank_p[-40:] = queries[:40]  # exact matches, but marked invalid
  valid = np.arange(n_pad) < bank.shape[0]
  fn = jax.jit(nearest_sq_dists, static_argnames=("k", "block"))
  got = np.asarray(fn(queries, bank_p, valid, k=k, block=block))
  ref_d, _ = _brute(queries, bank)
  np.testing.assert_allclose(got, ref_d[:, :k], atol=2e-4)  # float32 expansion (see above)
  q_pad = np.zeros((304, queries.shape[1]), np.float32)
  q_pad[:301] = queries
  core, _ = knn_core(q_pad, bank_p, valid, k=k, block=block, query_block=304)
  np.testing.assert_allclose(got, np.asarray(core)[:301], rtol=1e-6, atol=1e-5)
  assert got.shape == (301, k) and np.all(np.diff(got, axis=1) >= 0) and got.min() > 0.5
  with pytest.raises(ValueError, match="multiple of block"):
    nearest_sq_dists(queries, bank_p[:2000], valid[:2000], k=k, block=block)


@pytest.mark.parametrize("k,block", [(3, 256), (4, 64), (2, 24)])
def test_nearest_sq_dists_exact_with_ties(k, block):
  # Small-integer points: every distance is exact in float32 and most of them tie, so grouped
  # selection (blocks of 256 and 64 go through column groups, 24 through a plain top_k) must return
  # exactly the k smallest values, repeated ones included.
  rng = np.random.default_rng(5)
  bank = rng.integers(0, 3, size=(768, 4)).astype(np.float32)
  queries = rng.integers(0, 3, size=(100, 4)).astype(np.float32)
  got = np.asarray(nearest_sq_dists(queries, bank, np.ones(768, bool), k=k, block=block))
  ref = np.sort(((queries[:, None] - bank[None]) ** 2).sum(-1), axis=1)[:, :k]
  np.testing.assert_array_equal(got, ref)
  assert (ref[:, 0] == ref[:, -1]).mean() > 0.5  # ties are the rule here


def test_k_equals_n_returns_all_points(data):
  queries, bank = data
  res = knn(queries[:7], bank[:9], 9, block=4)
  assert sorted(np.asarray(res.indices)[0].tolist()) == list(range(9))


def test_sharded_equals_single_device():
  code = """
  import numpy as np, jax
  from jax.sharding import Mesh
  from jaxad.cluster import knn
  assert len(jax.devices()) == 4
  rng = np.random.default_rng(1)
  bank = rng.normal(size=(1999, 16)).astype(np.float32)   # not divisible by 4 * block
  queries = rng.normal(size=(130, 16)).astype(np.float32)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  for k in (1, 6):
    a = knn(queries, bank, k, block=128, query_block=64)
    b = knn(queries, bank, k, block=128, query_block=64, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(a.indices), np.asarray(b.indices))
    np.testing.assert_array_equal(np.asarray(a.distances), np.asarray(b.distances))
    assert np.asarray(b.indices).max() < 1999
  print("OK")
  """
  assert run_jax_subprocess(code, devices=4).strip().endswith("OK")


def test_errors(data):
  queries, bank = data
  with pytest.raises(ValueError, match="same feature dimension"):
    knn(queries[:, :8], bank, 1)
  with pytest.raises(ValueError, match="larger than the number of bank points"):
    knn(queries, bank[:3], 4)
  with pytest.raises(ValueError, match="k must be >= 1"):
    knn(queries, bank, 0)
  bad = queries.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="queries must be finite"):
    knn(bad, bank, 1)
  with pytest.raises(ValueError, match=r"bank must have shape \[N, D\]"):
    knn(queries, bank[None], 1)


def test_import_pulls_no_heavy_libraries():
  code = ("import sys, jaxad.cluster; bad = [m for m in ('torch', 'tensorflow', 'sklearn', 'faiss') "
          "if m in sys.modules]; print(bad)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=str(__import__("conftest").REPO_ROOT))
  assert out.stdout.strip() == "[]", out.stdout
