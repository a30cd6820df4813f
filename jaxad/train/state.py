"""Train state: everything a run needs to continue, as one pytree.

A :class:`TrainState` holds the parameters, the BatchNorm statistics, the
optimiser state, the step counter and the run's base PRNG key. It is a
``flax.struct`` dataclass, so it is a pytree (jit/shard/checkpoint it as a
whole) whose static fields (``apply_fn``, ``tx``) are not traced.

Randomness: ``key`` is the run's base key for per-step randomness; the engine
gives step ``s`` the key ``jax.random.fold_in(state.key, s)`` (see
:func:`step_key`), so a resumed run draws exactly the same numbers as an
uninterrupted one.

GANs keep one :class:`TrainState` for the generator and one for the
discriminator inside their own state dataclass, which also has ``step`` and
``key`` fields so the engine treats every method alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

__all__ = ["TrainState", "GANState", "step_key"]

PyTree = Any


class TrainState(struct.PyTreeNode):
  """Parameters, batch statistics, optimiser state, step and base PRNG key.

  Attributes:
    step: int32 scalar, number of updates applied so far.
    params: the trainable Flax variables (``variables["params"]``).
    batch_stats: BatchNorm running statistics (``{}`` when the model has none).
    opt_state: the optax optimiser state for ``params``.
    key: the run's base PRNG key (typed key, ``jax.random.key``).
    apply_fn: the model's ``apply`` (static, not part of the pytree).
    tx: the optax transformation (static, not part of the pytree).
  """

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  key: jax.Array
  apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @classmethod
  def create(cls, *, apply_fn: Callable[..., Any], params: PyTree,
             tx: optax.GradientTransformation, key: jax.Array,
             batch_stats: PyTree | None = None) -> "TrainState":
    """Builds a state at step 0 with a freshly initialised optimiser."""
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats={} if batch_stats is None else batch_stats,
               opt_state=tx.init(params), key=key, apply_fn=apply_fn, tx=tx)

  def variables(self) -> dict[str, PyTree]:
    """``{"params": ..., "batch_stats": ...}`` ready for ``apply_fn``."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}

  def apply_gradients(self, grads: PyTree, batch_stats: PyTree | None = None) -> "TrainState":
    """One optimiser update; optionally replaces the batch statistics."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state,
                        batch_stats=self.batch_stats if batch_stats is None else batch_stats)


class GANState(struct.PyTreeNode):
  """A GAN's state: one :class:`TrainState` per network plus the shared step and key.

  Each network's ``TrainState`` carries its own key (a key pair for G and D);
  ``step``/``key`` here are what the engine uses (:func:`step_key`).

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
    purpose: small integer separating streams used in the same step
      (e.g. 0 augmentation, 1 dropout).
  Returns:
    A typed PRNG key, a pure function of (base key, step, purpose).
  """
  return jax.random.fold_in(jax.random.fold_in(state.key, state.step), purpose)
