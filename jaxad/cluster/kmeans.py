"""Weighted k-means: greedy k-means++ seeding and blocked Lloyd iterations in ``lax.while_loop``.

Memory of one Lloyd iteration is ``O(block * k)`` beyond the data itself: the distances of one
block of points to all centres are computed, reduced (argmin, one-hot sums) and dropped.

References:
  Arthur & Vassilvitskii, "k-means++: The Advantages of Careful Seeding", SODA 2007 (D^2 sampling;
  the greedy variant with ``2 + log k`` local trials is scikit-learn's ``_kmeans_plusplus``).
  Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 1982.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxad import progress as _progress
from jaxad.cluster import _common as C

__all__ = ["KMeansResult", "kmeans", "kmeans_core", "kmeans_plusplus", "kmeans_plusplus_core",
           "assign_blocked"]


class KMeansResult(NamedTuple):
  """Result of :func:`kmeans`.

  Attributes:
    centers: ``[k, D]`` float32 cluster centres.
    assignments: ``[N]`` int32 index of the nearest centre of every point, in ``[0, k)``.
    inertia: scalar float32, ``sum_i w_i * min_j ||x_i - c_j||^2`` (weighted; >= 0).
    n_iter: scalar int32, number of Lloyd iterations run (``<= max_iter``).
  """
  centers: jax.Array
  assignments: jax.Array
  inertia: jax.Array
  n_iter: jax.Array


def _default_trials(k: int) -> int:
  return 2 + int(math.log(k))


def kmeans_plusplus_core(key: jax.Array, x: jax.Array, w: jax.Array, k: int, n_local_trials: int,
                         n_valid: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Greedy k-means++ seeding (jit-able; ``k`` and ``n_local_trials`` static).

  Args:
    key: PRNG key.
    x: ``[N, D]`` float32 points (padding rows allowed when their weight is 0).
    w: ``[N]`` float32 weights >= 0 (0 for padding).
    k: number of centres, ``1 <= k <= number of points with w > 0``.
    n_local_trials: candidates tried per centre (the best one is kept), >= 1.
    n_valid: number of real rows (the first ``n_valid``); defaults to ``N``.

  Returns:
    ``(centers [k, D], indices [k] int32)`` the chosen points and their row indices.
  """
  n = x.shape[0]
  n_valid = n if n_valid is None else n_valid
  x_sq = jnp.sum(x * x, axis=1)
  k0, kloop = jax.random.split(key)
  first = jax.random.categorical(k0, jnp.log(w))
  closest = C.sq_dists(x[first][None], x, b_sq=x_sq)[0]
  indices = jnp.zeros((k,), jnp.int32).at[0].set(first.astype(jnp.int32))

  def body(c, carry):
    closest, indices = carry
    cum = jnp.cumsum(w * closest)
    u = jax.random.uniform(jax.random.fold_in(kloop, c), (n_local_trials,), jnp.float32)
    cand = jnp.searchsorted(cum, u * cum[-1], side="right")
    cand = jnp.clip(cand, 0, n_valid - 1).astype(jnp.int32)
    d_cand = jnp.minimum(C.sq_dists(x[cand], x, b_sq=x_sq), closest[None])  # [T, N]
    pots = d_cand @ w
    best = jnp.argmin(pots)
    return d_cand[best], indices.at[c].set(cand[best])

  _, indices = jax.lax.fori_loop(1, k, body, (closest, indices))
  return x[indices], indices


