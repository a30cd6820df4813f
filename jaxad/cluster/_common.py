"""Shared helpers for :mod:`jaxad.cluster`: validation, padding, blocked distances.

Squared Euclidean distances are computed as ``||a||^2 - 2 a.b + ||b||^2`` and clamped at 0.
In float32 the absolute error of one distance is about ``1e-7 * (||a||^2 + ||b||^2)``, so
distances that are small relative to the squared norms lose relative precision (centre the
data first when that matters; :func:`jaxad.cluster.greedy_coreset` does so internally).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["as_points", "as_weights", "check_key", "pad_rows", "sq_dists", "round_up"]


def check_key(key: Any, name: str = "key") -> jax.Array:
  """Checks that ``key`` is a JAX PRNG key (typed ``jax.random.key`` or legacy uint32[2])."""
  if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(f"{name} must be a single PRNG key (shape ()), got shape {key.shape}")
    return key
  arr = np.asarray(key) if not isinstance(key, jax.Array) else key
  if arr.dtype == np.uint32 and arr.shape == (2,):
    return jax.random.wrap_key_data(jnp.asarray(arr))
  raise TypeError(f"{name} must be a PRNG key from jax.random.key(seed), got {type(key).__name__} "
                  f"with dtype {getattr(arr, 'dtype', None)} and shape {getattr(arr, 'shape', None)}")


def as_points(x: Any, name: str = "x", min_rows: int = 1) -> jax.Array:
  """Validates a concrete ``[N, D]`` real array (finite, N >= min_rows) and returns it as float32."""
  if isinstance(x, jax.core.Tracer):
    raise TypeError(f"{name} must be a concrete array at this public entry point (use the *_core "
                    "function inside jit)")
  # Shape and dtype without np.asarray on a jax.Array (that would copy device memory to the host).
  arr = x if isinstance(x, (np.ndarray, jax.Array)) else np.asarray(x)
  if arr.ndim != 2:
    raise ValueError(f"{name} must have shape [N, D], got shape {arr.shape}")
  if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
    raise TypeError(f"{name} must be a real (float or int) array, got dtype {arr.dtype}")
  if arr.shape[0] < min_rows or arr.shape[1] < 1:
    raise ValueError(f"{name} must have at least {min_rows} rows and 1 column, got shape {arr.shape}")
  out = jnp.asarray(x, dtype=jnp.float32)
  if not bool(jnp.all(jnp.isfinite(out))):
    bad = int(jnp.sum(~jnp.isfinite(out)))
    raise ValueError(f"{name} must be finite (no NaN/inf, also after the cast to float32), "
                     f"got {bad} non-finite values")
  return out


def as_weights(weights: Any, n: int, name: str = "weights") -> jax.Array:
  """Validates optional per-point weights ``[N]`` (finite, >= 0, positive sum); ``None`` -> ones."""
  if weights is None:
    return jnp.ones((n,), jnp.float32)
  arr = np.asarray(weights)
  if arr.shape != (n,):
    raise ValueError(f"{name} must have shape [{n}] (one weight per point), got shape {arr.shape}")
  w = jnp.asarray(weights, jnp.float32)
  if not bool(jnp.all(jnp.isfinite(w))) or bool(jnp.any(w < 0)):
    raise ValueError(f"{name} must be finite and >= 0")
  if not float(jnp.sum(w)) > 0:
    raise ValueError(f"{name} must have a positive sum, got {float(jnp.sum(w))}")
  return w


def check_positive_int(value: Any, name: str) -> int:
  """Returns ``value`` as an int after checking it is an integer >= 1."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
  if value <= 0:
    raise ValueError(f"{name} must be >= 1, got {value}")
  return int(value)


def round_up(n: int, block: int) -> int:
  """Smallest multiple of ``block`` that is >= ``n``."""
  return int(math.ceil(n / block) * block)


def pad_rows(x: jax.Array, rows: int, value: float = 0.0) -> jax.Array:
  """Pads the first axis of ``x`` to ``rows`` with ``value`` (static shapes)."""
  extra = rows - x.shape[0]
  if extra == 0:
    return x
  pad = [(0, extra)] + [(0, 0)] * (x.ndim - 1)
  return jnp.pad(x, pad, constant_values=value)


def sq_dists(a: jax.Array, b: jax.Array, a_sq: jax.Array | None = None,
             b_sq: jax.Array | None = None) -> jax.Array:
  """Squared Euclidean distances ``[A, B]`` between rows of ``a [A, D]`` and ``b [B, D]``, >= 0.

  Uses ``||a||^2 - 2 a.b + ||b||^2`` (one matmul, highest precision) clamped at 0.
  """
  if a_sq is None:
    a_sq = jnp.sum(a * a, axis=-1)
  if b_sq is None:
    b_sq = jnp.sum(b * b, axis=-1)
  ab = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(a_sq[:, None] - 2.0 * ab + b_sq[None, :], 0.0)


def default_block(n: int, k: int, budget: int = 1 << 22) -> int:
  """A row block so that ``block * k`` floats stay near ``budget`` (16 MiB), at most ``n``."""
  block = max(64, min(8192, budget // max(k, 1)))
  block = 1 << int(math.floor(math.log2(block)))
  return max(1, min(block, round_up(n, 8)))
