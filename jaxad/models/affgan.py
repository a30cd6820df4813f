"""AFF-GAN: Skip-GANomaly whose skip connections are fused by attentional feature fusion (Sensors 2023).

Generator: the U-Net of Skip-GANomaly (pix2pix ``UnetGenerator`` with ``log2(S)`` levels down to
``1 x 1``, widths ``min(64 * 2^i, 512)``). Encoder level ``i``: ``[LeakyReLU(0.2)] -> Conv 4/2/1 ->
[BN]`` (no activation before the first conv, no BN on the first and the innermost conv). Decoder
level ``i``: ``ReLU -> ConvT 4/2/1 -> BN``, then the skip: the encoder feature ``X`` and the decoder
feature ``Y`` of the same shape are fused by AFF, ``Z = X * w + Y * (1 - w)`` with
``w = sigmoid(L(X + Y) + G(X + Y))`` (:class:`jaxad.nn.fusion.AttentionalFeatureFusion`, MS-CAM's
branches), or concatenated (Skip-GANomaly, ``fusion="concat"``), or dropped (``"none"``); the last
level is ``ReLU -> ConvT 4/2/1 -> Tanh`` to the image. Every ConvT is :class:`jaxad.nn.layers.Upsample2x`.

Discriminator: GANomaly / DCGAN (:class:`jaxad.nn.gan.Discriminator`); ``f(.)`` is its last feature map.

Training: CutPaste inputs ``x~`` (one rectangle, area U(0.02, 0.15), aspect log-uniform in
(0.3, 3.3), optional rotation and colour jitter), ``x^ = G(x~)``::

  L_G = w_adv L_adv + w_rec L_rec + w_lat L_lat      (w = 1, 40, 1)
  L_adv = -log D(x^)      L_rec = mean |x - x^|      L_lat = mean (f(x) - f(x^))^2
  L_D = BCE(D(x), 1) + BCE(D(x^), 0)

with Adam 2e-4 (betas 0.5 / 0.999) for both networks and GANomaly's D re-initialisation.
Score: ``A = gamma L_rec + (1 - gamma) L_lat`` per image (gamma = 0.9), min-max normalised over the
whole test set (:func:`normalize`); maps: the residual ``|x - G(x)|`` (channel mean, smoothed).

Ablations (Table 3 states 1-4, Table 4): ``fusion`` (``"concat"`` / ``"aff"``) x ``augmentation``
(``"none"`` / ``"cut_paste"`` / ``"random_erasing"``).

References:
  AFF-GAN, Sensors 2023 (``../shared/papers/001_*.txt``): Sect. 3 (Figs. 2-4, eqs. 1-14), Sect. 4.2
  (Adam 2e-4, betas 0.5 / 0.999, 400 epochs, batch 64, weights 1 / 40 / 1), Tables 2-4.
  Akcay et al., "Skip-GANomaly", IJCNN 2019 (generator, score); Isola et al., pix2pix (U-Net);
  Dai et al., "Attentional Feature Fusion", WACV 2021.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxad import augment
from jaxad.models import _gan
from jaxad.models._validate import check_images
from jaxad.models.protocol import Run
from jaxad.nn.fusion import AttentionalFeatureFusion
from jaxad.nn.gan import LEAKY_SLOPE, Discriminator, check_gan_size, dcgan_widths
from jaxad.nn.layers import Upsample2x, batch_norm, check_upsample, conv_layer
from jaxad.train.state import GANState, TrainState

__all__ = ["NAME", "FUSIONS", "AUGMENTATIONS", "STATES", "Config", "SkipUNet", "unet_widths", "init",
           "train_step", "reinit_discriminator", "predict", "normalize", "reconstruct",
           "anomaly_score", "param_count"]

NAME = "affgan"
FUSIONS = ("aff", "concat", "none")
AUGMENTATIONS = ("cut_paste", "random_erasing", "none")
SCORE_RECS = ("l1", "l2")
# AFF-GAN Table 3: (fusion, augmentation) of states 1-4.
STATES = {1: ("concat", "none"), 2: ("concat", "cut_paste"), 3: ("aff", "none"), 4: ("aff", "cut_paste")}


@dataclasses.dataclass(frozen=True)
class Config:
  """AFF-GAN hyper-parameters; defaults are the paper's (gaps: see BUILD_NOTES.md).

  Attributes:
    image_size: input side, a power of two in [32, 512] (paper: 256).
    channels: 1 or 3.
    base_features: width of the first U-Net level (pix2pix ngf: 64); levels double.
    max_features: cap on the U-Net widths (pix2pix: 8 * ngf = 512).
    disc_base_features: width of the discriminator's first block (DCGAN ndf: 64).
    fusion: ``"aff"`` (the method), ``"concat"`` (Skip-GANomaly) or ``"none"`` (no skips).
    aff_reduction: AFF channel reduction r (Dai et al.: 4).
    upsample: ``"auto"``, ``"transpose"`` or ``"subpixel"`` (same function, different speed).
    augmentation: ``"cut_paste"`` (the method), ``"random_erasing"`` (Table 4) or ``"none"``.
    area_ratio: CutPaste / random-erasing rectangle area range (0.02, 0.15).
    aspect_ratio: rectangle aspect-ratio range, log-uniform (0.3, 3.3).
    rotation: CutPaste patch rotation in degrees, uniform in [-rotation, rotation] (0 = off; the
      paper adjusts it for textures without a value).
    jitter: CutPaste colour-jitter strength (0 = off; CutPaste reference: 0.1, textures).
    adv_weight, rec_weight, lat_weight: loss weights (1, 40, 1).
    learning_rate, beta1, beta2: Adam of both networks (2e-4, 0.5, 0.999).
    d_reinit_threshold: re-initialise D when its loss is below this (GANomaly: 1e-5; 0 = never).
    weight_init: ``"dcgan"`` (N(0, 0.02)) or ``"lecun"``.
    score_gamma: gamma of the anomaly score (0.9).
    score_rec: ``"l1"`` (the paper's L_rec in the score) or ``"l2"`` (Skip-GANomaly's code scores
      with the mean squared residual).
    image_score: ``"paper"`` (the anomaly score A) or ``"map_max"`` (maximum of the smoothed
      residual map).
    smooth_sigma: Gaussian sigma of the residual maps in pixels (4; 0 = none).
  """
  image_size: int = 256
  channels: int = 3
  base_features: int = 64
  max_features: int = 512
  disc_base_features: int = 64
  fusion: str = "aff"
  aff_reduction: int = 4
  upsample: str = "auto"
  augmentation: str = "cut_paste"
  area_ratio: tuple[float, float] = (0.02, 0.15)
  aspect_ratio: tuple[float, float] = (0.3, 3.3)
  rotation: float = 0.0
  jitter: float = 0.0
  adv_weight: float = 1.0
  rec_weight: float = 40.0
  lat_weight: float = 1.0
  learning_rate: float = 2e-4
  beta1: float = 0.5
  beta2: float = 0.999
  d_reinit_threshold: float = 1e-5
  weight_init: str = "dcgan"
  score_gamma: float = 0.9
  score_rec: str = "l1"
  image_score: str = "paper"
  smooth_sigma: float = 4.0

  def __post_init__(self) -> None:
    check_gan_size(self.image_size)
    _gan.check_common(self)
    for name in ("base_features", "max_features", "disc_base_features", "aff_reduction"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"Config.{name} must be a positive int, got {v!r}")
    check_upsample(self.upsample)
    for name, value, allowed in (("fusion", self.fusion, FUSIONS),
                                 ("augmentation", self.augmentation, AUGMENTATIONS),
                                 ("score_rec", self.score_rec, SCORE_RECS),
                                 ("image_score", self.image_score, _gan.IMAGE_SCORES)):
      if value not in allowed:
        raise ValueError(f"Config.{name} must be one of {allowed}, got {value!r}")
    for name in ("rotation", "jitter", "adv_weight", "rec_weight", "lat_weight", "smooth_sigma"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"Config.{name} must be >= 0, got {getattr(self, name)}")
    if not 0.0 <= self.score_gamma <= 1.0:
      raise ValueError(f"Config.score_gamma must be in [0, 1], got {self.score_gamma}")

  @classmethod
  def state(cls, number: int, **kwargs: Any) -> "Config":
    """The config of Table 3's state ``number`` (1: concat, no augmentation ... 4: AFF + CutPaste)."""
    if number not in STATES:
      raise ValueError(f"AFF-GAN Table 3 has states {sorted(STATES)}, got {number!r}")
    fusion, aug = STATES[number]
    return cls(fusion=fusion, augmentation=aug, **kwargs)


