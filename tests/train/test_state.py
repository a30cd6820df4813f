"""TrainState: a pytree of arrays that updates like an optax loop and folds keys by step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxad.train.state import TrainState, step_key


TX = optax.sgd(0.1)


def _state():
  params = {"w": jnp.arange(3.0)}
  return TrainState.create(params=params, tx=TX, key=jax.random.key(0))


def test_apply_gradients_matches_plain_optax():
  state = _state()
  grads = {"w": jnp.ones(3)}
  new = state.apply_gradients(TX, grads)
  np.testing.assert_allclose(new.params["w"], np.arange(3.0) - 0.1)
  assert int(new.step) == 1
  assert new.batch_stats == {}


def test_state_is_a_pytree_of_arrays_only():
  state = _state()
  leaves = jax.tree_util.tree_leaves(state)
  assert len(leaves) == 3  # step, w, key (sgd has an empty state)
  # No static fields: two states built separately have equal tree structures.
  assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(_state())
  out = jax.jit(lambda s: s.apply_gradients(TX, {"w": jnp.ones(3)}))(state)
  assert int(out.step) == 1


def test_step_key_depends_on_step_and_purpose():
  state = _state()
  k0 = jax.random.key_data(step_key(state))
  k1 = jax.random.key_data(step_key(state.replace(step=state.step + 1)))
  k0b = jax.random.key_data(step_key(state, purpose=1))
  assert not np.array_equal(k0, k1) and not np.array_equal(k0, k0b)
  np.testing.assert_array_equal(k0, jax.random.key_data(step_key(state)))
