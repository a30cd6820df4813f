"""A plain convolutional autoencoder: the baseline reconstruction method.

Encoder: per entry of ``features`` a 3x3 stride-2 convolution, BatchNorm and
ReLU; decoder: the mirror image with 4x4 stride-2 transposed convolutions;
a 3x3 convolution and a sigmoid give the reconstruction in [0, 1].
Training minimises the mean squared error (L2) over the valid images of the
global batch. Anomaly map = per-pixel squared residual averaged over channels,
``((x - x_hat)**2).mean(-1)``; image score = the map's maximum.

It follows :mod:`jaxad.models.protocol` and is the training engine's test model. ``noise_std > 0`` turns it into a denoising autoencoder
(Gaussian input noise from the step key), the only per-step randomness.

References:
  The reconstruction baseline ("AE-L2") of Bergmann et al., "MVTec AD — A
  Comprehensive Real-World Dataset for Unsupervised Anomaly Detection", CVPR 2019
  (score = L2 residual); layer sizes here are ours, kept small.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxad.models._init import init_variables
from jaxad.models._validate import check_images
from jaxad.models.protocol import Run
from jaxad.train.state import TrainState

__all__ = ["Config", "ConvAE", "init", "train_step", "predict", "reconstruct", "residual_map"]

NAME = "conv_ae"


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyper-parameters of the convolutional autoencoder.

  Attributes:
    image_size: input height = width; divisible by ``2 ** len(features)``.
    channels: image channels (1 or 3).
    features: encoder widths, one stride-2 stage each (decoder mirrors them).
    batch_norm: use BatchNorm after every hidden convolution.
    learning_rate: Adam learning rate.
    weight_decay: decoupled weight decay (AdamW) when > 0.
    noise_std: std of Gaussian input noise during training (0 = plain AE).
  """
  image_size: int = 32
  channels: int = 3
  features: tuple[int, ...] = (16, 32, 64)
  batch_norm: bool = True
  learning_rate: float = 1e-3
  weight_decay: float = 0.0
  noise_std: float = 0.0

  def __post_init__(self) -> None:
    if self.channels not in (1, 3):
      raise ValueError(f"channels must be 1 or 3, got {self.channels}")
    if not self.features or any(int(f) < 1 for f in self.features):
      raise ValueError(f"features must be a non-empty tuple of positive ints, got {self.features}")
    if self.image_size < 1 or self.image_size % (2 ** len(self.features)):
      raise ValueError(f"image_size must be a positive multiple of 2**len(features)="
                       f"{2 ** len(self.features)}, got {self.image_size}")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if self.weight_decay < 0 or self.noise_std < 0:
      raise ValueError(f"weight_decay and noise_std must be >= 0, got {self.weight_decay}, "
                       f"{self.noise_std}")


def flat_lecun_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  """``nn.initializers.lecun_normal()`` drawn as a flat vector and reshaped.

  Same distribution (truncated normal, variance 1/fan_in; fan_in = product of
  all but the last axis). Drawing rank-4 shapes directly compiles ~10x slower
  on CPU with JAX 0.10's default ``jax_threefry_partitionable=True`` (measured
  ~10 s per kernel), so the kernel is drawn as ``[prod(shape)]``.
  """
  fan_in = int(np.prod(shape[:-1]))
  # 0.87962566 = std of a standard normal truncated to [-2, 2] (as in jax.nn.initializers).
  std = np.sqrt(1.0 / fan_in) / 0.87962566103423978
  flat = jax.random.truncated_normal(key, -2.0, 2.0, (int(np.prod(shape)),), dtype)
  return (flat * std).reshape(shape).astype(dtype)


