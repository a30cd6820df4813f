"""Train states: pytrees of arrays only (no functions, no configs).

A :class:`TrainState` holds one network's parameters, BatchNorm statistics,
optimiser state, the step counter and the run's base PRNG key. The optax
transformation and the Flax module are *not* part of it: a method rebuilds them
from its (static) config inside ``train_step``, so states of equal configs have
equal tree structures and share compilations.

Randomness: the engine gives step ``s`` the key ``fold_in(fold_in(state.key, s), 0)``
(:func:`step_key`), so a resumed run draws exactly the same numbers as an
uninterrupted one.

GANs keep one :class:`TrainState` per network inside :class:`GANState`, which
has its own ``step`` and ``key`` so the engine treats every method alike.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

__all__ = ["TrainState", "GANState", "step_key", "is_prng_key"]

PyTree = Any


class TrainState(struct.PyTreeNode):
  """Parameters, batch statistics, optimiser state, step and base PRNG key (arrays only).

  Attributes:
    step: int32 scalar, number of updates applied so far.
    params: the trainable Flax variables (``variables["params"]``).
    batch_stats: BatchNorm running statistics (``{}`` when the model has none).
    opt_state: the optax optimiser state for ``params``.
    key: the run's base PRNG key (typed key, ``jax.random.key``).
  """

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  key: jax.Array

  @classmethod
  def create(cls, *, params: PyTree, tx: optax.GradientTransformation, key: jax.Array,
             batch_stats: PyTree | None = None) -> "TrainState":
    """A state at step 0 whose optimiser state is ``tx.init(params)``."""
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats={} if batch_stats is None else batch_stats,
               opt_state=tx.init(params), key=key)

  def variables(self) -> dict[str, PyTree]:
    """``{"params": ..., "batch_stats": ...}`` ready for a Flax ``apply``."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}

  def apply_gradients(self, tx: optax.GradientTransformation, grads: PyTree,
                      batch_stats: PyTree | None = None) -> "TrainState":
    """One update with ``tx`` (the same transformation ``create`` got); optionally new statistics."""
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state,
                        batch_stats=self.batch_stats if batch_stats is None else batch_stats)


class GANState(struct.PyTreeNode):
  """A GAN's state: one :class:`TrainState` per network plus the shared step and key.

  Attributes:
    step: int32 scalar, number of (joint G+D) updates applied so far.
    key: the run's base PRNG key for per-step randomness.
    generator: the generator's train state.
    discriminator: the discriminator's train state.
  """

  step: jax.Array
  key: jax.Array
  generator: TrainState
  discriminator: TrainState

  @classmethod
  def create(cls, *, key: jax.Array, generator: TrainState,
             discriminator: TrainState) -> "GANState":
    """Builds a GAN state at step 0."""
    return cls(step=jnp.zeros((), jnp.int32), key=key, generator=generator,
               discriminator=discriminator)


def step_key(state: Any, purpose: int = 0) -> jax.Array:
  """The PRNG key of the current step: ``fold_in(fold_in(state.key, step), purpose)``.

  Args:
    state: any state with ``key`` (typed PRNG key) and ``step`` (int scalar).
    purpose: small integer separating streams used in the same step.
  Returns:
    A typed PRNG key, a pure function of (base key, step, purpose).
  """
  return jax.random.fold_in(jax.random.fold_in(state.key, state.step), purpose)


def is_prng_key(x: Any) -> bool:
  """True for a typed PRNG key array (``jax.random.key``), e.g. a state's ``key`` leaf."""
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
