"""Pieces shared by the GAN methods (SCGAN, AFF-GAN): state, optimiser, discriminator update,
GANomaly's discriminator re-initialisation, test-set-wide min-max.

The config of a GAN method has ``image_size``, ``channels``, ``learning_rate``, ``beta1``, ``beta2``,
``weight_init`` (``"dcgan"`` or ``"lecun"``) and ``d_reinit_threshold``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxad import maps
from jaxad.models._validate import check_images
from jaxad.nn.gan import dcgan_init
from jaxad.train.state import GANState, TrainState

WEIGHT_INITS = ("dcgan", "lecun")
IMAGE_SCORES = ("paper", "map_max")  # the paper's per-image score, or the residual map's maximum


def optimizer(config: Any) -> optax.GradientTransformation:
  """Adam with the config's step size and betas (both networks; GANomaly: 2e-4, 0.5, 0.999)."""
  return optax.adam(config.learning_rate, b1=config.beta1, b2=config.beta2)


@functools.partial(jax.jit, static_argnums=(0, 1))
def net_variables(config: Any, module: nn.Module, key: jax.Array) -> dict[str, Any]:
  """Variables of ``module`` for ``[1, S, S, C]`` inputs (GANomaly's init when ``weight_init="dcgan"``).

  Jitted once per (config, module) pair.
  """
  k_init, k_draw = jax.random.split(key)
  shape = (1, config.image_size, config.image_size, config.channels)
  variables = dict(module.init(k_init, jnp.zeros(shape, jnp.float32), train=False))
  if config.weight_init == "dcgan":
    variables["params"] = dcgan_init(k_draw, variables["params"])
  return variables


def init_state(config: Any, generator: nn.Module, discriminator: nn.Module, key: jax.Array) -> GANState:
  """A :class:`GANState` at step 0: both networks' variables and Adam states."""
  k_g, k_d, k_state = jax.random.split(key, 3)
  tx = optimizer(config)
  g = net_variables(config, generator, k_g)
  d = net_variables(config, discriminator, k_d)
  return GANState.create(
      key=k_state,
      generator=TrainState.create(params=g["params"], tx=tx, key=k_g, batch_stats=g["batch_stats"]),
      discriminator=TrainState.create(params=d["params"], tx=tx, key=k_d,
                                      batch_stats=d["batch_stats"]))


def weighted_mean(v: jax.Array, w: jax.Array) -> jax.Array:
  """``sum(v w) / max(sum(w), 1)`` over images (``w`` = 1 for real rows, 0 for padding)."""
  return jnp.sum(v * w) / jnp.maximum(jnp.sum(w), 1.0)


def discriminator_update(config: Any, discriminator: nn.Module, d_state: TrainState, real: jax.Array,
                         fake: jax.Array, w: jax.Array) -> tuple[TrainState, jax.Array]:
  """One Adam step of D on ``BCE(D(real), 1) + BCE(D(fake), 0)`` (fake detached).

  Args:
    real, fake: ``[B, S, S, C]`` in ``[-1, 1]`` (the networks' range).
    w: ``[B]`` image weights.
  Returns:
    ``(d_state', loss)``; the loss is the one before the update (GANomaly's ``err_d``). D sees the
    real batch, then the fake batch, in training mode (two BatchNorm batches, as GANomaly).
  """
  fake = jax.lax.stop_gradient(fake)

  def loss_fn(params: Any) -> tuple[jax.Array, Any]:
    (logit_real, _), upd = discriminator.apply({"params": params, "batch_stats": d_state.batch_stats},
                                               real, train=True, mutable=["batch_stats"])
    (logit_fake, _), upd = discriminator.apply({"params": params, "batch_stats": upd["batch_stats"]},
                                               fake, train=True, mutable=["batch_stats"])
    loss = (weighted_mean(jax.nn.softplus(-logit_real), w)
            + weighted_mean(jax.nn.softplus(logit_fake), w))
    return loss, upd["batch_stats"]

  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_state.params)
  return d_state.apply_gradients(optimizer(config), grads, batch_stats=stats), loss


def reinit_discriminator(config: Any, discriminator: nn.Module, d_state: TrainState,
                         loss_d: jax.Array, key: jax.Array) -> tuple[TrainState, jax.Array]:
  """GANomaly's rule: re-draw D's parameters and statistics when ``loss_d < d_reinit_threshold``.

  ``if self.err_d.item() < 1e-5: self.reinit_d()`` (GANomaly / Skip-GANomaly ``update_netd``, the
  loss before the update); the optimiser state is kept, as there. Written with ``jnp.where`` so the
  step stays one compiled function; ``d_reinit_threshold = 0`` removes the rule at trace time.

  Returns:
    ``(d_state', fired)`` with ``fired`` a bool scalar.
  """
  if config.d_reinit_threshold <= 0:
    return d_state, jnp.zeros((), bool)
  fired = loss_d < config.d_reinit_threshold
  fresh = net_variables(config, discriminator, key)
  pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(fired, a, b), new, old)  # noqa: E731
  return d_state.replace(params=pick(fresh["params"], d_state.params),
                         batch_stats=pick(fresh["batch_stats"], d_state.batch_stats)), fired