class ConvAE(nn.Module):
  """Encoder-decoder of stride-2 convolutions; output in [0, 1]."""
  channels: int
  features: tuple[int, ...]
  batch_norm: bool = True
  noise_std: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, noise_key: jax.Array | None = None) -> jax.Array:
    if train and self.noise_std > 0:
      if noise_key is None:
        raise ValueError("noise_key is required when training with noise_std > 0")
      noise = jax.random.normal(noise_key, (x.size,), x.dtype).reshape(x.shape)  # flat: see flat_lecun_normal
      x = jnp.clip(x + self.noise_std * noise, 0.0, 1.0)
    h = 2.0 * x - 1.0

    def norm_act(h: jax.Array) -> jax.Array:
      if self.batch_norm:
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
      return nn.relu(h)

    for f in self.features:
      h = norm_act(nn.Conv(f, (3, 3), strides=(2, 2), padding="SAME", use_bias=not self.batch_norm,
                             kernel_init=flat_lecun_normal)(h))
    for f in reversed(self.features):
      h = norm_act(nn.ConvTranspose(f, (4, 4), strides=(2, 2), padding="SAME",
                                    use_bias=not self.batch_norm, kernel_init=flat_lecun_normal)(h))
    return nn.sigmoid(nn.Conv(self.channels, (3, 3), padding="SAME", kernel_init=flat_lecun_normal)(h))


def _model(config: Config) -> ConvAE:
  return ConvAE(channels=config.channels, features=tuple(int(f) for f in config.features),
                batch_norm=config.batch_norm, noise_std=float(config.noise_std))


def _optimizer(config: Config) -> optax.GradientTransformation:
  if config.weight_decay > 0:
    return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
  return optax.adam(config.learning_rate)


def init(config: Config, run: Run, key: jax.Array, example_batch: dict[str, Any]) -> TrainState:
  """A fresh train state.

  Args:
    config: the method's :class:`Config`.
    run: the run (unused: the optimiser has no schedule).
    key: typed PRNG key; split into parameter init and the state's base key.
    example_batch: a batch dict whose ``image`` ``[B, H, W, C]`` fixes the shapes.
  Returns:
    :class:`jaxad.train.state.TrainState` at step 0.
  """
  del run
  if not isinstance(config, Config):
    raise TypeError(f"config must be conv_ae.Config, got {type(config).__name__}")
  check_images(example_batch["image"], config, "example_batch['image']")
  k_params, k_state = jax.random.split(key)
  shape = (1, config.image_size, config.image_size, config.channels)
  variables = init_variables(_model(config), k_params, shape)
  return TrainState.create(params=variables["params"], tx=_optimizer(config), key=k_state,
                           batch_stats=variables.get("batch_stats", {}))


def train_step(config: Config, run: Run, state: TrainState, batch: dict[str, jax.Array],
               key: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
  """One Adam step on the L2 reconstruction loss over the valid images of ``batch``.

  Args:
    config: the method's :class:`Config` (static).
    run: the run (unused).
    state: the train state.
    batch: ``image [B,H,W,C]`` f32 in [0, 1]; optional ``valid [B]`` bool.
    key: the step's key (input noise when ``config.noise_std > 0``).
  Returns:
    ``(new_state, {"loss": f32 scalar})``.
  """
  del run
  x = batch["image"]
  valid = batch.get("valid")
  w = jnp.ones(x.shape[:1], jnp.float32) if valid is None else valid.astype(jnp.float32)
  model = _model(config)

  def loss_fn(params: Any) -> tuple[jax.Array, Any]:
    variables = {"params": params}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
    recon, updates = model.apply(variables, x, train=True, noise_key=key, mutable=["batch_stats"])
    per_image = jnp.mean(jnp.square(recon - x), axis=(1, 2, 3))
    loss = jnp.sum(per_image * w) / jnp.maximum(jnp.sum(w), 1.0)
    return loss, updates.get("batch_stats", {})

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(_optimizer(config), grads, batch_stats=batch_stats)
  return state, {"loss": loss}


def reconstruct(config: Config, state: TrainState, images: jax.Array) -> jax.Array:
  """Reconstructions ``[B, H, W, C]`` in [0, 1] (BatchNorm in inference mode)."""
  check_images(images, config, "images")
  return _model(config).apply(state.variables(), images, train=False)


def residual_map(images: jax.Array, recon: jax.Array) -> jax.Array:
  """Per-pixel squared residual averaged over channels: ``[B, H, W]``."""
  return jnp.mean(jnp.square(images - recon), axis=-1)


def predict(config: Config, state: TrainState, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Anomaly scores ``[B]`` (max of the map) and maps ``[B, H, W]`` (squared residual)."""
  maps = residual_map(images, reconstruct(config, state, images))
  return jnp.max(maps, axis=(1, 2)), maps
