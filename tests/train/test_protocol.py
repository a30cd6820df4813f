"""A new method is one module: toy methods defined here train, resume and predict through the engine.

``toy`` is a one-parameter regressor with a run-length-dependent schedule; ``ToyGAN`` has two
networks with two optimisers updated in one step and a test-set-wide ``normalize``. Neither
touches the engine: each is registered with one ``models.register`` call.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conftest import run_jax_subprocess
from jaxad import data, losses, models
from jaxad.models.protocol import Run
from jaxad.train import loop
from jaxad.train.predict import predict_dataset
from jaxad.train.state import GANState, TrainState

from train_helpers import leaves

# ----------------------------------------------------------------------------- toy method

NAME = "toy"


@dataclasses.dataclass(frozen=True)
class Config:
  image_size: int = 8
  channels: int = 1
  learning_rate: float = 0.5


def _tx(config: Config, run: Run) -> optax.GradientTransformation:
  # Linear decay to 0 at the end of the run: needs the run length, which comes through `run`.
  return optax.sgd(optax.linear_schedule(config.learning_rate, 0.0, run.total_steps))


def init(config: Config, run: Run, key: jax.Array, example_batch: dict) -> TrainState:
  k_w, k_state = jax.random.split(key)
  return TrainState.create(params={"w": jax.random.normal(k_w, (config.channels,))},
                           tx=_tx(config, run), key=k_state)


def train_step(config, run, state, batch, key):
  x = jnp.mean(batch["image"], axis=(1, 2)) + 0.01 * jax.random.normal(key, (1, config.channels))
  loss, grads = jax.value_and_grad(lambda p: jnp.mean(jnp.square(x - p["w"])))(state.params)
  lr = optax.linear_schedule(config.learning_rate, 0.0, run.total_steps)(state.step)
  return state.apply_gradients(_tx(config, run), grads), {
      "loss": loss, "lr": jnp.asarray(lr, jnp.float32), "batch_sum": jnp.sum(batch["image"])}


def predict(config, state, images):
  maps = jnp.mean(jnp.abs(images - state.params["w"]), axis=-1)
  return jnp.max(maps, axis=(1, 2)), maps


# ----------------------------------------------------------------------------- toy GAN


def _gan_module() -> types.ModuleType:
  """A GAN method module: G and D, two optimisers in one step, test-set-wide normalisation."""
  gan = types.ModuleType("toy_gan")
  gan.NAME, gan.Config = "toy_gan", Config
  tx = optax.adam(1e-2)

  def gan_init(config, run, key, example_batch):
    kg, kd, ks = jax.random.split(key, 3)
    g = {"w": jax.random.normal(kg, (config.channels,))}
    d = {"v": jax.random.normal(kd, (config.channels,)), "b": jnp.zeros(())}
    return GANState.create(key=ks, generator=TrainState.create(params=g, tx=tx, key=kg),
                           discriminator=TrainState.create(params=d, tx=tx, key=kd))

  def disc(d, x):  # x: [B, C] image means -> logits [B]
    return x @ d["v"] + d["b"]

  def gan_step(config, run, state, batch, key):
    real = jnp.mean(batch["image"], axis=(1, 2))
    fake = lambda g: g["w"] + 0.1 * jax.random.normal(key, real.shape)
    d_loss, d_grads = jax.value_and_grad(lambda d: losses.discriminator_loss(
        disc(d, real), disc(d, fake(state.generator.params))))(state.discriminator.params)
    dis = state.discriminator.apply_gradients(tx, d_grads)
    g_loss, g_grads = jax.value_and_grad(lambda g: losses.generator_loss_nonsaturating(
        disc(dis.params, fake(g))))(state.generator.params)
    gen = state.generator.apply_gradients(tx, g_grads)
    return state.replace(step=state.step + 1, generator=gen, discriminator=dis), {
        "d_loss": d_loss, "g_loss": g_loss}

  def gan_predict(config, state, images):
    maps = jnp.mean(jnp.abs(images - state.generator.params["w"]), axis=-1)
    lat = jnp.abs(disc(state.discriminator.params, jnp.mean(images, axis=(1, 2))))
    return {"rec": jnp.mean(maps, axis=(1, 2)), "lat": lat}, maps

  def normalize(config, scores, maps):  # min-max over the whole test set, never per batch
    mm = lambda a: (a - a.min()) / max(a.max() - a.min(), 1e-12)
    return 0.9 * mm(scores["rec"]) + 0.1 * mm(scores["lat"]), mm(maps)

  gan.init, gan.train_step, gan.predict, gan.normalize = gan_init, gan_step, gan_predict, normalize
  return gan


GAN = _gan_module()
CFG = Config()


def _images(n: int = 12, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).random((n, 8, 8, 1), dtype=np.float32)


def _register() -> None:
  models.register("toy", sys.modules[__name__])
  models.register("toy_gan", GAN)


# ----------------------------------------------------------------------------- tests


def test_toy_method_trains_resumes_and_predicts_through_the_engine(tmp_path):
  _register()
  x = _images()
  full = loop.fit("toy", CFG, x, seed=1, epochs=3, batch_size=4, show_progress=False)
  assert full.run == Run(total_steps=9, steps_per_epoch=3, batch_size=4)
  # The schedule got the run length: linear decay from 0.5 reaching 0 at step 9.
  np.testing.assert_allclose([h["lr"] for h in full.history], 0.5 * (1 - np.arange(9) / 9), rtol=1e-6)
  # The engine visits the data in the order of jaxad.data.batches (the README's pipeline).
  split = data.as_split(x)
  expected = [float(np.sum(b["image"])) for e in range(3)
              for b in data.batches(split, 4, seed=1, epoch=e)]
  np.testing.assert_allclose([h["batch_sum"] for h in full.history], expected, rtol=1e-6)
  # Interrupted after step 5 (checkpoint at 4 and 5), resumed: bit-identical to the full run.
  wd = tmp_path / "run"
  loop.fit("toy", CFG, x, seed=1, epochs=3, batch_size=4, workdir=wd, save_every=1, max_steps=5,
           show_progress=False)
  rest = loop.fit("toy", CFG, x, seed=1, epochs=3, batch_size=4, workdir=wd, save_every=1,
                  show_progress=False)
  assert rest.start_step == 5
  for a, b in zip(leaves(full.state), leaves(rest.state)):
    np.testing.assert_array_equal(a, b)
  restored = loop.restore(wd)
  assert restored.method.NAME == "toy" and restored.config == CFG
  scores, maps = predict_dataset("toy", CFG, restored.state, x[:5], batch_size=2)
  ref = np.abs(x[:5, ..., 0] - np.asarray(restored.state.params["w"])[0])
  np.testing.assert_allclose(maps, ref, rtol=1e-6)
  np.testing.assert_allclose(scores, ref.max(axis=(1, 2)), rtol=1e-6)


def test_toy_gan_updates_both_networks_and_normalizes_over_the_test_set(tmp_path):
  _register()
  x = _images()
  r = loop.fit("toy_gan", CFG, x, seed=0, epochs=2, batch_size=4, workdir=tmp_path / "gan",
               save_every=3, max_steps=3, show_progress=False)
  init = GAN.init(CFG, r.run, loop.rng.stream(0, loop.rng.INIT), {"image": x[:4]})
  assert int(r.state.generator.step) == int(r.state.discriminator.step) == 3
  assert not np.allclose(r.state.generator.params["w"], init.generator.params["w"])
  assert not np.allclose(r.state.discriminator.params["v"], init.discriminator.params["v"])
  state = loop.fit("toy_gan", CFG, x, seed=0, epochs=2, batch_size=4, workdir=tmp_path / "gan",
                   show_progress=False).state
  full = loop.fit("toy_gan", CFG, x, seed=0, epochs=2, batch_size=4, show_progress=False).state
  for a, b in zip(leaves(full), leaves(state)):
    np.testing.assert_array_equal(a, b)
  # Batches of 2 give the same normalised scores as one batch of 12: normalisation is test-set wide.
  s2, m2 = predict_dataset("toy_gan", CFG, state, x, batch_size=2)
  s12, m12 = predict_dataset("toy_gan", CFG, state, x, batch_size=12)
  np.testing.assert_allclose(s2, s12, rtol=1e-6)
  np.testing.assert_allclose(m2, m12, rtol=1e-6)
  assert s2.min() >= 0 and np.isclose(m2.min(), 0) and np.isclose(m2.max(), 1)
  raw = jnp.mean(jnp.abs(x - state.generator.params["w"]), axis=(1, 2, 3))
  rec = (raw - raw.min()) / (raw.max() - raw.min())
  assert np.corrcoef(rec, s2)[0, 1] > 0.9  # rec dominates (weight 0.9)


FOUR_DEVICES = r"""
import json, sys
import jax, numpy as np
sys.path[:0] = ["tests", "tests/train"]
import test_protocol as T
from jaxad.train import loop, mesh as mesh_lib
from train_helpers import leaves
T._register()
assert len(jax.devices()) == 4, jax.devices()
out = {}
for name in ("toy", "toy_gan"):
  for n in (1, 4):
    r = loop.fit(name, T.CFG, T._images(16), seed=2, epochs=2, batch_size=8,
                 mesh=mesh_lib.make_mesh(n), show_progress=False)
    out[f"{name}{n}"] = {"hist": r.history, "state": [x.tolist() for x in leaves(r.state)]}
print("RESULT" + json.dumps(out))
"""


def test_toy_methods_on_one_and_four_devices_agree():
  out = json.loads(run_jax_subprocess(FOUR_DEVICES, devices=4).split("RESULT", 1)[1])
  for name in ("toy", "toy_gan"):
    one, four = out[f"{name}1"], out[f"{name}4"]
    assert len(one["hist"]) == len(four["hist"]) == 4
    for h1, h4 in zip(one["hist"], four["hist"]):
      assert h1.keys() == h4.keys()
      np.testing.assert_allclose([h4[k] for k in h4], [h1[k] for k in h1], rtol=1e-5, atol=1e-6)
    for a, b in zip(one["state"], four["state"]):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