def minmax(x: np.ndarray) -> np.ndarray:
  """``(x - min) / (max - min)`` over the whole array, float32; a constant array gives zeros."""
  x = np.asarray(x, np.float64)
  lo, hi = float(np.min(x)), float(np.max(x))
  return ((x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)).astype(np.float32)


def check_common(config: Any) -> None:
  """Validates the fields every GAN method config shares (raises ``ValueError``)."""
  if config.weight_init not in WEIGHT_INITS:
    raise ValueError(f"Config.weight_init must be one of {WEIGHT_INITS}, got {config.weight_init!r}")
  if not config.learning_rate > 0 or not (0 <= config.beta1 < 1 and 0 <= config.beta2 < 1):
    raise ValueError(f"Config needs learning_rate > 0 and betas in [0, 1), got "
                     f"{config.learning_rate}, {config.beta1}, {config.beta2}")
  if not config.d_reinit_threshold >= 0:
    raise ValueError(f"Config.d_reinit_threshold must be >= 0, got {config.d_reinit_threshold}")
  if config.channels not in (1, 3):
    raise ValueError(f"Config.channels must be 1 or 3, got {config.channels!r}")


def check_init_args(config: Any, config_cls: type, example_batch: Any) -> None:
  """The checks of a GAN method's ``init`` (config type, batch dict, image shape and dtype)."""
  if not isinstance(config, config_cls):
    raise TypeError(f"config must be {config_cls.__module__}.Config, got {type(config).__name__}")
  if not isinstance(example_batch, dict) or "image" not in example_batch:
    raise ValueError("example_batch must be a dict with an 'image' entry")
  check_images(example_batch["image"], config, "example_batch['image']")


def param_count(config: Any, generator: nn.Module, discriminator: nn.Module) -> dict[str, int]:
  """Trainable parameters of ``{"generator", "discriminator"}`` (shapes only, nothing computed)."""
  x = jnp.zeros((1, config.image_size, config.image_size, config.channels), jnp.float32)
  out = {}
  for name, module in (("generator", generator), ("discriminator", discriminator)):
    shapes = jax.eval_shape(lambda m=module: m.init(jax.random.key(0), x))
    out[name] = int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes["params"])))
  return out


def step_inputs(config: Any, batch: Any, key: jax.Array,
                augment: Any) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The start of a joint step: checked images, image weights, augmented inputs, the D re-init key.

  Args:
    batch: ``image [B, S, S, C]`` float32 in ``[0, 1]``; optional ``valid [B]`` bool.
    key: the step's key, split into the augmentation's and the re-initialisation's.
    augment: ``augment(config, key, images) -> images``.
  Returns:
    ``(x, w, inputs, reinit_key)`` with ``w [B]`` = 1 for real rows, 0 for padding.
  """
  x = batch["image"]
  check_images(x, config, "batch['image']")
  valid = batch.get("valid")
  w = jnp.ones(x.shape[:1], jnp.float32) if valid is None else valid.astype(jnp.float32)
  k_aug, k_reinit = jax.random.split(key)
  return x, w, augment(config, k_aug, x), k_reinit


def finish_step(config: Any, discriminator: nn.Module, state: GANState, g_state: TrainState,
                g_metrics: dict[str, jax.Array], real: jax.Array, fake: jax.Array, w: jax.Array,
                key: jax.Array) -> tuple[GANState, dict[str, jax.Array]]:
  """The discriminator half of a joint step, after the generator's update.

  :func:`discriminator_update` on ``real`` / ``fake`` (``[-1, 1]``), then
  :func:`reinit_discriminator` with ``key``; returns the new state and the metrics (the generator's
  plus ``loss_d`` and ``d_reinit``, float32 scalars).
  """
  d_state, loss_d = discriminator_update(config, discriminator, state.discriminator, real, fake, w)
  d_state, fired = reinit_discriminator(config, discriminator, d_state, loss_d, key)
  metrics = {k: v.astype(jnp.float32) for k, v in g_metrics.items()}
  metrics["loss_d"] = loss_d.astype(jnp.float32)
  metrics["d_reinit"] = fired.astype(jnp.float32)
  return state.replace(step=state.step + 1, generator=g_state, discriminator=d_state), metrics


def residual_map(config: Any, images: jax.Array, recon: jax.Array) -> jax.Array:
  """``|x - G(x)|`` channel mean ``[B, S, S]``, Gaussian-smoothed with ``config.smooth_sigma`` (0 = off)."""
  amap = jnp.mean(jnp.abs(images - recon), axis=-1)
  if config.smooth_sigma > 0:
    amap = maps.gaussian_smooth(amap, sigma=config.smooth_sigma)
  return amap