def unet_widths(config: Config) -> tuple[int, ...]:
  """Widths of the ``log2(S)`` U-Net levels, ``min(base * 2^i, max_features)`` (pix2pix)."""
  n = check_gan_size(config.image_size) + 2
  return tuple(min(config.base_features * 2 ** i, config.max_features) for i in range(n))


class SkipUNet(nn.Module):
  """Skip-GANomaly's U-Net with fused skips: images ``[B, S, S, C]`` in ``[0, 1]`` -> ``[0, 1]``."""
  config: Config

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    cfg = self.config
    w = unet_widths(cfg)
    n = len(w)
    h = 2.0 * x - 1.0
    skips = []
    for i, c in enumerate(w):  # S/2, S/4, ..., 1
      if i > 0:
        h = nn.leaky_relu(h, LEAKY_SLOPE)
      h = conv_layer(c, 4, 2, 1, name=f"down{i}")(h)
      if 0 < i < n - 1:
        h = batch_norm(train, name=f"down{i}_bn")(h)
      skips.append(h)
    for i in range(n - 2, -1, -1):  # back up to S/2, fusing with the encoder feature of each size
      h = Upsample2x(w[i], cfg.upsample, use_bias=False, name=f"up{i + 1}")(nn.relu(h))
      h = batch_norm(train, name=f"up{i + 1}_bn")(h)
      if cfg.fusion == "aff":
        h = AttentionalFeatureFusion(cfg.aff_reduction, name=f"aff{i}")(skips[i], h, train)
      elif cfg.fusion == "concat":
        h = jnp.concatenate([skips[i], h], axis=-1)
    h = Upsample2x(cfg.channels, cfg.upsample, name="up0")(nn.relu(h))
    return (jnp.tanh(h) + 1.0) * 0.5


