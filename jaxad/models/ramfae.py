"""RAMFAE: random-anomaly multi-scale feature focused autoencoder (Sun, Wang, Li 2023).

Training: every normal image goes through Delete Paste (a random rectangle is cut, its
place set to 0 and its content pasted at a random place); the autoencoder reconstructs
the *clean* image under ``L = l1 GMSD + l2 (1 - SSIM) + l3 MSE`` (eq. 14), Adam with
cosine annealing 1e-4 -> 1e-6. Testing: per-pixel anomaly map between the image and its
reconstruction (MSGMS by default, or SSIM / GMSD), channel mean, Gaussian smoothing with
a 21-tap kernel, image score = maximum of the map.

Network (Table 1, Fig. 2), widths ``c_i = min(base_features * 2**i, max_features)``:
  EncoderBlock(c0, 3x3 s1) -> EncoderBlock(c1, 4x4 s2) -> EncoderBlock(c2, 4x4 s2)
  -> EncoderBlock(c3, 4x4 s2) -> MFFE(c3) = ASPP(rates 5, 7, 9 + image pooling) then
  coordinate attention -> ResidualDecoderBlock(c2) -> (c1) -> (c0) -> Conv 3x3 -> Tanh.
The full model (256 px RGB) has c = (64, 128, 256, 512); the MNIST variant caps the
widths at 128 (``max_features=128``). Input sizes must be divisible by 8.

Value ranges: images are ``[0, 1]`` at every public function. The network's Tanh output
lives in ``[-1, 1]``; the method feeds the network ``2 x - 1`` and maps its output back
with ``(y + 1) / 2``, so losses and maps are computed in ``[0, 1]`` with ``max_val = 1``.

References:
  Z. Sun, J. Wang, Y. Li, "RAMFAE: a novel unsupervised visual anomaly detection method
  based on autoencoder", Int. J. Mach. Learn. & Cyber. 2023: Table 1 (architecture),
  Sect. 3.1.1 (MFFE), 3.2 (Delete Paste), 3.3 eqs. (6)-(14) (losses), 4.1 (training),
  4.3 (map choice), Tables 4-5 (results).
  V. Zavrtanik et al., "Reconstruction by inpainting for visual anomaly detection" (RIAD),
  Pattern Recognition 2021 (MSGMS anomaly map).
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
from jaxad import augment, losses, maps
from jaxad.nn.attention import CoordinateAttention
from jaxad.nn.conv import Conv2D
from jaxad.nn.layers import EncoderBlock, ResidualDecoderBlock, check_upsample
from jaxad.nn.multiscale import ASPP
from jaxad.train.state import TrainState

__all__ = ["NAME", "MAP_KINDS", "Config", "RAMFAENet", "init", "train_step", "predict",
           "reconstruct", "anomaly_maps", "loss_terms", "learning_rate_schedule", "widths",
           "param_count"]

NAME = "ramfae"
MAP_KINDS = ("msgms", "ssim", "gmsd")


@dataclasses.dataclass(frozen=True)
class Config:
  """RAMFAE hyper-parameters; defaults are the paper's (gaps: see BUILD_NOTES.md).

  Attributes:
    image_size: input height = width, divisible by 8 (paper: 256).
    channels: 1 (grayscale, MNIST) or 3 (RGB).
    base_features: width of the first encoder block (Table 1: 64); later blocks double.
    max_features: cap on every width (Table 1: 512; MNIST variant: 128).
    dilation_rates: ASPP rates of the MFFE (paper: 5, 7, 9).
    attention_reduction: coordinate-attention reduction r (reference code: 32).
    use_mffe: include the MFFE (ASPP + coordinate attention); ``False`` = Table 2 ablation.
    residual: residual connection in the decoder blocks (Fig. 8 ablation when ``False``).
    upsample: ``"auto"`` (per backend, see :func:`jaxad.nn.layers.default_upsample`),
      ``"transpose"`` or ``"subpixel"`` (same function and parameters, different speed).
    delete_paste: apply Delete Paste to the training inputs.
    augment_probability: share of training images that get Delete Paste (paper: all).
    area_ratio: Delete Paste rectangle area / image area range.
    aspect_ratio: Delete Paste aspect-ratio range (log-uniform).
    gmsd_weight, ssim_weight, mse_weight: lambda_1..3 of eq. (14) (paper: 1, 1, 1).
    gmsd_squared: use eq. (11) (variance) instead of eq. (10) (standard deviation).
    learning_rate: initial Adam learning rate (1e-4).
    min_learning_rate: cosine-annealing floor (1e-6).
    anomaly_map: ``"msgms"`` (default), ``"ssim"`` or ``"gmsd"`` (Sect. 4.3).
    msgms_scales: pyramid levels of MSGMS (RIAD: 4).
    smooth_kernel: Gaussian smoothing kernel length (paper: 21; 0 or 1 = no smoothing).
    smooth_sigma: Gaussian sigma in pixels (not given by the paper; 4).
  """
  image_size: int = 256
  channels: int = 3
  base_features: int = 64
  max_features: int = 512
  dilation_rates: tuple[int, ...] = (5, 7, 9)
  attention_reduction: int = 32
  use_mffe: bool = True
  residual: bool = True
  upsample: str = "auto"
  delete_paste: bool = True
  augment_probability: float = 1.0
  area_ratio: tuple[float, float] = (0.02, 0.15)
  aspect_ratio: tuple[float, float] = (0.3, 3.3)
  gmsd_weight: float = 1.0
  ssim_weight: float = 1.0
  mse_weight: float = 1.0
  gmsd_squared: bool = False
  learning_rate: float = 1e-4
  min_learning_rate: float = 1e-6
  anomaly_map: str = "msgms"
  msgms_scales: int = 4
  smooth_kernel: int = 21
  smooth_sigma: float = 4.0

  def __post_init__(self) -> None:
    def positive_int(name: str, v: Any) -> None:
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"Config.{name} must be a positive int, got {v!r}")

    for name in ("image_size", "base_features", "max_features", "attention_reduction",
                 "msgms_scales"):
      positive_int(name, getattr(self, name))
    if self.image_size % 8:
      raise ValueError(f"Config.image_size must be divisible by 8 (three stride-2 stages), "
                       f"got {self.image_size}")
    if self.channels not in (1, 3):
      raise ValueError(f"Config.channels must be 1 or 3, got {self.channels!r}")
    if not self.dilation_rates or any(int(r) < 1 for r in self.dilation_rates):
      raise ValueError(f"Config.dilation_rates must be positive ints, got {self.dilation_rates!r}")
    check_upsample(self.upsample)
    if not 0.0 <= self.augment_probability <= 1.0:
      raise ValueError(f"Config.augment_probability must be in [0, 1], got {self.augment_probability}")
    for name in ("gmsd_weight", "ssim_weight", "mse_weight"):
      if getattr(self, name) < 0:
        raise ValueError(f"Config.{name} must be >= 0, got {getattr(self, name)}")
    if not 0 < self.min_learning_rate <= self.learning_rate:
      raise ValueError(f"Config needs 0 < min_learning_rate <= learning_rate, got "
                       f"{self.min_learning_rate}, {self.learning_rate}")
    if self.anomaly_map not in MAP_KINDS:
      raise ValueError(f"Config.anomaly_map must be one of {MAP_KINDS}, got {self.anomaly_map!r}")
    if 2 ** (self.msgms_scales - 1) > self.image_size:
      raise ValueError(f"Config.msgms_scales={self.msgms_scales} needs image_size >= "
                       f"{2 ** (self.msgms_scales - 1)}, got {self.image_size}")
    if self.smooth_kernel < 0 or (self.smooth_kernel > 1 and self.smooth_kernel % 2 == 0):
      raise ValueError(f"Config.smooth_kernel must be 0, 1 or an odd int, got {self.smooth_kernel}")
    if self.smooth_sigma <= 0:
      raise ValueError(f"Config.smooth_sigma must be > 0, got {self.smooth_sigma}")


def widths(config: Config) -> tuple[int, int, int, int]:
  """Encoder widths ``(c0, c1, c2, c3)``; the decoder uses ``c2, c1, c0``."""
  return tuple(min(config.base_features * 2 ** i, config.max_features) for i in range(4))


class RAMFAENet(nn.Module):
  """The RAMFAE autoencoder (Table 1). Input and output ``[B, H, W, C]`` in ``[0, 1]``.

  Internally the input is mapped to ``[-1, 1]`` (``2 x - 1``) and the Tanh output back
  with ``(y + 1) / 2``.
  """
  config: Config

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    cfg = self.config
    c0, c1, c2, c3 = widths(cfg)
    h = 2.0 * x - 1.0
    h = EncoderBlock(c0, 3, 1, 1, name="enc0")(h, train)
    h = EncoderBlock(c1, 4, 2, 1, name="enc1")(h, train)
    h = EncoderBlock(c2, 4, 2, 1, name="enc2")(h, train)
    h = EncoderBlock(c3, 4, 2, 1, name="enc3")(h, train)
    if cfg.use_mffe:
      h = ASPP(c3, rates=tuple(int(r) for r in cfg.dilation_rates), name="mffe_aspp")(h, train)
      h = CoordinateAttention(reduction=cfg.attention_reduction, name="mffe_attention")(h, train)
    for i, c in enumerate((c2, c1, c0)):
      h = ResidualDecoderBlock(c, upsample=cfg.upsample, residual=cfg.residual, name=f"dec{i}")(h, train)
    h = Conv2D(cfg.channels, 3, 1, name="out_conv")(h)  # = nn.Conv(channels, (3, 3), padding=1)
    return (jnp.tanh(h) + 1.0) * 0.5


def learning_rate_schedule(config: Config, run: Run) -> optax.Schedule:
  """Cosine annealing from ``learning_rate`` to ``min_learning_rate`` over the whole run.

  PyTorch ``CosineAnnealingLR(T_max=run.total_steps, eta_min=min_learning_rate)`` stepped per
  iteration (the paper anneals over its 250 epochs); constant at the floor afterwards.
  """
  return optax.cosine_decay_schedule(config.learning_rate, max(run.total_steps, 1),
                                     alpha=config.min_learning_rate / config.learning_rate)


def _optimizer(config: Config, run: Run) -> optax.GradientTransformation:
  return optax.adam(learning_rate_schedule(config, run))


def init(config: Config, run: Run, key: jax.Array, example_batch: dict[str, Any]) -> TrainState:
  """A fresh RAMFAE train state (parameters, BatchNorm statistics, Adam state).

  Args:
    config: :class:`Config`.
    run: the run (its length sets the cosine schedule).
    key: typed PRNG key; split into parameter init and the state's base key.
    example_batch: a batch dict whose ``image`` ``[B, S, S, C]`` (``S = image_size``,
      ``C = channels``) fixes the shapes.
  Returns:
    :class:`jaxad.train.state.TrainState` at step 0.
  Raises:
    TypeError / ValueError: wrong config type, image shape or dtype.
  """
  if not isinstance(config, Config):
    raise TypeError(f"config must be ramfae.Config, got {type(config).__name__}")
  if not isinstance(example_batch, dict) or "image" not in example_batch:
    raise ValueError("example_batch must be a dict with an 'image' entry")
  check_images(example_batch["image"], config, "example_batch['image']")
  k_params, k_state = jax.random.split(key)
  shape = (1, config.image_size, config.image_size, config.channels)
  variables = init_variables(RAMFAENet(config), k_params, shape)
  return TrainState.create(params=variables["params"], tx=_optimizer(config, run), key=k_state,
                           batch_stats=variables["batch_stats"])


def param_count(config: Config) -> int:
  """Number of trainable parameters of the network for ``config`` (no BN statistics)."""
  shape = (1, config.image_size, config.image_size, config.channels)
  shapes = jax.eval_shape(lambda: RAMFAENet(config).init(jax.random.key(0),
                                                         jnp.zeros(shape, jnp.float32)))
  return int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes["params"])))


def loss_terms(config: Config, recon: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
  """Per-image loss terms of eq. (14) in ``[0, 1]`` space (``max_val = 1``).

  Args:
    config: :class:`Config` (weights, ``gmsd_squared``).
    recon: reconstructions ``[B, H, W, C]`` in ``[0, 1]``.
    target: the clean images ``[B, H, W, C]`` in ``[0, 1]``.
  Returns:
    ``{"gmsd", "ssim_loss", "mse", "loss"}``, each ``[B]``; ``loss`` is the weighted sum.
  References:
    RAMFAE eqs. (10)/(11), (13), (14).
  """
  g = losses.gmsd(recon, target, max_val=1.0, squared=config.gmsd_squared)
  s = losses.ssim_loss(recon, target, max_val=1.0)
  m = losses.l2(recon, target)
  total = config.gmsd_weight * g + config.ssim_weight * s + config.mse_weight * m
  return {"gmsd": g, "ssim_loss": s, "mse": m, "loss": total}


def _augment(config: Config, key: jax.Array, images: jax.Array) -> jax.Array:
  if not config.delete_paste or config.augment_probability == 0.0:
    return images
  k_dp, k_p = jax.random.split(key)
  aug, _ = augment.delete_paste(k_dp, images, area_ratio=tuple(config.area_ratio),
                                aspect_ratio=tuple(config.aspect_ratio))
  if config.augment_probability < 1.0:
    use = jax.random.bernoulli(k_p, config.augment_probability, images.shape[:1])
    aug = jnp.where(use[:, None, None, None], aug, images)
  return aug


def train_step(config: Config, run: Run, state: TrainState, batch: dict[str, jax.Array],
               key: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
  """One Adam step: Delete Paste the inputs, reconstruct, minimise eq. (14).

  Written for the global batch (no axis names): under the engine's sharded jit the loss
  mean and the BatchNorm statistics cover the whole global batch.

  Args:
    config: :class:`Config` (static).
    run: the run (static; its length sets the cosine schedule).
    state: train state from :func:`init`.
    batch: ``image [B, S, S, C]`` float32 in ``[0, 1]`` (normal images); optional
      ``valid [B]`` bool (padding rows get weight 0 in the loss; they still enter the
      BatchNorm batch statistics).
    key: the step's typed PRNG key (Delete Paste geometry).
  Returns:
    ``(new_state, metrics)`` with float32 scalars ``loss``, ``gmsd``, ``ssim_loss``, ``mse``
    (weighted means over valid images) and ``learning_rate`` (the rate used in this step).
  """
  x = batch["image"]
  check_images(x, config, "batch['image']")
  valid = batch.get("valid")
  w = jnp.ones(x.shape[:1], jnp.float32) if valid is None else valid.astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(w), 1.0)
  inputs = _augment(config, key, x)

  def loss_fn(params: Any) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
    recon, updates = RAMFAENet(config).apply(
        {"params": params, "batch_stats": state.batch_stats}, inputs, train=True,
        mutable=["batch_stats"])
    terms = loss_terms(config, recon, x)
    means = {k: jnp.sum(v * w) / denom for k, v in terms.items()}
    return means["loss"], (means, updates["batch_stats"])

  (_, (means, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  lr = learning_rate_schedule(config, run)(state.step)
  state = state.apply_gradients(_optimizer(config, run), grads, batch_stats=batch_stats)
  metrics = {k: v.astype(jnp.float32) for k, v in means.items()}
  metrics["learning_rate"] = jnp.asarray(lr, jnp.float32)
  return state, metrics


def reconstruct(config: Config, state: TrainState, images: jax.Array) -> jax.Array:
  """Reconstructions ``[B, S, S, C]`` in ``[0, 1]`` (BatchNorm running statistics). Jit-able."""
  check_images(images, config, "images")
  return RAMFAENet(config).apply(state.variables(), images, train=False)


def anomaly_maps(images: jax.Array, recon: jax.Array, kind: str = "msgms", *,
                 msgms_scales: int = 4) -> jax.Array:
  """Unsmoothed per-pixel anomaly maps (higher = more anomalous), channel mean.

  Args:
    images: ``[B, H, W, C]`` in ``[0, 1]``.
    recon: reconstructions, same shape, in ``[0, 1]``.
    kind: ``"msgms"``: ``1 - (1/L) sum_l up(GMS_l)`` (RIAD); ``"ssim"``: ``1 - SSIM`` map
      (Gaussian window 11, sigma 1.5, "same" padding); ``"gmsd"``: per-pixel term of eq. (11),
      ``(GMS(i) - mean GMS)^2`` per channel.
    msgms_scales: MSGMS pyramid levels.
  Returns:
    ``[B, H, W]`` float32 maps.
  References:
    RAMFAE Sect. 4.3, Table 3; RIAD (MSGMS map).
  """
  if kind == "msgms":
    return losses.msgms_map(images, recon, max_val=1.0, num_scales=msgms_scales)
  if kind == "ssim":
    return jnp.mean(1.0 - losses.ssim(images, recon, max_val=1.0, return_map=True), axis=-1)
  if kind == "gmsd":
    g = losses.gms_map(images, recon, max_val=1.0)
    return jnp.mean(jnp.square(g - jnp.mean(g, axis=(1, 2), keepdims=True)), axis=-1)
  raise ValueError(f"kind must be one of {MAP_KINDS}, got {kind!r}")


def predict(config: Config, state: TrainState, images: jax.Array, *,
            anomaly_map: str | None = None,
            smooth_sigma: float | None = None,
            smooth_kernel: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Image scores and anomaly maps for a batch. Jit-able (keyword options are static).

  Args:
    config: :class:`Config` (static).
    state: train state from :func:`init` / training.
    images: ``[B, S, S, C]`` float32 in ``[0, 1]``.
    anomaly_map: ``"msgms"``, ``"ssim"`` or ``"gmsd"``; ``None`` = ``config.anomaly_map``.
    smooth_sigma: Gaussian sigma; ``None`` = ``config.smooth_sigma`` (4).
    smooth_kernel: Gaussian kernel length; ``None`` = ``config.smooth_kernel`` (21).
  Returns:
    ``scores [B]`` (maximum of each smoothed map) and ``maps [B, S, S]`` (smoothed, not
    normalised; normalisation over the test set is the evaluator's job).
  References:
    RAMFAE Sect. 3 ("Gaussian smoothing with a step size of 21") and 4.3.
  """
  kind = config.anomaly_map if anomaly_map is None else anomaly_map
  if kind not in MAP_KINDS:
    raise ValueError(f"anomaly_map must be one of {MAP_KINDS}, got {kind!r}")
  sigma = config.smooth_sigma if smooth_sigma is None else smooth_sigma
  kernel = config.smooth_kernel if smooth_kernel is None else smooth_kernel
  recon = reconstruct(config, state, images)
  amap = anomaly_maps(images, recon, kind, msgms_scales=config.msgms_scales)
  if kernel > 1:
    amap = maps.gaussian_smooth(amap, sigma=sigma, kernel_size=kernel)
  return maps.score_from_map(amap), amap
