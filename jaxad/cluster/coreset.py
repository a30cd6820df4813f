"""Coresets: SMCC's sensitivity sampling (Algorithm 2) and PatchCore's greedy k-center coreset.

References:
  SMCC: "Self-updated memory bank with GMM centre clustering" (IEEE TIM 2023), Algorithm 2
    (centre set construction) and Eq. (3) (weighted log-likelihood on the centre set).
  Lucic, Faulkner, Krause & Feldman, "Training Gaussian mixture models at scale via coresets",
    JMLR 18, 2017 (the SMCC paper's [30]); Bachem, Lucic & Krause, "Practical coreset constructions
    for machine learning", arXiv:1703.06476, 2017 (alpha = 16 (log k + 2) for k-means++).
  Gonzalez, "Clustering to minimize the maximum intercluster distance", TCS 1985 (k-center greedy);
  Roth et al., "Towards total recall in industrial anomaly detection" (PatchCore), CVPR 2022, Alg. 1.
"""

from __future__ import annotations

import functools
import math
import operator
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxad import progress as _progress
from jaxad.cluster import _common as C
from jaxad.cluster.kmeans import _validate_k, assign_blocked, kmeans_core, kmeans_plusplus_core

__all__ = ["Coreset", "sensitivity_coreset", "sensitivity_coreset_core", "greedy_coreset",
           "greedy_coreset_core", "default_alpha"]

_HI = jax.lax.Precision.HIGHEST


class Coreset(NamedTuple):
  """A weighted subset of the rows of ``x``.

  Attributes:
    indices: ``[m]`` int32 row indices into ``x`` (sensitivity sampling draws with replacement,
      so indices may repeat; greedy indices are distinct when ``x`` has >= m distinct rows).
    weights: ``[m]`` float32 weights > 0. Sensitivity sampling: ``1 / (m q(x))`` (they sum to ~N);
      greedy: ones.
  """
  indices: jax.Array
  weights: jax.Array


def default_alpha(k: int) -> float:
  """Approximation factor of the k-means++ bicriteria solution: ``16 (log k + 2)`` (Bachem 2017)."""
  return 16.0 * (math.log(k) + 2.0)


@functools.partial(jax.jit, static_argnames=("m", "k", "block", "n_valid", "n_local_trials"))
def sensitivity_coreset_core(key: jax.Array, x: jax.Array, alpha: float, *, m: int, k: int,
                             block: int, n_valid: int, n_local_trials: int) -> Coreset:
  """Jitted sensitivity sampling on padded data ``x [N_pad, D]`` (rows ``>= n_valid`` ignored).

  See :func:`sensitivity_coreset` for the algorithm; no validation happens here.
  """
  n_pad, d = x.shape
  valid = (jnp.arange(n_pad) < n_valid).astype(jnp.float32)
  kb, ks = jax.random.split(key)
  centers, _ = kmeans_plusplus_core(kb, x, valid, k, n_local_trials, n_valid)
  labels, dist, _, _, _ = assign_blocked(x.reshape(-1, block, d), valid.reshape(-1, block),
                                            centers)
  dist = dist * valid
  size = jax.ops.segment_sum(valid, labels, num_segments=k)           # |X_j|
  cost = jax.ops.segment_sum(dist, labels, num_segments=k)            # sum_{x' in X_j} d(x', B)^2
  total = jnp.sum(dist)                                               # sum_{x' in X} d(x', B)^2
  size_x = jnp.maximum(size[labels], 1.0)
  s = alpha * dist + 2.0 * alpha * cost[labels] / size_x + 2.0 * total / size_x
  s = s * valid
  s_sum = jnp.sum(s)
  # All points on the bicriteria centres (zero cost): fall back to uniform sampling.
  q = jnp.where(s_sum > 0, s / jnp.where(s_sum > 0, s_sum, 1.0), valid / n_valid)
  cum = jnp.cumsum(q)
  u = jax.random.uniform(ks, (m,), jnp.float32) * cum[-1]
  idx = jnp.clip(jnp.searchsorted(cum, u, side="right"), 0, n_valid - 1).astype(jnp.int32)
  weights = 1.0 / (m * q[idx])
  return Coreset(idx, weights)