def _discriminator(config: Config) -> Discriminator:
  return Discriminator(dcgan_widths(config.image_size, config.disc_base_features))


def init(config: Config, run: Run, key: jax.Array, example_batch: dict[str, Any]) -> GANState:
  """A fresh AFF-GAN state (generator and discriminator train states).

  Args:
    config: :class:`Config`.
    run: the run (unused: constant learning rate).
    key: typed PRNG key.
    example_batch: a batch dict whose ``image`` ``[B, S, S, C]`` fixes the shapes.
  Returns:
    :class:`jaxad.train.state.GANState` at step 0.
  """
  del run
  _gan.check_init_args(config, Config, example_batch)
  return _gan.init_state(config, SkipUNet(config), _discriminator(config), key)


def param_count(config: Config) -> dict[str, int]:
  """Trainable parameters of ``{"generator", "discriminator"}`` for ``config``."""
  return _gan.param_count(config, SkipUNet(config), _discriminator(config))


def _augment(config: Config, key: jax.Array, images: jax.Array) -> jax.Array:
  if config.augmentation == "cut_paste":
    return augment.cut_paste(key, images, area_ratio=tuple(config.area_ratio),
                             aspect_ratio=tuple(config.aspect_ratio), rotation=config.rotation,
                             jitter=config.jitter)[0]
  if config.augmentation == "random_erasing":
    return augment.random_erasing(key, images, area_ratio=tuple(config.area_ratio),
                                  aspect_ratio=tuple(config.aspect_ratio))[0]
  return images


def reinit_discriminator(config: Config, d_state: TrainState, loss_d: jax.Array,
                         key: jax.Array) -> tuple[TrainState, jax.Array]:
  """GANomaly's D re-initialisation (:func:`jaxad.models._gan.reinit_discriminator`) for this D."""
  return _gan.reinit_discriminator(config, _discriminator(config), d_state, loss_d, key)


def _latent_distance(f_real: jax.Array, f_fake: jax.Array) -> jax.Array:
  """Per-image ``mean (f(x) - f(x^))^2`` over the discriminator's feature map."""
  return jnp.mean(jnp.square(f_real - f_fake), axis=(1, 2, 3))