def assign_blocked(x_blocks: jax.Array, w_blocks: jax.Array, centers: jax.Array):
  """One blocked pass: nearest centre of every point and the weighted per-centre sums.

  Args:
    x_blocks: ``[nb, B, D]`` points in blocks.
    w_blocks: ``[nb, B]`` weights (0 for padding).
    centers: ``[k, D]``.

  Returns:
    ``(labels [nb*B] int32, min_sq_dist [nb*B], sums [k, D], counts [k], inertia scalar)``.
  """
  k, d = centers.shape
  c_sq = jnp.sum(centers * centers, axis=1)

  def body(carry, xw):
    sums, counts, inertia = carry
    xb, wb = xw
    dist = C.sq_dists(xb, centers, b_sq=c_sq)
    lab = jnp.argmin(dist, axis=1).astype(jnp.int32)
    md = jnp.min(dist, axis=1)
    oh = jax.nn.one_hot(lab, k, dtype=jnp.float32) * wb[:, None]
    sums = sums + jnp.matmul(oh.T, xb, precision=jax.lax.Precision.HIGHEST)
    return (sums, counts + oh.sum(0), inertia + jnp.sum(md * wb)), (lab, md)

  init = (jnp.zeros((k, d), jnp.float32), jnp.zeros((k,), jnp.float32), jnp.float32(0))
  (sums, counts, inertia), (lab, md) = jax.lax.scan(body, init, (x_blocks, w_blocks))
  return lab.reshape(-1), md.reshape(-1), sums, counts, inertia