def _validate_m(m: Any, n: int, name: str = "m", at_most_n: bool = False) -> int:
  if isinstance(m, bool):
    raise TypeError(f"{name} must be an int, got bool ({m!r})")
  try:
    m = operator.index(m)
  except TypeError:
    raise TypeError(f"{name} must be an int, got {type(m).__name__} ({m!r})") from None
  if m <= 0:
    raise ValueError(f"{name} must be >= 1 (coreset size), got {m}")
  if at_most_n and m > n:
    raise ValueError(f"{name}={m} is larger than the number of points N={n}")
  return m


def sensitivity_coreset(key: jax.Array, x: Any, m: int, k: int, *, alpha: float | None = None,
                        n_local_trials: int | None = None, block: int | None = None,
                        verbose: bool = True) -> Coreset:
  """SMCC's centre set: sensitivity (importance) sampling around a k-means++ bicriteria solution.

  Algorithm 2 of SMCC: ``B`` = k-means++ seeding with ``k`` centres; ``X_j`` = points whose nearest
  centre is ``B_j``; for ``x`` in ``X_j``

      s(x) = alpha d(x, B)^2 + (2 alpha / |X_j|) sum_{x' in X_j} d(x', B)^2
             + (2 / |X_j|) sum_{x' in X} d(x', B)^2,

  ``q(x) = s(x) / sum_x' s(x')``; draw ``m`` points i.i.d. from ``q`` (with replacement) and give
  each the weight ``1 / (m q(x))``, so the weights sum to ``N`` in expectation and any weighted
  cost ``sum_S w f(x)`` is an unbiased estimate of ``sum_X f(x)``.

  Args:
    key: PRNG key; the same key gives identical results.
    x: ``[N, D]`` finite points (e.g. patch features).
    m: coreset size, >= 1 (SMCC: ``0.1 * N``); may exceed N (sampling is with replacement).
    k: number of bicriteria centres, ``1 <= k <= N`` (SMCC: the number of GMM components, 10).
    alpha: approximation factor; default ``16 (log k + 2)`` (the paper leaves it open).
    n_local_trials: k-means++ candidates per centre; default ``2 + int(log k)``.
    block: rows per distance block (memory ``O(block * k)``).
    verbose: log one line with the wall time.

  Returns:
    :class:`Coreset` ``(indices [m] int32, weights [m] float32)``; use ``x[indices]`` with ``weights``
    in :func:`jaxad.cluster.gmm_em` / :func:`jaxad.cluster.kmeans`.

  Raises:
    ValueError/TypeError: NaN/inf or bad shapes, ``m <= 0``, ``k <= 0`` or ``k > N``, ``alpha <= 0``.

  References:
    SMCC (IEEE TIM 2023) Algorithm 2; Lucic et al. JMLR 2017; Bachem et al. 2017.
  """
  key = C.check_key(key)
  xj = C.as_points(x, "x")
  n, d = xj.shape
  m = _validate_m(m, n)
  k = _validate_k(k, n)
  alpha = default_alpha(k) if alpha is None else float(alpha)
  if not alpha > 0 or not math.isfinite(alpha):
    raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
  trials = 2 + int(math.log(k)) if n_local_trials is None else C.check_positive_int(
      n_local_trials, "n_local_trials")
  block = C.default_block(n, k) if block is None else C.check_positive_int(block, "block")
  n_pad = C.round_up(n, block)
  t0 = time.perf_counter()
  out = sensitivity_coreset_core(key, C.pad_rows(xj, n_pad), alpha, m=m, k=k, block=block,
                                 n_valid=n, n_local_trials=trials)
  if verbose:
    jax.block_until_ready(out)
    _progress.log("sensitivity_coreset: N=%d D=%d m=%d k=%d, %.2fs", n, d, m, k,
                  time.perf_counter() - t0)
  return out