def train_step(config: Config, run: Run, state: GANState, batch: dict[str, jax.Array],
               key: jax.Array) -> tuple[GANState, dict[str, jax.Array]]:
  """One joint step: augment, update G on ``L_adv + 40 L_rec + L_lat``, update D, maybe re-init D.

  Args:
    config: :class:`Config` (static).
    run: the run (static; unused).
    state: :class:`GANState` from :func:`init`.
    batch: ``image [B, S, S, C]`` float32 in ``[0, 1]``; optional ``valid [B]`` bool.
    key: the step's typed PRNG key.
  Returns:
    ``(new_state, metrics)``: float32 scalars ``loss_g``, ``adv``, ``rec``, ``lat``, ``loss_d`` and
    ``d_reinit``.
  """
  del run
  x, w, inputs, k_reinit = _gan.step_inputs(config, batch, key, _augment)
  gen, disc = SkipUNet(config), _discriminator(config)
  g_state, d_state = state.generator, state.discriminator

  def g_loss(params: Any) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any, jax.Array]]:
    fake, upd = gen.apply({"params": params, "batch_stats": g_state.batch_stats}, inputs,
                          train=True, mutable=["batch_stats"])
    (logit_fake, f_fake), _ = disc.apply(d_state.variables(), 2.0 * fake - 1.0, train=True,
                                         mutable=["batch_stats"])
    (_, f_real), _ = disc.apply(d_state.variables(), 2.0 * x - 1.0, train=True,
                                mutable=["batch_stats"])
    terms = {"adv": jax.nn.softplus(-logit_fake),
             "rec": jnp.mean(jnp.abs(x - fake), axis=(1, 2, 3)),
             "lat": _latent_distance(jax.lax.stop_gradient(f_real), f_fake)}
    means = {k: _gan.weighted_mean(v, w) for k, v in terms.items()}
    total = (config.adv_weight * means["adv"] + config.rec_weight * means["rec"]
             + config.lat_weight * means["lat"])
    means["loss_g"] = total
    return total, (means, upd["batch_stats"], fake)

  (_, (g_metrics, g_stats, fake)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(g_state.params)
  g_state = g_state.apply_gradients(_gan.optimizer(config), g_grads, batch_stats=g_stats)
  return _gan.finish_step(config, disc, state, g_state, g_metrics, 2.0 * x - 1.0, 2.0 * fake - 1.0, w,
                          k_reinit)


def reconstruct(config: Config, state: GANState, images: jax.Array) -> jax.Array:
  """``G(x)`` ``[B, S, S, C]`` in ``[0, 1]`` (BatchNorm running statistics). Jit-able."""
  check_images(images, config, "images")
  return SkipUNet(config).apply(state.generator.variables(), images, train=False)


def predict(config: Config, state: GANState,
            images: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
  """Raw per-image score terms and residual maps for a batch. Jit-able.

  Returns:
    ``scores = {"rec": [B], "lat": [B], "map_max": [B]}`` (``rec`` = mean ``|x - G(x)|`` or its square, see
    ``score_rec``; ``lat`` = mean ``(f(x) - f(G(x)))^2``; combined by :func:`normalize` over the whole
    test set) and ``maps [B, S, S]`` (``|x - G(x)|`` channel mean, smoothed).
  """
  check_images(images, config, "images")
  fake = reconstruct(config, state, images)
  disc = _discriminator(config)
  d_vars = state.discriminator.variables()
  (_, f_real), (_, f_fake) = (disc.apply(d_vars, 2.0 * v - 1.0, train=False) for v in (images, fake))
  residual = jnp.abs(images - fake)
  rec = jnp.mean(residual if config.score_rec == "l1" else jnp.square(residual), axis=(1, 2, 3))
  amap = _gan.residual_map(config, images, fake)
  return {"rec": rec, "lat": _latent_distance(f_real, f_fake), "map_max": jnp.max(amap, axis=(1, 2))}, amap


def anomaly_score(config: Config, rec: np.ndarray, lat: np.ndarray) -> np.ndarray:
  """``A = gamma L_rec + (1 - gamma) L_lat`` (eq. 14), per image, not normalised."""
  return (config.score_gamma * np.asarray(rec, np.float64)
          + (1.0 - config.score_gamma) * np.asarray(lat, np.float64))


def normalize(config: Config, scores: dict[str, np.ndarray],
              maps_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The anomaly score (or the map maximum) then min-max over the whole test set (scores and maps
  separately)."""
  raw = (anomaly_score(config, scores["rec"], scores["lat"]) if config.image_score == "paper"
         else scores["map_max"])
  return _gan.minmax(raw), _gan.minmax(maps_)
