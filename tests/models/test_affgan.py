"""AFF-GAN (jaxad.models.affgan): U-Net shapes and fusion switch, Table-3 states, the joint step
through the engine (deterministic, both networks trained), test-set-wide scores, sharded == single.

The engine tests share one tiny config and run length, so the step compiles once per process.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxad import augment
from jaxad.models import affgan
from jaxad.train import loop
from jaxad.train.mesh import to_host
from jaxad.train.predict import predict_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_helpers import assert_gan_four_devices_match, images, leaves  # noqa: E402

CFG = affgan.Config(image_size=32, base_features=4, max_features=16, disc_base_features=4)
DATA = images(8, seed=4)


def _fit(seed: int = 0, **kw):
  return loop.fit("affgan", CFG, DATA, seed=seed, epochs=1, batch_size=4, show_progress=False, **kw)


@pytest.fixture(scope="module")
def trained():
  return _fit()


@pytest.mark.parametrize("size", [32, 64, 256])
@pytest.mark.parametrize("fusion", affgan.FUSIONS)
def test_unet_shapes_and_fusion(size, fusion):
  cfg = affgan.Config(image_size=size, base_features=4, max_features=32, fusion=fusion)
  x = jnp.zeros((2, size, size, 3), jnp.float32)
  y, v = jax.eval_shape(lambda: affgan.SkipUNet(cfg).init_with_output(jax.random.key(0), x))
  assert y.shape == x.shape
  p = v["params"]
  n = size.bit_length() - 1  # log2(S) levels down to 1x1 (pix2pix num_downs)
  assert len(affgan.unet_widths(cfg)) == n and len([k for k in p if k.startswith("down") and "_" not in k]) == n
  assert len([k for k in p if k.startswith("aff")]) == (n - 1 if fusion == "aff" else 0)
  # The first decoder conv after a skip sees 2C channels when concatenated, C when fused.
  c0 = affgan.unet_widths(cfg)[0]
  assert p["up0"]["kernel"].shape[2] == {"aff": c0, "concat": 2 * c0, "none": c0}[fusion]


def test_table3_states():
  assert [(affgan.Config.state(i).fusion, affgan.Config.state(i).augmentation) for i in (1, 2, 3, 4)] == [
      ("concat", "none"), ("concat", "cut_paste"), ("aff", "none"), ("aff", "cut_paste")]
  with pytest.raises(ValueError, match="states"):
    affgan.Config.state(5)
  with pytest.raises(ValueError, match="fusion"):
    dataclasses.replace(CFG, fusion="sum")


def test_augmentation_switch(monkeypatch):
  calls = []
  monkeypatch.setattr(augment, "cut_paste", lambda k, x, **kw: calls.append(("cut_paste", kw)) or (x + 1, None))
  monkeypatch.setattr(augment, "random_erasing", lambda k, x, **kw: calls.append(("erase", kw)) or (x + 2, None))
  x = jnp.zeros((1, 32, 32, 3))
  assert float(affgan._augment(CFG, jax.random.key(0), x).mean()) == 1.0
  assert calls[-1] == ("cut_paste", dict(area_ratio=(0.02, 0.15), aspect_ratio=(0.3, 3.3), rotation=0.0, jitter=0.0))
  assert float(affgan._augment(dataclasses.replace(CFG, augmentation="random_erasing"), jax.random.key(0), x).mean()) == 2.0
  assert float(affgan._augment(dataclasses.replace(CFG, augmentation="none"), jax.random.key(0), x).mean()) == 0.0


def test_training_updates_both_networks_and_is_deterministic(trained):
  init = affgan.init(CFG, trained.run, loop.rng.stream(0, loop.rng.INIT), {"image": DATA[:4]})
  state = to_host(trained.state)
  assert int(state.generator.step) == int(state.discriminator.step) == 2
  for net in ("generator", "discriminator"):
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(getattr(init, net).params),
                                                        leaves(getattr(state, net).params)))
  for r in trained.history:
    assert np.isclose(r["loss_g"], r["adv"] + 40 * r["rec"] + r["lat"], rtol=1e-5)
  for a, b in zip(leaves(trained.state), leaves(_fit().state)):
    np.testing.assert_array_equal(a, b)


def test_scores_are_min_maxed_over_the_whole_test_set(trained):
  x = images(6, seed=8)
  s2, m2 = predict_dataset("affgan", CFG, trained.state, x, batch_size=2)
  s6, m6 = predict_dataset("affgan", CFG, trained.state, x, batch_size=6)
  np.testing.assert_allclose(s2, s6, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(m2, m6, rtol=1e-5, atol=1e-7)
  raw, _ = jax.jit(affgan.predict, static_argnums=0)(CFG, trained.state, jnp.asarray(x))
  recon = np.asarray(jax.jit(affgan.reconstruct, static_argnums=0)(CFG, trained.state, jnp.asarray(x)))
  np.testing.assert_allclose(raw["rec"], np.abs(x - recon).mean(axis=(1, 2, 3)), rtol=1e-5)
  a = 0.9 * np.asarray(raw["rec"], np.float64) + 0.1 * np.asarray(raw["lat"], np.float64)
  np.testing.assert_allclose(s6, (a - a.min()) / (a.max() - a.min()), rtol=1e-5, atol=1e-6)


# slow: a 4-device subprocess compile; the toy GAN of tests/train/test_protocol.py checks the engine's
# two-optimiser GAN step on 1 and 4 devices in the default suite.
@pytest.mark.slow
def test_sharded_over_four_devices_equals_one_device(trained):
  assert_gan_four_devices_match("affgan", "test_affgan", trained)