def project(key: jax.Array, x: jax.Array, projection_dim: int | None) -> jax.Array:
  """Centres ``x [N, D]`` and projects it with a Gaussian matrix ``N(0, 1/projection_dim)``.

  No projection (only centring) when ``projection_dim`` is None or ``>= D``. Centring leaves all
  distances unchanged but makes the float32 ``||a||^2 - 2ab + ||b||^2`` expansion more precise.
  """
  x = x - jnp.mean(x, axis=0, keepdims=True)
  d = x.shape[1]
  if projection_dim is None or projection_dim >= d:
    return x
  mat = jax.random.normal(key, (d, projection_dim), jnp.float32) / math.sqrt(projection_dim)
  return jnp.matmul(x, mat, precision=_HI)


@functools.partial(jax.jit, static_argnames=("m", "projection_dim"))
def greedy_coreset_core(key: jax.Array, x: jax.Array, *, m: int,
                        projection_dim: int | None) -> Coreset:
  """Jitted k-center greedy (``lax.fori_loop``, one ``[N, P]`` matrix-vector product per step)."""
  n = x.shape[0]
  kp, ks = jax.random.split(key)
  p = project(kp, x, projection_dim)
  p_sq = jnp.sum(p * p, axis=1)

  def dist_to(i):
    return jnp.maximum(p_sq - 2.0 * jnp.matmul(p, p[i], precision=_HI) + p_sq[i], 0.0)

  start = jax.random.randint(ks, (), 0, n, dtype=jnp.int32)
  sel = jnp.zeros((m,), jnp.int32).at[0].set(start)

  def body(i, carry):
    min_d, sel, last = carry
    min_d = jnp.minimum(min_d, dist_to(last))
    nxt = jnp.argmax(min_d).astype(jnp.int32)
    return min_d, sel.at[i].set(nxt), nxt

  min_d0 = jnp.full((n,), jnp.inf, jnp.float32)
  _, sel, _ = jax.lax.fori_loop(1, m, body, (min_d0, sel, start))
  return Coreset(sel, jnp.ones((m,), jnp.float32))


def greedy_coreset(key: jax.Array, x: Any, m: int, *, projection_dim: int | None = 128,
                   verbose: bool = True) -> Coreset:
  """PatchCore's greedy k-center coreset on a random projection, as one jitted ``fori_loop``.

  Starting from a uniformly random point, repeatedly adds the point whose (projected) Euclidean
  distance to the already selected points is largest (Gonzalez' 2-approximation of k-center).

  Args:
    key: PRNG key (projection matrix and start point); same key -> identical indices.
    x: ``[N, D]`` finite points.
    m: coreset size, ``1 <= m <= N`` (PatchCore: ``0.1 * N``).
    projection_dim: dimension ``P`` of the Gaussian random projection used for the distances
      (PatchCore: 128); ``None`` or ``>= D``: distances on the (centred) raw features.
    verbose: log one line with the wall time.

  Returns:
    :class:`Coreset` with ``indices [m]`` in selection order (the random start first) and
    ``weights`` = ones. Memory ``O(N P)``; ``m`` sequential steps of ``O(N P)`` work.

  Raises:
    ValueError/TypeError: NaN/inf or bad shapes, ``m <= 0`` or ``m > N``, ``projection_dim <= 0``.

  References:
    Roth et al. (PatchCore), CVPR 2022, Algorithm 1; Gonzalez 1985; Sener & Savarese 2018.
  """
  key = C.check_key(key)
  xj = C.as_points(x, "x")
  n, d = xj.shape
  m = _validate_m(m, n, at_most_n=True)
  if projection_dim is not None:
    projection_dim = C.check_positive_int(projection_dim, "projection_dim")
    if projection_dim >= d:
      projection_dim = None
  t0 = time.perf_counter()
  out = greedy_coreset_core(key, xj, m=m, projection_dim=projection_dim)
  if verbose:
    jax.block_until_ready(out)
    _progress.log("greedy_coreset: N=%d D=%d m=%d P=%s, %.2fs (%.0f steps/s)", n, d, m,
                  projection_dim, time.perf_counter() - t0, m / max(time.perf_counter() - t0, 1e-9))
  return out
