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


def _greedy_plain(p: jax.Array, start: jax.Array, m: int) -> jax.Array:
  """Plain k-center greedy on ``p [N, P]``: one full matrix-vector product per step."""
  n = p.shape[0]
  p_sq = jnp.sum(p * p, axis=1)

  def dist_to(i):
    return jnp.maximum(p_sq - 2.0 * jnp.matmul(p, p[i], precision=_HI) + p_sq[i], 0.0)

  sel = jnp.zeros((m,), jnp.int32).at[0].set(start)

  def body(i, carry):
    min_d, sel, last = carry
    min_d = jnp.minimum(min_d, dist_to(last))
    nxt = jnp.argmax(min_d).astype(jnp.int32)
    return min_d, sel.at[i].set(nxt), nxt

  min_d0 = jnp.full((n,), jnp.inf, jnp.float32)
  _, sel, _ = jax.lax.fori_loop(1, m, body, (min_d0, sel, start))
  return sel


def _leaf_order(key: jax.Array, p: jax.Array, leaf_size: int,
                power_iters: int = 3) -> tuple[jax.Array, int, int]:
  """Balanced principal-direction tree: a permutation of the rows grouping nearby points in leaves.

  ``L = ceil(log2(N / leaf_size))`` levels (one ``lax.fori_loop`` step each, fixed shapes) on
  ``p``. The rows in the current
  order form ``nb`` contiguous leaf-sized chunks; a node at level ``l`` is a run of
  ``nb / 2^l`` chunks, so per-node sums are chunk sums (a reshape) followed by a ``[nb]``-row
  segment sum. Each node is sorted along its top principal direction (``power_iters`` power
  iterations) and its two halves become the children. Only the efficiency of the pruning depends
  on this grouping, never the result.

  Returns:
    ``(order [nb * seg] int32, nb, seg)``: rows ``order[j*seg:(j+1)*seg]`` form leaf ``j``;
    entries ``>= N`` are padding.
  """
  n = p.shape[0]
  levels = max(0, math.ceil(math.log2(max(n / leaf_size, 1.0))))
  nb = 2 ** levels
  seg = -(-n // nb)
  n_pad = nb * seg
  q0 = C.pad_rows(p, n_pad)
  dq = q0.shape[1]
  chunk = jnp.arange(nb, dtype=jnp.int32)
  row_node = jnp.arange(n_pad, dtype=jnp.int32) // seg             # chunk of each row

  def level(lvl, carry):
    order, q = carry
    node = chunk >> (levels - lvl)                                 # node of each chunk
    seg_sum = functools.partial(jax.ops.segment_sum, segment_ids=node, num_segments=nb,
                                indices_are_sorted=True)
    q3 = q.reshape(nb, seg, dq)
    w = (order < n).reshape(nb, seg).astype(jnp.float32)
    mu = seg_sum(jnp.einsum("js,jsd->jd", w, q3)) / jnp.maximum(seg_sum(w.sum(1)), 1.0)[:, None]
    qc = (q3 - mu[node][:, None]) * w[..., None]
    v = jax.random.normal(jax.random.fold_in(key, lvl), (nb, dq), jnp.float32)
    for _ in range(power_iters):
      t = jnp.einsum("jsd,jd->js", qc, v[node])
      v = seg_sum(jnp.einsum("jsd,js->jd", qc, t))
      v = v / jnp.maximum(jnp.linalg.norm(v, axis=1, keepdims=True), 1e-30)
    proj = jnp.where(w > 0, jnp.einsum("jsd,jd->js", qc, v[node]), jnp.inf).reshape(-1)
    perm = jax.lax.sort((node[row_node], proj, jnp.arange(n_pad, dtype=jnp.int32)),
                        num_keys=2)[2]
    return order[perm], q[perm]

  order, _ = jax.lax.fori_loop(0, levels, level, (jnp.arange(n_pad, dtype=jnp.int32), q0))
  return order, nb, seg


# Float32 safety margins of the pruning test (see _greedy_pruned): relative error of a norm
# computed from explicit differences, and of a squared distance from the ||a||^2 - 2ab + ||b||^2
# expansion relative to ||a||^2 + ||b||^2 (analytic bounds ~4e-6 and ~1.6e-5 for P = 128; the
# margins are 5x / 2.5x larger and scale with P).
def _margins(dp: int) -> tuple[float, float]:
  u = 2.0 ** -24
  return 5.0 * (dp + 2) * u / 2, 2.5 * (2 * dp + 4) * u


def _compact(mask: jax.Array, size: int) -> jax.Array:
  """``jnp.nonzero(mask, size=size, fill_value=len(mask))[0]`` with one cumsum and one scatter."""
  n = mask.shape[0]
  idx = jnp.arange(n, dtype=jnp.int32)
  dest = jnp.where(mask, jnp.cumsum(mask.astype(jnp.int32)) - 1, size + idx)  # all distinct
  return jnp.full((size,), n, jnp.int32).at[dest].set(idx, mode="drop", unique_indices=True)


def _greedy_pruned(key: jax.Array, p: jax.Array, start: jax.Array, m: int, leaf_size: int,
                   leaf_budgets: tuple[int, ...] = (8, 4),
                   row_budgets: tuple[int, ...] = (256, 64, 16), centre_chunk: int = 512,
                   ) -> tuple[jax.Array, jax.Array]:
  """Exact k-center greedy with triangle-inequality pruning (same selection as _greedy_plain).

  Points live in the leaves of :func:`_leaf_order` (``[nb, seg]`` layout). Each point ``i`` keeps
  its current minimum squared distance ``d_i`` and the selected centre ``a_i`` it came from; each
  leaf keeps an anchor ``b_j`` (mean of its points), the points' distances ``r_i = ||p_i - b_j||``
  (maximum ``r_j``), and its maximum ``D_j = max_i d_i`` (with the smallest original index among
  the maxima). For a new centre ``c`` two lower bounds hold for every point:

      ||p_i - c|| >= ||c - b_j|| - r_i                (anchor bound)
      ||p_i - c|| >= ||c - s_{a_i}|| - sqrt(d_i)      (previous-centre bound, ||p_i - s_a|| = sqrt(d_i))

  When a bound, squared, is >= ``d_i`` (after float32 error margins), the computed distance cannot
  lower ``d_i`` and the point is skipped. Per step: (1) the leaves with ``(||c - b_j|| - r_j)^2 <
  D_j`` are compacted (:func:`_compact`, a static-size ``nonzero``) to the smallest static leaf
  budget ``nb / f``, ``f`` in ``leaf_budgets`` (``lax.switch``; more: full update); (2) in
  those, the points failing the anchor bound are counted; only if there are more of them than
  centres selected so far are the distances from ``c`` to the selected centres computed (chunks
  of ``centre_chunk`` rows, only up to the current step) and the previous-centre bound applied;
  (3) the remaining points are compacted to the smallest static row budget ``n_pad / f`` (``f`` in
  ``row_budgets``, ``lax.switch``; more rows: full update) and only those rows are read and
  updated. Distances to the leaf anchors and to the
  selected centres use the matrix-vector expansion minus its float32 error bound (a lower bound).
  The next centre is the argmax over the ``D_j``, ties broken by the smallest original index, i.e.
  exactly ``jnp.argmax`` on the original order.

  Returns:
    ``(selected [m] int32 original indices, rows_updated [m] int32 per step, of N)``.
  """
  n, dp = p.shape
  order, nb, seg = _leaf_order(key, p, leaf_size)
  n_pad = nb * seg
  b1s = sorted({max(1, nb // f) for f in leaf_budgets})
  tol_norm, tol_sq = _margins(dp)
  big = jnp.int32(2 ** 31 - 1)
  pf = C.pad_rows(p, n_pad)[order]                              # [n_pad, P] leaf order
  orig3 = order.reshape(nb, seg)
  valid3 = orig3 < n
  psqf = jnp.sum(pf * pf, axis=1)                                # as in _greedy_plain
  w3 = valid3.astype(jnp.float32)
  p3 = pf.reshape(nb, seg, dp)
  anchor = jnp.einsum("js,jsp->jp", w3, p3) / jnp.maximum(w3.sum(1), 1.0)[:, None]
  anchor_sq = jnp.sum(anchor * anchor, axis=1)
  r3 = jnp.sqrt(jnp.sum(jnp.square(p3 - anchor[:, None]), axis=-1)) * (1.0 + tol_norm)
  r3 = jnp.where(valid3, r3, 0.0)
  rmax = jnp.max(r3, axis=1)
  errf = tol_sq * (psqf + jnp.max(psqf))                           # covers |d_hat - d|
  err3 = errf.reshape(nb, seg)
  errmax = jnp.max(err3, axis=1)
  inv = jnp.zeros((n_pad,), jnp.int32).at[order].set(jnp.arange(n_pad, dtype=jnp.int32))
  ch = min(centre_chunk, m)
  m_pad = -(-m // ch) * ch

  def leaf_max(md, orig):
    mx = jnp.max(md, axis=-1)
    first = jnp.min(jnp.where(md == mx[..., None], orig, big), axis=-1)
    return mx, first

  def lower_dist(a, a_sq, c, c_sq):
    """Lower bounds of ||a - c|| from the float32 expansion minus its error bound."""
    d = a_sq - 2.0 * jnp.matmul(a, c, precision=_HI) + c_sq
    return jnp.sqrt(jnp.maximum(d - tol_sq * (a_sq + c_sq), 0.0))

  def body(i, carry):
    mdf, af, dmax, dfirst, cents, cents_sq, sel, last, counts = carry
    c = pf[last]
    c_sq = psqf[last]

    def dist(rows, psq):
      return jnp.maximum(psq - 2.0 * jnp.matmul(rows, c, precision=_HI) + c_sq, 0.0)

    def full(_):
      d = dist(pf, psqf)
      better = d < mdf
      md, a = jnp.where(better, d, mdf), jnp.where(better, i - 1, af)
      mx, first = leaf_max(md.reshape(nb, seg), orig3)
      return md, a, mx, first, jnp.int32(n)

    def centre_bound(_):
      """Lower bounds of ||c - s_a|| for the selected centres a < i (chunks up to i)."""
      def chunk(j, buf):
        cc = jax.lax.dynamic_slice_in_dim(cents, j * ch, ch)
        cq = jax.lax.dynamic_slice_in_dim(cents_sq, j * ch, ch)
        return jax.lax.dynamic_update_slice_in_dim(buf, lower_dist(cc, cq, c, c_sq), j * ch, 0)
      return jax.lax.fori_loop(0, (i + ch - 1) // ch, chunk,
                               jnp.zeros((m_pad,), jnp.float32)) * (1.0 - tol_norm)

    def pruned(b1):
      def fn(_):
        l1 = _compact(cand, b1)                                      # index nb: padding slot
        l1c = jnp.minimum(l1, nb - 1)
        md1 = mdf.reshape(nb, seg)[l1c]
        lim = md1 + err3[l1c]
        lba = jnp.maximum(lb_anchor[l1c][:, None] - r3[l1c], 0.0)
        act = (lba * lba < lim) & (l1 < nb)[:, None]                 # [b1, seg]

        def with_centre(act):
          lbc = centre_bound(None)[af.reshape(nb, seg)[l1c]] - jnp.sqrt(lim)
          lbc = jnp.maximum(lbc, 0.0)
          return act & (lbc * lbc < lim)

        act = jax.lax.cond(jnp.sum(act) > i, with_centre, lambda a: a, act)
        n_act = jnp.sum(act)

        def rows(b2):
          def fn2(_):
            flat = _compact(act.reshape(-1), b2)
            pos = l1c[jnp.minimum(flat // seg, b1 - 1)] * seg + flat % seg
            pos = jnp.where(flat < b1 * seg, pos, n_pad)               # n_pad: dropped on scatter
            posc = jnp.minimum(pos, n_pad - 1)
            d = dist(pf[posc], psqf[posc])
            old = mdf[posc]
            better = d < old
            md = mdf.at[pos].set(jnp.where(better, d, old), mode="drop")
            a = af.at[pos].set(jnp.where(better, i - 1, af[posc]), mode="drop")
            mx, first = leaf_max(md.reshape(nb, seg)[l1c], orig3[l1c])
            return (md, a, dmax.at[l1].set(mx, mode="drop"),
                    dfirst.at[l1].set(first, mode="drop"), n_act.astype(jnp.int32))
          return fn2

        b2s = sorted({max(1, min(b1 * seg, n_pad // f)) for f in row_budgets})
        branch = jnp.sum(n_act > jnp.asarray(b2s, jnp.int32))
        return jax.lax.switch(branch, [rows(b) for b in b2s] + [full], None)
      return fn

    lb_anchor = lower_dist(anchor, anchor_sq, c, c_sq) * (1.0 - tol_norm)
    lb_leaf = jnp.maximum(lb_anchor - rmax, 0.0)
    cand = lb_leaf * lb_leaf < dmax + errmax                       # padding leaves: -inf
    branch = jnp.sum(jnp.sum(cand) > jnp.asarray(b1s, jnp.int32))
    mdf, af, dmax, dfirst, n_rows = jax.lax.switch(branch, [pruned(b) for b in b1s] + [full],
                                                   None)
    counts = counts.at[i].set(n_rows)
    top = jnp.max(dmax)
    nxt = jnp.min(jnp.where(dmax == top, dfirst, big))        # original index
    pos = inv[nxt]
    return (mdf, af, dmax, dfirst, cents.at[i].set(pf[pos]), cents_sq.at[i].set(psqf[pos]),
            sel.at[i].set(nxt), pos, counts)

  mdf = jnp.where(order < n, jnp.inf, -jnp.inf)
  dmax, dfirst = leaf_max(mdf.reshape(nb, seg), orig3)
  cents = jnp.zeros((m_pad, dp), jnp.float32).at[0].set(pf[inv[start]])
  cents_sq = jnp.zeros((m_pad,), jnp.float32).at[0].set(psqf[inv[start]])
  sel = jnp.zeros((m,), jnp.int32).at[0].set(start)
  counts = jnp.zeros((m,), jnp.int32).at[0].set(n)
  carry = (mdf, jnp.zeros((n_pad,), jnp.int32), dmax, dfirst, cents, cents_sq, sel, inv[start],
           counts)
  out = jax.lax.fori_loop(1, m, body, carry)
  return out[6], out[8]


@functools.partial(jax.jit, static_argnames=("m", "projection_dim", "prune", "leaf_size",
                                             "return_stats"))
def greedy_coreset_core(key: jax.Array, x: jax.Array, *, m: int, projection_dim: int | None,
                        prune: bool = True, leaf_size: int = 64, return_stats: bool = False):
  """Jitted k-center greedy on the projection of ``x [N, D]`` (no validation).

  ``prune=False``: one ``[N, P]`` matrix-vector product per step (``lax.fori_loop``).
  ``prune=True``: the same selection with triangle-inequality pruning (:func:`_greedy_pruned`,
  ``leaf_size`` points per tree leaf). ``return_stats=True`` also returns ``rows [m]``, the number
  of rows whose distance each step computed (``N`` for a full update; pruned path only).
  """
  n = x.shape[0]
  kp, ks = jax.random.split(key)
  p = project(kp, x, projection_dim)
  start = jax.random.randint(ks, (), 0, n, dtype=jnp.int32)
  stats = None
  if prune and m > 1:
    sel, stats = _greedy_pruned(jax.random.fold_in(kp, 1), p, start, m, leaf_size)
  else:
    sel = _greedy_plain(p, start, m)
  out = Coreset(sel, jnp.ones((m,), jnp.float32))
  return (out, stats) if return_stats else out


def greedy_coreset(key: jax.Array, x: Any, m: int, *, projection_dim: int | None = 128,
                   prune: bool = True, verbose: bool = True) -> Coreset:
  """PatchCore's greedy k-center coreset on a random projection, as one jitted ``fori_loop``.

  Starting from a uniformly random point, repeatedly adds the point whose (projected) Euclidean
  distance to the already selected points is largest (Gonzalez' 2-approximation of k-center).

  Args:
    key: PRNG key (projection matrix and start point); same key -> identical indices.
    x: ``[N, D]`` finite points.
    m: coreset size, ``1 <= m <= N`` (PatchCore: ``0.1 * N``).
    projection_dim: dimension ``P`` of the Gaussian random projection used for the distances
      (PatchCore: 128); ``None`` or ``>= D``: distances on the (centred) raw features.
    prune: skip points that provably cannot change in a step (triangle inequality against tree-leaf
      anchors and against each point's nearest selected centre, with float32 error margins). Same
      selection as ``prune=False`` (one full ``[N, P]`` pass per step) up to float32 near-ties;
      faster on clustered data such as CNN patch features (5.2x vs ``prune=False``, 3.6x vs a
      NumPy gemv loop at 100k x 128 -> 10k on MVTec bottle MobileNetV2 features), no gain when nothing can be pruned (i.i.d. Gaussian data),
      and more compilation. Memory: a second ``[N, P]`` copy in leaf order plus ``O(N + m P)``.
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
  out = greedy_coreset_core(key, xj, m=m, projection_dim=projection_dim, prune=bool(prune))
  if verbose:
    jax.block_until_ready(out)
    _progress.log("greedy_coreset: N=%d D=%d m=%d P=%s, %.2fs (%.0f steps/s)", n, d, m,
                  projection_dim, time.perf_counter() - t0, m / max(time.perf_counter() - t0, 1e-9))
  return out
