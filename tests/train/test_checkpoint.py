"""Checkpointer: typed keys and GAN states survive a round trip; save schedule; errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxad.train.checkpoint import Checkpointer, from_saveable, to_saveable
from jaxad.train.state import GANState, TrainState


TX = optax.adam(1e-3)


def _net(seed: int) -> TrainState:
  params = {"w": jnp.arange(6.0).reshape(2, 3) + seed}
  return TrainState.create(params=params, tx=TX, key=jax.random.key(seed),
                           batch_stats={"mean": jnp.ones(3) * seed})


def test_gan_state_round_trip_with_typed_keys(tmp_path):
  state = GANState.create(key=jax.random.key(7), generator=_net(1), discriminator=_net(2))
  state = state.replace(step=jnp.asarray(5, jnp.int32),
                        generator=state.generator.apply_gradients(TX, {"w": jnp.ones((2, 3))}))
  saved = to_saveable(state)
  assert saved["key"].dtype == jnp.uint32  # keys are stored as key data
  back = from_saveable(state, saved)
  assert jax.dtypes.issubdtype(back.key.dtype, jax.dtypes.prng_key)
  with Checkpointer(tmp_path, save_every=5) as ckpt:
    assert not ckpt.save(3, state) and ckpt.save(5, state)
    ckpt.wait()
    template = GANState.create(key=jax.random.key(0), generator=_net(8), discriminator=_net(9))
    restored = ckpt.restore(template)
  np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(state.key))
  np.testing.assert_array_equal(jax.random.key_data(restored.discriminator.key),
                                jax.random.key_data(state.discriminator.key))
  np.testing.assert_array_equal(restored.generator.params["w"], state.generator.params["w"])
  np.testing.assert_array_equal(restored.generator.opt_state[0].mu["w"],
                                state.generator.opt_state[0].mu["w"])
  assert int(restored.step) == 5 and int(restored.generator.step) == 1


def test_restore_without_checkpoint_names_the_folder(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
      ckpt.restore(_net(0))
  with pytest.raises(ValueError, match="keep"):
    Checkpointer(tmp_path, keep=0)


def test_closed_loop_filter_drops_only_orbax_late_callbacks(capsys):
  import sys
  import types

  from jaxad.train import checkpoint
  previous = sys.unraisablehook
  seen = []
  sys.unraisablehook = lambda u: seen.append(u.exc_value)
  try:
    checkpoint._drop_closed_loop_callbacks()
    checkpoint._drop_closed_loop_callbacks()  # installed once
    late = types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"))
    other = types.SimpleNamespace(exc_value=RuntimeError("something else"))
    sys.unraisablehook(late)
    sys.unraisablehook(other)
    assert [str(e) for e in seen] == ["something else"]
  finally:
    sys.unraisablehook = previous
