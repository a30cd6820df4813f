"""SCGAN (jaxad.models.scgan): shapes, the joint G/D step through the engine, D re-initialisation,
test-set-wide score normalisation, sharded == single device.

Every engine test shares one tiny config and run length, so the step compiles once per process.
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
from jaxad.models import _gan, scgan
from jaxad.nn.gan import Discriminator
from jaxad.train import loop
from jaxad.train.mesh import make_mesh, to_host
from jaxad.train.predict import make_predict, predict_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_helpers import assert_gan_four_devices_match, images, leaves  # noqa: E402

CFG = scgan.Config(image_size=32, base_features=4, latent_dim=8, num_patches=4, patch_area=0.02)
DATA = images(8, seed=3)  # 2 steps per epoch at batch 4


def _fit(seed: int = 0, **kw):
  return loop.fit("scgan", CFG, DATA, seed=seed, epochs=1, batch_size=4, show_progress=False, **kw)


@pytest.fixture(scope="module")
def trained():
  return _fit()


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_generator_and_discriminator_shapes(size):
  cfg = scgan.Config(image_size=size, base_features=8, max_features=64, latent_dim=16)
  x = jnp.zeros((2, size, size, 3), jnp.float32)
  (y, z1, z2), v = jax.eval_shape(lambda: scgan.Generator(cfg).init_with_output(jax.random.key(0), x))
  assert y.shape == x.shape and z1.shape == z2.shape == (2, 16)
  n = size.bit_length() - 3  # blocks down to 4x4: 7 conv blocks (6 + latent) at 256, as the paper
  assert len([k for k in v["params"]["encoder1"] if k.startswith("block")]) == n
  assert len([k for k in v["params"]["encoder1"] if k.startswith("mscam")]) == n
  assert not any(k.startswith("mscam") for k in v["params"]["encoder2"])
  (logit, feat), _ = jax.eval_shape(lambda: Discriminator(scgan.widths(cfg)).init_with_output(
      jax.random.key(0), x))
  assert logit.shape == (2,) and feat.shape == (2, 4, 4, scgan.widths(cfg)[-1])


@pytest.mark.parametrize("field,value,match", [
    ("image_size", 48, "power of two"), ("augmentation", "mixup", "augmentation"),
    ("score_beta", 1.5, "score_beta"), ("encoder_loss", "l1", "encoder_loss"),
    ("channels", 2, "channels"), ("num_patches", -1, "num_patches")])
def test_config_rejects_bad_values(field, value, match):
  with pytest.raises(ValueError, match=match):
    dataclasses.replace(CFG, **{field: value})


def test_bad_images_are_rejected(trained):
  with pytest.raises(TypeError, match="float32"):
    scgan.init(CFG, loop.Run(), jax.random.key(0), {"image": DATA[:4].astype(np.float64)})
  with pytest.raises(ValueError, match="32, 32, 3"):
    scgan.predict(CFG, trained.state, jnp.zeros((2, 64, 64, 3), jnp.float32))


@pytest.mark.parametrize("kind", scgan.AUGMENTATIONS)
def test_augmentation_switch_calls_the_named_augmentation(kind, monkeypatch):
  calls = []
  for name in ("copy_paste", "cutout", "confetti"):
    monkeypatch.setattr(augment, name, lambda key, x, _n=name, **kw: calls.append((_n, kw)) or (x + 1, None))
  x = jnp.zeros((2, 32, 32, 3))
  got = scgan._augment(dataclasses.replace(CFG, augmentation=kind), jax.random.key(5), x)
  want = {"none": [],
          "copy_paste": [("copy_paste", dict(num_patches=4, area_ratio=0.02, jitter=0.0))],
          "copy_paste_jitter": [("copy_paste", dict(num_patches=4, area_ratio=0.02, jitter=0.1))],
          "cutout": [("cutout", dict(num_patches=4, area_ratio=0.02, fill="black"))],
          "cutout_color": [("cutout", dict(num_patches=4, area_ratio=0.02, fill="random"))],
          "confetti": [("confetti", dict(num_patches=4))]}[kind]
  assert calls == want
  assert float(got.mean()) == (0.0 if kind == "none" else 1.0)


def test_training_updates_both_networks_and_is_deterministic(trained):
  init = scgan.init(CFG, trained.run, loop.rng.stream(0, loop.rng.INIT), {"image": DATA[:4]})
  state = to_host(trained.state)
  assert int(state.step) == int(state.generator.step) == int(state.discriminator.step) == 2
  for net in ("generator", "discriminator"):
    before, after = leaves(getattr(init, net).params), leaves(getattr(state, net).params)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
  h = trained.history
  assert [r["step"] for r in h] == [1, 2]
  assert {"loss_g", "enc", "con", "adv", "ssim_loss", "loss_d", "d_reinit"} <= set(h[0])
  for r in h:
    total = r["enc"] + 40 * r["con"] + r["adv"] + 40 * r["ssim_loss"]
    assert np.isclose(r["loss_g"], total, rtol=1e-5) and r["d_reinit"] == 0.0
  again = _fit()
  for a, b in zip(leaves(trained.state), leaves(again.state)):
    np.testing.assert_array_equal(a, b)
  other = _fit(seed=1)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(trained.state), leaves(other.state)))


def test_discriminator_reinit_fires_only_below_the_threshold(trained):
  d = to_host(trained.state.discriminator)
  key = jax.random.key(9)
  reinit = jax.jit(scgan.reinit_discriminator, static_argnums=0)
  kept, fired = reinit(CFG, d, jnp.float32(1e-3), key)
  assert not bool(fired)
  for a, b in zip(leaves(kept), leaves(d)):
    np.testing.assert_array_equal(a, b)
  new, fired = reinit(CFG, d, jnp.float32(1e-6), key)  # below GANomaly's 1e-5
  assert bool(fired)
  fresh = _gan.net_variables(CFG, scgan._discriminator(CFG), key)
  for a, b in zip(leaves(new.params), leaves(fresh["params"])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(leaves(new.opt_state), leaves(d.opt_state)):  # Adam state kept, as GANomaly
    np.testing.assert_array_equal(a, b)
  off, fired = reinit(dataclasses.replace(CFG, d_reinit_threshold=0.0), d, jnp.float32(0.0), key)
  assert not bool(fired)


def test_scores_are_eq11_min_maxed_over_the_whole_test_set(trained):
  x = images(10, seed=7)
  x[3, 8:20, 8:20] = 1.0  # one image with a bright square
  raw, raw_maps = make_predict(scgan, make_mesh(1))(CFG, trained.state, jnp.asarray(x))
  assert raw["con"].shape == raw["enc"].shape == (10,) and raw_maps.shape == (10, 32, 32)
  s2, m2 = predict_dataset("scgan", CFG, trained.state, x, batch_size=2)
  s10, m10 = predict_dataset("scgan", CFG, trained.state, x, batch_size=10)
  np.testing.assert_allclose(s2, s10, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(m2, m10, rtol=1e-5, atol=1e-7)
  a = 0.8 * np.asarray(raw["con"], np.float64) + 0.2 * np.asarray(raw["enc"], np.float64)
  np.testing.assert_allclose(s10, (a - a.min()) / (a.max() - a.min()), rtol=1e-5, atol=1e-6)
  r = np.asarray(raw_maps)
  np.testing.assert_allclose(m10, (r - r.min()) / (r.max() - r.min()), rtol=1e-5, atol=1e-6)
  assert s10.min() == 0 and s10.max() == 1
  np.testing.assert_allclose(raw["map_max"], r.max(axis=(1, 2)), rtol=1e-6)
  s_max, _ = scgan.normalize(dataclasses.replace(CFG, image_score="map_max"),
                             jax.tree.map(np.asarray, raw), r)
  np.testing.assert_allclose(s_max, (raw["map_max"] - r.max(axis=(1, 2)).min()) / np.ptp(r.max(axis=(1, 2))),
                             rtol=1e-5, atol=1e-6)
  # Per-batch min-max (anomalib's GANomaly) would map every batch to [0, 1] and change the scores.
  per_batch = np.concatenate([(a[i:i + 2] - a[i:i + 2].min()) / np.ptp(a[i:i + 2]) for i in range(0, 10, 2)])
  assert not np.allclose(per_batch, s10, atol=1e-3)


# slow: a 4-device subprocess compile; the toy GAN of tests/train/test_protocol.py checks the engine's
# two-optimiser GAN step on 1 and 4 devices in the default suite.
@pytest.mark.slow
def test_sharded_over_four_devices_equals_one_device(trained):
  assert_gan_four_devices_match("scgan", "test_scgan", trained)