@functools.partial(jax.jit, static_argnames=("k", "max_iter", "block", "n_local_trials", "n_valid"))
def kmeans_core(key: jax.Array, x: jax.Array, w: jax.Array, tol: jax.Array | float, *, k: int,
                max_iter: int, block: int, n_local_trials: int, n_valid: int,
                init: jax.Array | None = None) -> KMeansResult:
  """Jitted weighted k-means on padded data (no validation; use inside other jitted code).

  Args:
    key: PRNG key (seeding).
    x: ``[N_pad, D]`` float32, ``N_pad`` a multiple of ``block``; rows ``>= n_valid`` are padding.
    w: ``[N_pad]`` float32 weights, 0 for padding rows.
    tol: relative tolerance; stop when the squared centre shift ``<= tol * mean weighted variance``.
    k, max_iter, block, n_local_trials, n_valid: static ints.
    init: optional ``[k, D]`` initial centres (skips k-means++).

  Returns:
    :class:`KMeansResult` with assignments over all ``N_pad`` rows (slice ``[:n_valid]``).
  """
  n_pad, d = x.shape
  xb = x.reshape(n_pad // block, block, d)
  wb = w.reshape(n_pad // block, block)
  wsum = jnp.sum(w)
  mean = (w @ x) / wsum
  var = (w @ jnp.square(x - mean)) / wsum
  tol_abs = jnp.asarray(tol, jnp.float32) * jnp.mean(var)
  if init is None:
    centers0, _ = kmeans_plusplus_core(key, x, w, k, n_local_trials, n_valid)
  else:
    centers0 = init.astype(jnp.float32)
  valid = jnp.arange(n_pad) < n_valid

  def cond(carry):
    _, _, it, done = carry
    return jnp.logical_and(it < max_iter, jnp.logical_not(done))

  def body(carry):
    centers, labels_prev, it, _ = carry
    labels, md, sums, counts, _ = assign_blocked(xb, wb, centers)
    empty = counts <= 0
    # Empty clusters move to the points farthest from their centres (as scikit-learn does).
    _, far = jax.lax.top_k(jnp.where(w > 0, md, -jnp.inf), k)
    rank = jnp.clip(jnp.cumsum(empty) - 1, 0, k - 1)
    new = jnp.where(empty[:, None], x[far[rank]], sums / jnp.maximum(counts, 1e-30)[:, None])
    strict = jnp.all(jnp.where(valid, labels == labels_prev, True))
    shift = jnp.sum(jnp.square(new - centers))
    done = jnp.logical_or(strict, shift <= tol_abs)
    return new, labels, it + 1, done

  carry = (centers0, jnp.full((n_pad,), -1, jnp.int32), jnp.int32(0), jnp.bool_(False))
  centers, _, n_iter, _ = jax.lax.while_loop(cond, body, carry)
  labels, _, _, _, inertia = assign_blocked(xb, wb, centers)
  return KMeansResult(centers, labels, inertia, n_iter)


def _validate_k(k: Any, n: int, name: str = "k") -> int:
  k = C.check_positive_int(k, name)
  if k > n:
    raise ValueError(f"{name}={k} is larger than the number of points N={n}")
  return k


def kmeans(key: jax.Array, x: Any, k: int, *, weights: Any = None, max_iter: int = 100,
           tol: float = 1e-4, n_local_trials: int | None = None, block: int | None = None,
           init: Any = None, verbose: bool = True) -> KMeansResult:
  """Weighted k-means with greedy k-means++ seeding and Lloyd iterations (one run, jitted).

  Args:
    key: PRNG key (``jax.random.key``); the same key gives identical results.
    x: ``[N, D]`` finite real points (cast to float32).
    k: number of clusters, ``1 <= k <= N``.
    weights: optional ``[N]`` non-negative point weights (e.g. coreset weights); default ones.
    max_iter: maximum number of Lloyd iterations (>= 1).
    tol: stop when the summed squared centre shift is ``<= tol * mean(var(x, axis=0))``
      (scikit-learn's convention) or when no assignment changed.
    n_local_trials: k-means++ candidates per centre; default ``2 + int(log k)`` (scikit-learn).
    block: rows per distance block (memory ``O(block * k)``); default keeps a block at ~16 MiB.
    init: optional ``[k, D]`` initial centres instead of k-means++.
    verbose: log one line with the wall time after the jitted loop.

  Returns:
    :class:`KMeansResult` ``(centers [k, D], assignments [N] int32, inertia, n_iter)``.

  Raises:
    ValueError/TypeError: bad shapes, NaN/inf, ``k > N``, ``k <= 0``, bad weights/init.

  References:
    Arthur & Vassilvitskii 2007 (k-means++); Lloyd 1982; scikit-learn ``KMeans(algorithm="lloyd")``.
  """
  key = C.check_key(key)
  xj = C.as_points(x, "x")
  n, d = xj.shape
  k = _validate_k(k, n)
  max_iter = C.check_positive_int(max_iter, "max_iter")
  w = C.as_weights(weights, n)
  if weights is not None and int(jnp.sum(w > 0)) < k:
    raise ValueError(f"k={k} is larger than the number of points with positive weight "
                     f"({int(jnp.sum(w > 0))})")
  if not (tol >= 0):
    raise ValueError(f"tol must be >= 0, got {tol}")
  trials = _default_trials(k) if n_local_trials is None else C.check_positive_int(
      n_local_trials, "n_local_trials")
  block = C.default_block(n, k) if block is None else C.check_positive_int(block, "block")
  init_j = None
  if init is not None:
    init_j = C.as_points(init, "init")
    if init_j.shape != (k, d):
      raise ValueError(f"init must have shape [k, D] = [{k}, {d}], got {init_j.shape}")
  n_pad = C.round_up(n, block)
  t0 = time.perf_counter()
  res = kmeans_core(key, C.pad_rows(xj, n_pad), C.pad_rows(w, n_pad), tol, k=k,
                    max_iter=max_iter, block=block, n_local_trials=trials, n_valid=n, init=init_j)
  res = res._replace(assignments=res.assignments[:n])
  if verbose:
    jax.block_until_ready(res)
    _progress.log("kmeans: N=%d D=%d k=%d, %d Lloyd iterations, inertia %.6g, %.2fs", n, d, k,
                  int(res.n_iter), float(res.inertia), time.perf_counter() - t0)
  return res


def kmeans_plusplus(key: jax.Array, x: Any, k: int, *, weights: Any = None,
                    n_local_trials: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Greedy k-means++ seeding only (the bicriteria solution of SMCC's Algorithm 2).

  Args:
    key: PRNG key.
    x: ``[N, D]`` finite points.
    k: number of centres, ``1 <= k <= N``.
    weights: optional ``[N]`` weights >= 0.
    n_local_trials: candidates per centre; default ``2 + int(log k)``.

  Returns:
    ``(centers [k, D] float32, indices [k] int32)``.

  References:
    Arthur & Vassilvitskii 2007, Sec. 2.2; scikit-learn ``kmeans_plusplus``.
  """
  key = C.check_key(key)
  xj = C.as_points(x, "x")
  n = xj.shape[0]
  k = _validate_k(k, n)
  w = C.as_weights(weights, n)
  trials = _default_trials(k) if n_local_trials is None else C.check_positive_int(
      n_local_trials, "n_local_trials")
  return _kpp_jit(key, xj, w, k=k, n_local_trials=trials)


_kpp_jit = jax.jit(kmeans_plusplus_core, static_argnames=("k", "n_local_trials", "n_valid"))
