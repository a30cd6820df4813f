"""Weighted Gaussian mixture models fitted by EM in log space, blocked over points.

Each EM iteration makes two passes over the data in blocks of ``block`` rows: the E-step
(log-densities, ``logsumexp`` normalisation, responsibilities ``[N, k]`` kept for the M-step,
per-component weighted counts and means) and the covariance pass (centred per component, so no
``E[x^2] - E[x]^2`` cancellation in float32). Memory beyond the data is ``O(N k + block k D)``
(diagonal) or ``O(N k + block D + k D^2)`` (full).

Full covariances (both passes cost ``O(N k D^2)``, matrix-product bound): a loop over components
(``lax.map``) around a loop over row blocks, so every product is a plain 2-D matrix product of a
centred ``[block, D]`` slab (faster than a batched ``[k]`` product on XLA:CPU), and both passes
skip the structural zeros / duplicates in column blocks of about ``_TRI_WIDTH`` columns: the
E-step's ``(x - mu) U`` with ``U`` upper triangular only multiplies the rows ``<= j`` into column
block ``j``, and the M-step computes only the lower block triangle of the symmetric covariance and
mirrors it (4 blocks at D = 1536: 62.5% of the multiply-adds of the dense products).

References:
  Dempster, Laird & Rubin, "Maximum likelihood from incomplete data via the EM algorithm", 1977.
  Bishop, "Pattern Recognition and Machine Learning", 2006, Sec. 9.2 (Eqs. 9.23-9.28).
  scikit-learn ``GaussianMixture`` (init from one k-means run, ``reg_covar`` added to the diagonal,
  convergence on the change of the mean log-likelihood).
  SMCC (IEEE TIM 2023), Eqs. (1)-(3): GMM fitted on the weighted centre set.
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
from jaxad.cluster.kmeans import _validate_k, assign_blocked, kmeans_core, kmeans_plusplus_core

__all__ = ["GMMParams", "GMMResult", "gmm_em", "gmm_em_core", "log_prob", "log_prob_core"]

_HI = jax.lax.Precision.HIGHEST


class GMMParams(NamedTuple):
  """Parameters of a Gaussian mixture.

  Attributes:
    means: ``[k, D]`` float32 component means.
    covariances: ``[k, D]`` variances (``'diag'``) or ``[k, D, D]`` covariance matrices (``'full'``),
      ``reg_covar`` already added to the diagonal.
    weights: ``[k]`` mixture weights in ``[0, 1]``, summing to 1.
  """
  means: jax.Array
  covariances: jax.Array
  weights: jax.Array


class GMMResult(NamedTuple):
  """Result of :func:`gmm_em`.

  Attributes:
    params: fitted :class:`GMMParams`.
    log_likelihood: scalar, weighted mean log-likelihood ``sum_i w_i log p(x_i) / sum_i w_i`` of the
      training data under the final ``params`` (comparable to scikit-learn's ``score``).
    n_iter: scalar int32, EM iterations run.
    converged: scalar bool, whether the change of the mean log-likelihood fell below ``tol``.
  """
  params: GMMParams
  log_likelihood: jax.Array
  n_iter: jax.Array
  converged: jax.Array


def _precision_factors(params: GMMParams):
  """Returns ``(prec, log_det_half)``: inverse variances / inverse Cholesky factors and 0.5 log|P|."""
  cov = params.covariances
  if cov.ndim == 2:
    prec = 1.0 / cov
    return prec, 0.5 * jnp.sum(jnp.log(prec), axis=1)
  chol = jnp.linalg.cholesky(cov)  # [k, D, D] lower
  d = cov.shape[-1]
  eye = jnp.broadcast_to(jnp.eye(d, dtype=cov.dtype), cov.shape)
  inv_l = jax.lax.linalg.triangular_solve(chol, eye, left_side=True, lower=True)  # L^-1
  prec_chol = jnp.swapaxes(inv_l, -1, -2)  # upper, P = U U^T
  log_det_half = -jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
  return prec_chol, log_det_half


# Columns per block of the block-triangular products of the full-covariance passes (rounded to
# a multiple of 8; see _col_blocks). 384 -> 4 blocks at D = 1536 (62.5% of the dense work);
# narrower blocks skip more zeros but make smaller, less efficient matrix products.
_TRI_WIDTH = 384


def _col_blocks(d: int, width: int = _TRI_WIDTH) -> tuple[tuple[int, int], ...]:
  """Static column blocks ``[s, e)`` covering ``range(d)``, ~``width`` wide (multiples of 8)."""
  nb = max(1, round(d / width))
  size = C.round_up(-(-d // nb), 8)
  return tuple((s, min(d, s + size)) for s in range(0, d, size))


def _maha_full(xb: jax.Array, means: jax.Array, prec_chol: jax.Array,
               width: int = _TRI_WIDTH) -> jax.Array:
  """Squared Mahalanobis distances ``||(x - mu_j) U_j||^2`` -> ``[nb, B, k]``.

  Args:
    xb: ``[nb, B, D]`` row blocks.
    means: ``[k, D]``.
    prec_chol: ``[k, D, D]`` upper triangular ``U_j`` with ``P_j = U_j U_j^T``.
    width: column block width; column block ``[s, e)`` of ``(x - mu) U`` needs only rows ``< e``
      of ``U`` (the rest are structural zeros).
  """
  cols = _col_blocks(xb.shape[-1], width)

  def component(args):
    mu, u = args

    def one(x1):
      diff = x1 - mu  # [B, D]
      out = jnp.zeros(x1.shape[:1], x1.dtype)
      for s, e in cols:
        y = jnp.matmul(diff[:, :e], u[:e, s:e], precision=_HI)
        out = out + jnp.sum(jnp.square(y), axis=1)
      return out

    return jax.lax.map(one, xb)  # [nb, B]

  return jnp.moveaxis(jax.lax.map(component, (means, prec_chol)), 0, -1)


def _cov_full(xb: jax.Array, rwb: jax.Array, means: jax.Array,
              width: int = _TRI_WIDTH) -> jax.Array:
  """Weighted scatter matrices ``sum_i rw_ij (x_i - mu_j)(x_i - mu_j)^T`` -> ``[k, D, D]``.

  Args:
    xb: ``[nb, B, D]`` row blocks.
    rwb: ``[nb, B, k]`` weighted responsibilities.
    means: ``[k, D]``.
    width: column block width; only the block lower triangle (row block ``[s, e)`` times
      columns ``< e``) is computed, the strict upper blocks are mirrored and the diagonal blocks
      symmetrised.
  """
  d = xb.shape[-1]
  cols = _col_blocks(d, width)
  block_id = [i for i, (s, e) in enumerate(cols) for _ in range(s, e)]
  row_b = jnp.asarray(block_id)[:, None]
  col_b = jnp.asarray(block_id)[None, :]

  def component(args):
    mu, r = args  # [D], [nb, B]

    def one(acc, inp):
      x1, r1 = inp
      diff = x1 - mu
      rd = diff * r1[:, None]
      return tuple(a + jnp.matmul(rd[:, s:e].T, diff[:, :e], precision=_HI)
                   for a, (s, e) in zip(acc, cols)), None

    acc0 = tuple(jnp.zeros((e - s, e), xb.dtype) for s, e in cols)
    acc, _ = jax.lax.scan(one, acc0, (xb, r))
    low = jnp.concatenate([jnp.pad(a, ((0, 0), (0, d - a.shape[1]))) for a in acc], axis=0)
    return jnp.where(row_b > col_b, low, jnp.where(row_b < col_b, low.T, 0.5 * (low + low.T)))

  return jax.lax.map(component, (means, jnp.moveaxis(rwb, -1, 0)))


def _weighted_log_prob(xb: jax.Array, params: GMMParams, factors) -> jax.Array:
  """``log w_j + log N(x | mu_j, Sigma_j)`` for row blocks ``xb [nb, B, D]`` -> ``[nb, B, k]``."""
  prec, log_det_half = factors
  d = xb.shape[-1]
  if params.covariances.ndim == 2:
    def one(x1):
      diff = x1[:, None, :] - params.means[None]  # [B, k, D]
      return jnp.sum(jnp.square(diff) * prec[None], axis=-1)
    maha = jax.lax.map(one, xb)
  else:
    maha = _maha_full(xb, params.means, prec)
  logp = -0.5 * (d * math.log(2 * math.pi) + maha) + log_det_half
  return logp + jnp.log(params.weights)


def log_prob_core(params: GMMParams, x: jax.Array, block: int) -> jax.Array:
  """Jit-able ``log p(x)`` of a mixture for ``x [N_pad, D]`` with ``N_pad % block == 0`` -> ``[N_pad]``."""
  n_pad, d = x.shape
  wlp = _weighted_log_prob(x.reshape(n_pad // block, block, d), params, _precision_factors(params))
  return jax.nn.logsumexp(wlp, axis=-1).reshape(-1)


_log_prob_jit = jax.jit(log_prob_core, static_argnames=("block",))


def _default_gmm_block(n: int, k: int, d: int, full: bool) -> int:
  # Diagonal: a [block, k, D] temporary. Full: [block, D] slabs per component (the [k, D, D]
  # matrices dominate the memory), so larger blocks, which make more efficient matrix products
  # and fewer updates of the [D, D] accumulators.
  per_row = 3 * d if full else k * d
  return C.default_block(n, per_row, budget=1 << 23)


def log_prob(params: GMMParams, x: Any, *, block: int | None = None) -> jax.Array:
  """Log-density of each point under a Gaussian mixture.

  Args:
    params: :class:`GMMParams` (diag ``[k, D]`` or full ``[k, D, D]`` covariances).
    x: ``[N, D]`` finite points.
    block: rows per block (memory ``O(block * k * D)`` diagonal, ``O(block * D)`` full); default
      ~32 MiB of temporaries per block.

  Returns:
    ``[N]`` float32 ``log p(x_i) = logsumexp_j (log w_j + log N(x_i | mu_j, Sigma_j))``.

  References:
    Bishop 2006, Eq. 9.7; SMCC Eq. (1).
  """
  xj = C.as_points(x, "x")
  n, d = xj.shape
  means = jnp.asarray(params.means, jnp.float32)
  if means.ndim != 2 or means.shape[1] != d:
    raise ValueError(f"params.means must have shape [k, {d}] to match x [N, {d}], got {means.shape}")
  k = means.shape[0]
  cov = jnp.asarray(params.covariances, jnp.float32)
  if cov.shape not in ((k, d), (k, d, d)):
    raise ValueError(f"params.covariances must have shape [{k}, {d}] or [{k}, {d}, {d}], got {cov.shape}")
  wts = jnp.asarray(params.weights, jnp.float32)
  if wts.shape != (k,):
    raise ValueError(f"params.weights must have shape [{k}], got {wts.shape}")
  block = _default_gmm_block(n, k, d, cov.ndim == 3) if block is None else C.check_positive_int(block, "block")
  n_pad = C.round_up(n, block)
  out = _log_prob_jit(GMMParams(means, cov, wts), C.pad_rows(xj, n_pad), block=block)
  return out[:n]


def _m_step(xb, wb, resp_b, reg_covar, full: bool):
  """M-step from responsibilities ``resp_b [nb, B, k]`` (two blocked passes)."""
  k = resp_b.shape[-1]
  d = xb.shape[-1]
  eps = 10 * jnp.finfo(jnp.float32).eps

  def pass1(carry, inp):
    nk, sx = carry
    x1, w1, r1 = inp
    rw = r1 * w1[:, None]
    return (nk + rw.sum(0), sx + jnp.matmul(rw.T, x1, precision=_HI)), None

  (nk, sx), _ = jax.lax.scan(pass1, (jnp.zeros((k,)), jnp.zeros((k, d))), (xb, wb, resp_b))
  nk = nk + eps
  means = sx / nk[:, None]

  if full:
    acc = _cov_full(xb, resp_b * wb[..., None], means)
  else:
    def pass2(acc, inp):
      x1, w1, r1 = inp
      rw = r1 * w1[:, None]
      diff = x1[:, None, :] - means[None]  # [B, k, D]
      return acc + jnp.einsum("bk,bkd->kd", rw, jnp.square(diff), precision=_HI), None

    acc, _ = jax.lax.scan(pass2, jnp.zeros((k, d)), (xb, wb, resp_b))
  cov = acc / nk.reshape((k,) + (1,) * (acc.ndim - 1))
  cov = cov + reg_covar * (jnp.eye(d)[None] if full else 1.0)
  weights = nk / jnp.sum(nk)
  return GMMParams(means, cov, weights)


def _e_step(xb, wb, params):
  """Responsibilities ``[nb, B, k]`` and the weighted mean log-likelihood."""
  wlp = _weighted_log_prob(xb, params, _precision_factors(params))  # [nb, B, k]
  lse = jax.nn.logsumexp(wlp, axis=-1)
  return jnp.exp(wlp - lse[..., None]), jnp.sum(lse * wb) / jnp.sum(wb)


@functools.partial(jax.jit, static_argnames=("k", "full", "max_iter", "block", "n_valid",
                                             "kmeans_iter"))
def gmm_em_core(key: jax.Array, x: jax.Array, w: jax.Array, reg_covar: float, tol: float, *,
                k: int, full: bool, max_iter: int, block: int, n_valid: int,
                kmeans_iter: int = 100, init: GMMParams | None = None) -> GMMResult:
  """Jitted weighted EM on padded data (no validation; for use inside other jitted code).

  Args:
    key: PRNG key (k-means initialisation; unused when ``init`` is given).
    x: ``[N_pad, D]`` float32, ``N_pad % block == 0``, rows ``>= n_valid`` are padding.
    w: ``[N_pad]`` weights >= 0 (0 for padding).
    reg_covar: non-negative value added to the covariance diagonals.
    tol: convergence threshold on the change of the weighted mean log-likelihood.
    k, full, max_iter, block, n_valid, kmeans_iter: static.
    init: optional starting :class:`GMMParams` (means ``[k, D]``, covariances ``[k, D]`` or
      ``[k, D, D]`` used as given, weights ``[k]`` summing to 1): the first E-step uses them
      directly (scikit-learn's ``means_init``/``weights_init``/``precisions_init``); default: the
      M-step of one k-means run's hard assignments.

  Returns:
    :class:`GMMResult`.
  """
  n_pad, d = x.shape
  nb = n_pad // block
  xb = x.reshape(nb, block, d)
  wb = w.reshape(nb, block)
  if init is None:
    km = kmeans_core(key, x, w, 1e-4, k=k, max_iter=kmeans_iter, block=block,
                     n_local_trials=2 + int(math.log(k)), n_valid=n_valid)
    resp0 = jax.nn.one_hot(km.assignments, k, dtype=jnp.float32).reshape(nb, block, k)
    params0 = _m_step(xb, wb, resp0, reg_covar, full)
  else:
    params0 = GMMParams(*(jnp.asarray(a, jnp.float32) for a in init))

  def cond(carry):
    _, _, it, conv = carry
    return jnp.logical_and(it < max_iter, jnp.logical_not(conv))

  def body(carry):
    params, lb_prev, it, _ = carry
    resp, lb = _e_step(xb, wb, params)
    params = _m_step(xb, wb, resp, reg_covar, full)
    conv = jnp.abs(lb - lb_prev) < tol
    return params, lb, it + 1, conv

  carry = (params0, jnp.float32(-jnp.inf), jnp.int32(0), jnp.bool_(False))
  params, _, n_iter, conv = jax.lax.while_loop(cond, body, carry)
  _, ll = _e_step(xb, wb, params)
  return GMMResult(params, ll, n_iter, conv)


def _validate_init(init: Any, k: int, d: int, full: bool) -> GMMParams:
  """Checks a starting :class:`GMMParams` for ``k`` components in ``d`` dims; normalises weights."""
  try:
    means, cov, wts = (jnp.asarray(a, jnp.float32) for a in init)
  except (TypeError, ValueError):
    raise TypeError("init must be a GMMParams(means, covariances, weights)") from None
  cov_shape = (k, d, d) if full else (k, d)
  for name, a, shape in (("means", means, (k, d)), ("covariances", cov, cov_shape),
                         ("weights", wts, (k,))):
    if a.shape != shape:
      raise ValueError(f"init.{name} must have shape {list(shape)}, got {list(a.shape)}")
    if not bool(jnp.all(jnp.isfinite(a))):
      raise ValueError(f"init.{name} must be finite")
  if not bool(jnp.all(wts > 0)):
    raise ValueError("init.weights must be > 0")
  diag = jnp.diagonal(cov, axis1=-2, axis2=-1) if full else cov
  if not bool(jnp.all(diag > 0)):
    raise ValueError("init.covariances must have a positive diagonal")
  return GMMParams(means, cov, wts / jnp.sum(wts))


def gmm_em(key: jax.Array, x: Any, k: int, *, weights: Any = None, covariance: str = "diag",
           reg_covar: float = 1e-6, max_iter: int = 100, tol: float = 1e-3,
           block: int | None = None, init: GMMParams | None = None,
           verbose: bool = True) -> GMMResult:
  """Fits a weighted Gaussian mixture by EM (k-means init, log-space E-step), jitted.

  Args:
    key: PRNG key; the same key gives identical results.
    x: ``[N, D]`` finite points (cast to float32).
    k: number of components, ``1 <= k <= N``.
    weights: optional ``[N]`` point weights >= 0 (e.g. ``sensitivity_coreset(...).weights``).
    covariance: ``'diag'`` (``[k, D]`` variances) or ``'full'`` (``[k, D, D]``).
    reg_covar: >= 0 added to the covariance diagonals (scikit-learn default 1e-6; raise it for
      high-dimensional, low-rank features, e.g. 1e-3 relative to the feature scale).
    max_iter: maximum EM iterations (>= 1).
    tol: stop when the weighted mean log-likelihood changes by less than ``tol``.
    block: rows per block; default keeps the per-block temporaries (``[block, k, D]`` diagonal,
      a few ``[block, D]`` full) near 32 MiB.
    init: optional starting :class:`GMMParams` instead of the k-means initialisation: means
      ``[k, D]``, covariances ``[k, D]`` (diag) / ``[k, D, D]`` (full, symmetric positive
      definite) used as given in the first E-step, weights ``[k]`` > 0 (normalised to sum 1).
      Same role as scikit-learn's ``means_init``/``weights_init``/``precisions_init`` (pass
      ``precisions_init = inv(covariances)``), so both libraries can start from one point.
    verbose: log one line with the wall time after the jitted loop.

  Returns:
    :class:`GMMResult` ``(params, log_likelihood, n_iter, converged)``.

  Raises:
    ValueError/TypeError: bad shapes, NaN/inf, ``k > N``, unknown ``covariance``, bad weights,
      bad ``init`` shapes or values.

  References:
    Dempster et al. 1977; Bishop 2006 Sec. 9.2; SMCC (IEEE TIM 2023) Eqs. (1)-(3).
  """
  key = C.check_key(key)
  xj = C.as_points(x, "x")
  n, d = xj.shape
  k = _validate_k(k, n)
  if covariance not in ("diag", "full"):
    raise ValueError(f"covariance must be 'diag' or 'full', got {covariance!r}")
  if not (reg_covar >= 0):
    raise ValueError(f"reg_covar must be >= 0, got {reg_covar}")
  if not (tol >= 0):
    raise ValueError(f"tol must be >= 0, got {tol}")
  max_iter = C.check_positive_int(max_iter, "max_iter")
  w = C.as_weights(weights, n)
  if weights is not None and int(jnp.sum(w > 0)) < k:
    raise ValueError(f"k={k} is larger than the number of points with positive weight "
                     f"({int(jnp.sum(w > 0))})")
  full = covariance == "full"
  if init is not None:
    init = _validate_init(init, k, d, full)
  block = _default_gmm_block(n, k, d, full) if block is None else C.check_positive_int(block, "block")
  n_pad = C.round_up(n, block)
  t0 = time.perf_counter()
  res = gmm_em_core(key, C.pad_rows(xj, n_pad), C.pad_rows(w, n_pad), float(reg_covar), float(tol),
                    k=k, full=full, max_iter=max_iter, block=block, n_valid=n, init=init)
  if verbose:
    jax.block_until_ready(res)
    _progress.log("gmm_em(%s): N=%d D=%d k=%d, %d EM iterations, mean log-lik %.6g, %.2fs",
                  covariance, n, d, k, int(res.n_iter), float(res.log_likelihood),
                  time.perf_counter() - t0)
  return res
