"""Convolutional autoencoder baseline and the method registry."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxad import models
from jaxad.models import conv_ae
from jaxad.models.protocol import Run
from jaxad.train.state import step_key

CFG = conv_ae.Config(image_size=32, channels=3, features=(8, 16))
RUN = Run()


def _batch(n=8, seed=0, channels=3):
  rng = np.random.default_rng(seed)
  x = rng.random((n, 8, 8, channels), dtype=np.float32)
  return {"image": np.repeat(np.repeat(x, 4, 1), 4, 2), "valid": np.ones((n,), bool)}


def test_config_validation():
  with pytest.raises(ValueError, match="channels"):
    conv_ae.Config(channels=2)
  with pytest.raises(ValueError, match="image_size"):
    conv_ae.Config(image_size=36, features=(8, 16, 32))
  with pytest.raises(ValueError, match="learning_rate"):
    conv_ae.Config(learning_rate=0.0)
  with pytest.raises(dataclasses.FrozenInstanceError):
    CFG.channels = 1  # type: ignore[misc]


def test_init_shapes_and_input_validation():
  state = conv_ae.init(CFG, RUN, jax.random.key(0), _batch())
  assert state.params["Conv_0"]["kernel"].shape == (3, 3, 3, 8)
  assert state.batch_stats["BatchNorm_0"]["mean"].shape == (8,)
  assert int(state.step) == 0
  with pytest.raises(ValueError, match=r"\[B, 32, 32, 3\]"):
    conv_ae.init(CFG, RUN, jax.random.key(0), _batch(channels=1))
  with pytest.raises(TypeError, match="float32"):
    conv_ae.init(CFG, RUN, jax.random.key(0), {"image": np.zeros((1, 32, 32, 3), np.float64)})


def test_flat_init_matches_lecun_normal_statistics():
  shape = (3, 3, 16, 64)
  ours = np.asarray(conv_ae.flat_lecun_normal(jax.random.key(1), shape))
  ref = np.asarray(nn.initializers.lecun_normal()(jax.random.key(2), shape))
  assert ours.shape == shape
  np.testing.assert_allclose(ours.std(), ref.std(), rtol=0.05)
  np.testing.assert_allclose(ours.std(), np.sqrt(1 / (3 * 3 * 16)), rtol=0.05)
  assert np.abs(ours).max() <= 2 * np.sqrt(1 / (3 * 3 * 16)) / 0.8796 + 1e-6  # truncated at 2 sigma


def test_predict_is_squared_residual_and_max_score():
  state = conv_ae.init(CFG, RUN, jax.random.key(0), _batch())
  x = _batch(5, seed=3)["image"]
  scores, maps = conv_ae.predict(CFG, state, x)
  recon = np.asarray(conv_ae.reconstruct(CFG, state, x))
  ref_maps = ((x.astype(np.float64) - recon) ** 2).mean(-1)
  assert maps.shape == (5, 32, 32) and scores.shape == (5,)
  np.testing.assert_allclose(np.asarray(maps), ref_maps, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(scores), ref_maps.max(axis=(1, 2)), rtol=1e-5)
  assert 0.0 <= recon.min() and recon.max() <= 1.0


def test_train_step_lowers_loss_and_masks_invalid_rows():
  cfg = dataclasses.replace(CFG, batch_norm=False, learning_rate=1e-2)
  state = conv_ae.init(cfg, RUN, jax.random.key(0), _batch())
  step = jax.jit(lambda s, b: conv_ae.train_step(cfg, RUN, s, b, step_key(s)))
  batch = _batch()
  first = None
  for _ in range(15):
    state, m = step(state, batch)
    first = float(m["loss"]) if first is None else first
  assert float(m["loss"]) < 0.7 * first and int(state.step) == 15
  # Padding rows (valid=False) do not change the loss (no BatchNorm here); same shapes, one compile.
  valid = np.arange(8) < 6
  ones = {"image": batch["image"].copy(), "valid": valid}
  ones["image"][6:] = 1.0
  zeros = {"image": batch["image"].copy(), "valid": valid}
  zeros["image"][6:] = 0.0
  _, m_ones = step(state, ones)
  _, m_zeros = step(state, zeros)
  _, m_all = step(state, {"image": ones["image"], "valid": np.ones((8,), bool)})
  np.testing.assert_allclose(float(m_ones["loss"]), float(m_zeros["loss"]), rtol=1e-6)
  assert abs(float(m_all["loss"]) - float(m_ones["loss"])) > 1e-4


def test_noise_uses_the_step_key():
  cfg = dataclasses.replace(CFG, noise_std=0.1)
  state = conv_ae.init(cfg, RUN, jax.random.key(0), _batch())
  x = _batch()["image"]
  model = conv_ae._model(cfg)
  fwd = jax.jit(lambda k: model.apply(state.variables(), x, train=True, noise_key=k,
                                      mutable=["batch_stats"])[0])
  a, b, c = fwd(jax.random.key(1)), fwd(jax.random.key(1)), fwd(jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a), np.asarray(c))
  with pytest.raises(ValueError, match="noise_key"):
    model.apply(state.variables(), x, train=True, mutable=["batch_stats"])


def test_registry():
  assert {"conv_ae", "ramfae"} <= set(models.names())
  assert models.get("conv_ae") is conv_ae
  with pytest.raises(ValueError, match="registered methods: .*conv_ae"):
    models.get("nope")
  models.register("_broken_for_test", "jaxad.models._does_not_exist")
  with pytest.raises(ImportError, match="_broken_for_test.*cannot be imported"):
    models.get("_broken_for_test")
  with pytest.raises(ValueError, match="already registered"):
    models.register("conv_ae", "somewhere.else")
