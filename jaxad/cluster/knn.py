"""Exact k-nearest-neighbour search (L2 / squared L2) by blocked matmul and ``lax.top_k``.

The bank is processed in blocks of ``block`` rows and the queries in blocks of ``query_block``
rows, so the temporary distance matrix is ``[query_block, block]`` whatever the sizes; a running
top-k is merged after every bank block. With ``mesh=`` the bank is split over the devices of a
1-D mesh (``jax.shard_map``), each device finds its local top-k and the candidates are merged
after an ``all_gather``: results equal the single-device ones (up to exact distance ties).

Precision: squared distances are ``||q||^2 - 2 q.b + ||b||^2`` in float32, clamped at 0; their
absolute error is about ``1e-7 * (||q||^2 + ||b||^2)``, so neighbours whose distances differ by
less than that may swap order (a brute-force float64 reference agrees away from such near-ties).

References:
  Johnson, Douze & Jegou, "Billion-scale similarity search with GPUs" (faiss), 2019: exact search
  as a blocked GEMM followed by k-selection. PatchCore (Roth et al., CVPR 2022): 1-NN scoring.
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from jaxad import progress as _progress
from jaxad.cluster import _common as C

__all__ = ["KNNResult", "knn", "knn_core", "nearest_sq_dists"]

_HI = jax.lax.Precision.HIGHEST


class KNNResult(NamedTuple):
  """Result of :func:`knn`.

  Attributes:
    distances: ``[Q, k]`` float32, ascending per row; Euclidean (or squared, if ``squared=True``).
    indices: ``[Q, k]`` int32 row indices into ``bank``.
  """
  distances: jax.Array
  indices: jax.Array


def _smallest(d: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """k smallest entries per row of ``d [R, C]`` (ascending) and their column indices."""
  if k == 1:
    i = jnp.argmin(d, axis=1).astype(jnp.int32)
    return jnp.take_along_axis(d, i[:, None], axis=1), i[:, None]
  neg, i = jax.lax.top_k(-d, k)
  return -neg, i.astype(jnp.int32)


def knn_core(queries: jax.Array, bank: jax.Array, bank_valid: jax.Array, *, k: int, block: int,
             query_block: int, index_offset: jax.Array | int = 0) -> tuple[jax.Array, jax.Array]:
  """Jit-able blocked exact top-k of squared distances (no validation).

  Args:
    queries: ``[Q_pad, D]``, ``Q_pad % query_block == 0``.
    bank: ``[N_pad, D]``, ``N_pad % block == 0``, ``block >= k``.
    bank_valid: ``[N_pad]`` bool, False for padding rows (their distance is +inf).
    k, block, query_block: static ints.
    index_offset: added to the returned indices (the row offset of this bank shard).

  Returns:
    ``(sq_dist [Q_pad, k], indices [Q_pad, k] int32)`` ascending per row.
  """
  q_pad, d = queries.shape
  n_pad = bank.shape[0]
  nbb = n_pad // block
  b_sq = jnp.where(bank_valid, jnp.sum(bank * bank, axis=1), jnp.inf)
  bank_b = bank.reshape(nbb, block, d)
  bsq_b = b_sq.reshape(nbb, block)
  bases = jnp.arange(nbb, dtype=jnp.int32) * block + jnp.asarray(index_offset, jnp.int32)

  def per_query_block(qb):
    q_sq = jnp.sum(qb * qb, axis=1)

    def body(carry, inp):
      best_d, best_i = carry
      bb, bsq, base = inp
      dist = jnp.maximum(q_sq[:, None] - 2.0 * jnp.matmul(qb, bb.T, precision=_HI) + bsq[None], 0.0)
      ld, li = _smallest(dist, k)
      cd = jnp.concatenate([best_d, ld], axis=1)
      ci = jnp.concatenate([best_i, li + base], axis=1)
      md, pos = _smallest(cd, k)
      return (md, jnp.take_along_axis(ci, pos, axis=1)), None

    init = (jnp.full((qb.shape[0], k), jnp.inf, jnp.float32),
            jnp.zeros((qb.shape[0], k), jnp.int32))
    (bd, bi), _ = jax.lax.scan(body, init, (bank_b, bsq_b, bases))
    return bd, bi

  qs = queries.reshape(q_pad // query_block, query_block, d)
  bd, bi = jax.lax.map(per_query_block, qs)
  return bd.reshape(q_pad, k), bi.reshape(q_pad, k)


def _k_smallest_values(d: jax.Array, k: int) -> jax.Array:
  """``[R, k]`` k smallest values per row of ``d [R, C]``, ascending (ties kept).

  ``top_k`` of a whole row is a per-row partial sort on XLA:CPU; here rows are cut into groups of
  ``g`` columns, the ``k`` groups with the smallest minima are kept and ``top_k`` runs on their
  ``k g`` values. Exact: if a value among the row's k smallest lies in a dropped group, the k kept
  groups' minima are k other entries no larger than it, so the multiset of the k smallest values
  is the same.
  """
  r, c = d.shape
  g = next((g for g in (32, 16, 8) if c % g == 0 and c // g >= 2 * k), None)
  if g is None:
    return -jax.lax.top_k(-d, k)[0]
  groups = d.reshape(r, c // g, g)
  _, keep = jax.lax.top_k(-jnp.min(groups, axis=2), k)  # [R, k] groups with the smallest minima
  cand = jnp.take_along_axis(groups, keep[:, :, None], axis=1).reshape(r, k * g)
  return -jax.lax.top_k(-cand, k)[0]


def nearest_sq_dists(queries: jax.Array, bank: jax.Array, bank_valid: jax.Array, *, k: int,
                     block: int) -> jax.Array:
  """Jit-able blocked exact ``k`` smallest squared distances, values only (no indices).

  The distances are the same float32 expression as :func:`knn_core`'s (equal values); without
  indices the running merge is a minimum (``k = 1``) or a ``top_k`` of ``2k`` values, and every
  query is searched in one pass over the bank blocks (``[Q, block]`` temporaries), so a batch
  sharded on the query axis stays sharded.

  Args:
    queries: ``[Q, D]`` float32 (any ``Q``).
    bank: ``[N_pad, D]``, ``N_pad % block == 0``, ``block >= k``.
    bank_valid: ``[N_pad]`` bool, False for padding rows (their distance is +inf).
    k, block: static ints.

  Returns:
    ``[Q, k]`` float32 squared Euclidean distances, ascending per row.
  """
  q, d = queries.shape
  n_pad = bank.shape[0]
  if n_pad % block or block < k:
    raise ValueError(f"bank: {n_pad} rows, expected a multiple of block={block} >= k={k}")
  nbb = n_pad // block
  b_sq = jnp.where(bank_valid, jnp.sum(bank * bank, axis=1), jnp.inf)
  q_sq = jnp.sum(queries * queries, axis=1)
  q_m2 = -2.0 * queries  # exact scaling: q_m2 . b == -2 (q . b) bit for bit

  def body(best, inp):
    bb, bsq = inp
    dist = jnp.maximum(q_sq[:, None] + jnp.matmul(q_m2, bb.T, precision=_HI) + bsq[None], 0.0)
    if k == 1:
      return jnp.minimum(best, jnp.min(dist, axis=1, keepdims=True)), None
    local = _k_smallest_values(dist, k)
    return -jax.lax.top_k(-jnp.concatenate([best, local], axis=1), k)[0], None

  init = jnp.full((q, k), jnp.inf, jnp.float32)
  best, _ = jax.lax.scan(body, init, (bank.reshape(nbb, block, d), b_sq.reshape(nbb, block)))
  return best


@functools.partial(jax.jit, static_argnames=("k", "block", "query_block", "squared"))
def _knn_single(queries, bank, bank_valid, *, k, block, query_block, squared):
  d, i = knn_core(queries, bank, bank_valid, k=k, block=block, query_block=query_block)
  return (d if squared else jnp.sqrt(d)), i


@functools.lru_cache(maxsize=None)
def _knn_sharded_fn(mesh: Mesh, axis: str, k: int, block: int, query_block: int, squared: bool):
  n_dev = mesh.shape[axis]

  def local(queries, bank, bank_valid):
    offset = jax.lax.axis_index(axis) * bank.shape[0]
    d, i = knn_core(queries, bank, bank_valid, k=k, block=block, query_block=query_block,
                    index_offset=offset)
    ad = jax.lax.all_gather(d, axis)  # [n_dev, Q, k]
    ai = jax.lax.all_gather(i, axis)
    q = d.shape[0]
    ad = jnp.moveaxis(ad, 0, 1).reshape(q, n_dev * k)
    ai = jnp.moveaxis(ai, 0, 1).reshape(q, n_dev * k)
    md, pos = _smallest(ad, k)
    return (md if squared else jnp.sqrt(md)), jnp.take_along_axis(ai, pos, axis=1)

  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis), P(axis)), out_specs=(P(), P()),
                     check_vma=False)
  return jax.jit(fn)


def knn(queries: Any, bank: Any, k: int, *, block: int = 2048, query_block: int = 1024,
        squared: bool = False, mesh: Mesh | None = None, verbose: bool = False) -> KNNResult:
  """Exact k nearest neighbours of every query in ``bank`` (L2), memory bounded by the blocks.

  Args:
    queries: ``[Q, D]`` finite points (e.g. test patch features).
    bank: ``[N, D]`` finite points (the memory bank).
    k: neighbours per query, ``1 <= k <= N``.
    block: bank rows per block (raised to ``k`` if smaller).
    query_block: query rows per block (lowered to ``Q`` rounded up to 8 if larger); the
      temporary distance matrix is ``[query_block, block]`` float32 (default 8 MiB).
    squared: return squared Euclidean distances instead of Euclidean ones.
    mesh: optional 1-D ``jax.sharding.Mesh``; the bank is split over its devices and the per-device
      top-k lists are merged (same results as without a mesh).
    verbose: log one line with the wall time.

  Returns:
    :class:`KNNResult` ``(distances [Q, k] ascending, indices [Q, k] int32)``.

  Raises:
    ValueError/TypeError: NaN/inf, ranks, ``queries``/``bank`` dims differ, ``k <= 0`` or ``k > N``,
      a mesh that is not 1-D.

  References:
    faiss ``IndexFlatL2`` (Johnson et al. 2019) computes the same exact answer.
  """
  qj = C.as_points(queries, "queries")
  bj = C.as_points(bank, "bank")
  if qj.shape[1] != bj.shape[1]:
    raise ValueError(f"queries and bank must have the same feature dimension, got queries "
                     f"{qj.shape} and bank {bj.shape}")
  n = bj.shape[0]
  nq = qj.shape[0]
  k = C.check_positive_int(k, "k")
  if k > n:
    raise ValueError(f"k={k} is larger than the number of bank points N={n}")
  block = max(C.check_positive_int(block, "block"), k)
  block = min(block, C.round_up(n, 8))
  block = max(block, k)
  query_block = min(C.check_positive_int(query_block, "query_block"), C.round_up(nq, 8))
  q_pad = C.round_up(nq, query_block)
  qp = C.pad_rows(qj, q_pad)
  t0 = time.perf_counter()
  if mesh is None:
    n_pad = C.round_up(n, block)
    valid = jnp.arange(n_pad) < n
    d, i = _knn_single(qp, C.pad_rows(bj, n_pad), valid, k=k, block=block,
                       query_block=query_block, squared=bool(squared))
  else:
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
      raise ValueError(f"mesh must be a 1-D jax.sharding.Mesh, got {mesh!r}")
    axis = mesh.axis_names[0]
    n_dev = mesh.shape[axis]
    per_dev = C.round_up(C.round_up(n, n_dev) // n_dev, block)
    n_pad = per_dev * n_dev
    valid = jnp.arange(n_pad) < n
    sh = jax.sharding.NamedSharding(mesh, P(axis))
    bank_s = jax.device_put(C.pad_rows(bj, n_pad), sh)
    valid_s = jax.device_put(valid, sh)
    qp = jax.device_put(qp, jax.sharding.NamedSharding(mesh, P()))
    fn = _knn_sharded_fn(mesh, axis, k, block, query_block, bool(squared))
    d, i = fn(qp, bank_s, valid_s)
  out = KNNResult(d[:nq], i[:nq])
  if verbose:
    jax.block_until_ready(out)
    _progress.log("knn: Q=%d N=%d D=%d k=%d, %.2fs", nq, n, qj.shape[1], k, time.perf_counter() - t0)
  return out
