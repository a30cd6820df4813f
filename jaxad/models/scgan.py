"""SCGAN: semantic-CopyPaste GAN with multi-scale channel attention (IEEE Access 2023).

Training: every normal image ``x`` goes through CopyPaste (N = 30 square patches of 1 % of the
image area copied within the image, :func:`jaxad.augment.copy_paste`) to ``x~``. The generator
``G = E1 -> decoder -> E2`` (GANomaly's encoder-decoder-encoder, MS-CAM after every feature-map
block of E1) reconstructs the *clean* image; ``z1 = E1(x~)``, ``x^ = G(x~)``, ``z2 = E2(x^)``::

  L_G = a1 L_enc + a2 L_con + a3 L_adv + a4 L_SSIM           (eq. 10; a = 1, 40, 1, 40)
  L_enc = mean (z1 - z2)^2     L_con = mean |x - x^|     L_adv = -log D(x^)     L_SSIM = 1 - SSIM(x^, x)
  L_D = BCE(D(x), 1) + BCE(D(x^), 0)

One jitted step updates G (Adam 2e-4, betas 0.5 / 0.999) then D (its own Adam), and re-initialises
D when its loss falls below 1e-5 (GANomaly's rule) with ``jnp.where``, so the step stays one
compiled function.

Testing: ``x^ = G(x)``; per image ``L_con`` and ``L_enc`` (:func:`predict` returns both);
``AS = beta L_con + (1 - beta) L_enc`` (eq. 11, beta = 0.8) min-max normalised over the whole test
set by :func:`normalize` (never per batch). Anomaly maps: the residual ``|x - x^|`` (channel mean),
Gaussian-smoothed, min-max normalised over the test set.

Value ranges: images are ``[0, 1]`` at every public function; the networks see ``2 x - 1`` and the
Tanh output is mapped back with ``(y + 1) / 2``, so every loss is computed in ``[0, 1]`` space
(GANomaly computes L_con in ``[-1, 1]``, twice as large: the same minimiser, a2 effectively halved).

Ablations (config switches): ``use_mscam`` and ``ssim_weight = 0`` (Table 4, structures 1-4),
``num_patches`` (Table 3: 10 / 30 / 50 / 100), ``augmentation`` (Table 6: ``cutout``,
``cutout_color``, ``confetti``, ``copy_paste``, ``copy_paste_jitter``; and ``none``).

References:
  SCGAN, IEEE Access 2023 (``../shared/papers/000_*.txt``): Sect. III (Figs. 2-4, eqs. 1-11),
  Sect. IV-A (Adam 2e-4, betas 0.5 / 0.999, 400 epochs, batch 64, weights 1 / 40 / 1 / 40),
  Tables 1, 3-6. GANomaly (Akcay et al., ACCV 2018) for the layout, D re-initialisation, init.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxad import augment, losses
from jaxad.models import _gan
from jaxad.models._validate import check_images
from jaxad.models.protocol import Run
from jaxad.nn.gan import DCGANDecoder, DCGANEncoder, Discriminator, check_gan_size, dcgan_widths
from jaxad.nn.layers import check_upsample
from jaxad.train.state import GANState, TrainState

__all__ = ["NAME", "AUGMENTATIONS", "Config", "Generator", "widths", "init", "train_step",
           "reinit_discriminator", "predict", "normalize", "reconstruct", "anomaly_score", "param_count"]

NAME = "scgan"
AUGMENTATIONS = ("none", "copy_paste", "copy_paste_jitter", "cutout", "cutout_color", "confetti")
ENCODER_LOSSES = ("mse", "l2")


@dataclasses.dataclass(frozen=True)
class Config:
  """SCGAN hyper-parameters; defaults are the paper's (gaps: see BUILD_NOTES.md).

  Attributes:
    image_size: input side, a power of two in [32, 512] (paper: 256).
    channels: 1 or 3.
    base_features: width of the first encoder block (GANomaly ndf / ngf: 64); blocks double.
    max_features: optional cap on every width (``None``: uncapped, 2048 at 256 px).
    latent_dim: size of z1 / z2 (GANomaly nz: 100).
    use_mscam: MS-CAM after every feature-map block of E1 (Table 4 structures 3-4).
    mscam_reduction: MS-CAM channel reduction r (paper: 4).
    mscam_inner_bn: BatchNorm between MS-CAM's point-wise convs (see :mod:`jaxad.nn.fusion`).
    upsample: ``"auto"``, ``"transpose"`` or ``"subpixel"`` (:class:`jaxad.nn.layers.Upsample2x`).
    augmentation: one of :data:`AUGMENTATIONS` (Table 6); ``"copy_paste"`` is the method.
    num_patches: N patches of CopyPaste / Cutout / Confetti (Table 3: 30).
    patch_area: area of one CopyPaste / Cutout square as a fraction of the image (1 %).
    jitter: colour-jitter strength per patch for ``"copy_paste_jitter"`` (paper: on for textures,
      strength not given; 0.1 as the CutPaste reference).
    enc_weight, con_weight, adv_weight, ssim_weight: a1..a4 of eq. 10 (1, 40, 1, 40);
      ``ssim_weight = 0`` removes the SSIM loss (Table 4 structures 1 and 3).
    encoder_loss: ``"mse"`` (mean squared error, the text's "MSE error") or ``"l2"`` (eq. 4 as
      printed: the Euclidean norm of z1 - z2).
    learning_rate, beta1, beta2: Adam of both networks (2e-4, 0.5, 0.999).
    d_reinit_threshold: re-initialise D when its loss is below this (GANomaly: 1e-5; 0 = never).
    weight_init: ``"dcgan"`` (GANomaly's N(0, 0.02)) or ``"lecun"`` (Flax defaults).
    score_beta: beta of eq. 11 (0.8).
    image_score: ``"paper"`` (eq. 11, the method) or ``"map_max"`` (the maximum of the smoothed
      residual map, as the reconstruction methods score; a reading measured in BUILD_NOTES.md).
    smooth_sigma: Gaussian sigma of the residual maps in pixels (4; 0 = none).
  """
  image_size: int = 256
  channels: int = 3
  base_features: int = 64
  max_features: int | None = None
  latent_dim: int = 100
  use_mscam: bool = True
  mscam_reduction: int = 4
  mscam_inner_bn: bool = True
  upsample: str = "auto"
  augmentation: str = "copy_paste"
  num_patches: int = 30
  patch_area: float = 0.01
  jitter: float = 0.1
  enc_weight: float = 1.0
  con_weight: float = 40.0
  adv_weight: float = 1.0
  ssim_weight: float = 40.0
  encoder_loss: str = "mse"
  learning_rate: float = 2e-4
  beta1: float = 0.5
  beta2: float = 0.999
  d_reinit_threshold: float = 1e-5
  weight_init: str = "dcgan"
  score_beta: float = 0.8
  image_score: str = "paper"
  smooth_sigma: float = 4.0

  def __post_init__(self) -> None:
    check_gan_size(self.image_size)
    for name in ("base_features", "latent_dim", "mscam_reduction"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"Config.{name} must be a positive int, got {v!r}")
    if self.max_features is not None and (not isinstance(self.max_features, (int, np.integer))
                                          or self.max_features < 1):
      raise ValueError(f"Config.max_features must be None or a positive int, got {self.max_features!r}")
    check_upsample(self.upsample)
    _gan.check_common(self)
    for name, value, allowed in (("augmentation", self.augmentation, AUGMENTATIONS),
                                 ("encoder_loss", self.encoder_loss, ENCODER_LOSSES),
                                 ("image_score", self.image_score, _gan.IMAGE_SCORES)):
      if value not in allowed:
        raise ValueError(f"Config.{name} must be one of {allowed}, got {value!r}")
    if isinstance(self.num_patches, bool) or not isinstance(self.num_patches, int) or self.num_patches < 0:
      raise ValueError(f"Config.num_patches must be an int >= 0, got {self.num_patches!r}")
    if not 0.0 < self.patch_area < 1.0:
      raise ValueError(f"Config.patch_area must be in (0, 1), got {self.patch_area}")
    for name in ("jitter", "enc_weight", "con_weight", "adv_weight", "ssim_weight", "smooth_sigma"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"Config.{name} must be >= 0, got {getattr(self, name)}")
    if not 0.0 <= self.score_beta <= 1.0:
      raise ValueError(f"Config.score_beta must be in [0, 1], got {self.score_beta}")


def widths(config: Config) -> tuple[int, ...]:
  """Feature-map block widths of E1, E2, D and (backwards) the decoder."""
  return dcgan_widths(config.image_size, config.base_features, config.max_features)


class Generator(nn.Module):
  """``E1 -> decoder -> E2``: images ``[B, S, S, C]`` in ``[0, 1]`` -> ``(x^, z1, z2)``.

  ``x^ [B, S, S, C]`` in ``[0, 1]``; ``z1, z2 [B, latent_dim]``.
  """
  config: Config

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    cfg, w = self.config, widths(self.config)
    h = 2.0 * x - 1.0
    z1, _ = DCGANEncoder(w, cfg.latent_dim, attention=cfg.use_mscam,
                         attention_reduction=cfg.mscam_reduction,
                         attention_inner_bn=cfg.mscam_inner_bn, name="encoder1")(h, train)
    y = DCGANDecoder(w, cfg.channels, cfg.upsample, name="decoder")(z1, train)
    z2, _ = DCGANEncoder(w, cfg.latent_dim, name="encoder2")(y, train)
    return (y + 1.0) * 0.5, z1, z2


def _discriminator(config: Config) -> Discriminator:
  return Discriminator(widths(config))


def init(config: Config, run: Run, key: jax.Array, example_batch: dict[str, Any]) -> GANState:
  """A fresh SCGAN state: generator and discriminator train states (parameters, BN, Adam).

  Args:
    config: :class:`Config`.
    run: the run (unused: constant learning rate).
    key: typed PRNG key.
    example_batch: a batch dict whose ``image`` ``[B, S, S, C]`` fixes the shapes.
  Returns:
    :class:`jaxad.train.state.GANState` at step 0.
  Raises:
    TypeError / ValueError: wrong config type, image shape or dtype.
  """
  del run
  _gan.check_init_args(config, Config, example_batch)
  return _gan.init_state(config, Generator(config), _discriminator(config), key)


def param_count(config: Config) -> dict[str, int]:
  """Trainable parameters of ``{"generator", "discriminator"}`` for ``config``."""
  return _gan.param_count(config, Generator(config), _discriminator(config))


def _augment(config: Config, key: jax.Array, images: jax.Array) -> jax.Array:
  kind, n, area = config.augmentation, config.num_patches, config.patch_area
  if kind == "none" or n == 0:
    return images
  if kind in ("copy_paste", "copy_paste_jitter"):
    jitter = config.jitter if kind == "copy_paste_jitter" else 0.0
    return augment.copy_paste(key, images, num_patches=n, area_ratio=area, jitter=jitter)[0]
  if kind in ("cutout", "cutout_color"):
    fill = "black" if kind == "cutout" else "random"
    return augment.cutout(key, images, num_patches=n, area_ratio=area, fill=fill)[0]
  return augment.confetti(key, images, num_patches=n)[0]


def _encoder_distance(config: Config, z1: jax.Array, z2: jax.Array) -> jax.Array:
  """Per-image ``L_enc``: ``mean_j (z1 - z2)_j^2`` (``"mse"``) or ``||z1 - z2||_2`` (``"l2"``)."""
  sq = jnp.square(z1 - z2)
  if config.encoder_loss == "mse":
    return jnp.mean(sq, axis=-1)
  return jnp.sqrt(jnp.sum(sq, axis=-1) + 1e-12)


def reinit_discriminator(config: Config, d_state: TrainState, loss_d: jax.Array,
                         key: jax.Array) -> tuple[TrainState, jax.Array]:
  """GANomaly's D re-initialisation (:func:`jaxad.models._gan.reinit_discriminator`) for SCGAN's D."""
  return _gan.reinit_discriminator(config, _discriminator(config), d_state, loss_d, key)


def train_step(config: Config, run: Run, state: GANState, batch: dict[str, jax.Array],
               key: jax.Array) -> tuple[GANState, dict[str, jax.Array]]:
  """One joint step: augment, update G on eq. 10, update D on BCE, maybe re-initialise D.

  Written for the global batch (no axis names); the engine shards it.

  Args:
    config: :class:`Config` (static).
    run: the run (static; unused).
    state: :class:`GANState` from :func:`init`.
    batch: ``image [B, S, S, C]`` float32 in ``[0, 1]`` (normal images); optional ``valid [B]``
      bool (padding rows get weight 0 in every loss; they still enter BatchNorm statistics).
    key: the step's typed PRNG key (augmentation geometry, D re-initialisation).
  Returns:
    ``(new_state, metrics)``: float32 scalars ``loss_g``, ``enc``, ``con``, ``adv``, ``ssim_loss``,
    ``loss_d`` (weighted means over valid images) and ``d_reinit`` (1.0 when D was re-initialised).
  """
  del run
  x, w, inputs, k_reinit = _gan.step_inputs(config, batch, key, _augment)
  gen, disc = Generator(config), _discriminator(config)
  g_state, d_state = state.generator, state.discriminator
  tx = _gan.optimizer(config)

  def g_loss(params: Any) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any, jax.Array]]:
    (fake, z1, z2), upd = gen.apply({"params": params, "batch_stats": g_state.batch_stats}, inputs,
                                    train=True, mutable=["batch_stats"])
    (logit_fake, _), _ = disc.apply(d_state.variables(), 2.0 * fake - 1.0, train=True,
                                    mutable=["batch_stats"])
    terms = {"enc": _encoder_distance(config, z1, z2),
             "con": jnp.mean(jnp.abs(x - fake), axis=(1, 2, 3)),
             "adv": jax.nn.softplus(-logit_fake)}
    if config.ssim_weight > 0:
      terms["ssim_loss"] = losses.ssim_loss(fake, x, max_val=1.0)
    means = {k: _gan.weighted_mean(v, w) for k, v in terms.items()}
    total = (config.enc_weight * means["enc"] + config.con_weight * means["con"]
             + config.adv_weight * means["adv"])
    if config.ssim_weight > 0:
      total = total + config.ssim_weight * means["ssim_loss"]
    means["loss_g"] = total
    return total, (means, upd["batch_stats"], fake)

  (_, (g_metrics, g_stats, fake)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(g_state.params)
  g_state = g_state.apply_gradients(tx, g_grads, batch_stats=g_stats)
  return _gan.finish_step(config, disc, state, g_state, g_metrics, 2.0 * x - 1.0, 2.0 * fake - 1.0, w,
                          k_reinit)


def reconstruct(config: Config, state: GANState, images: jax.Array) -> jax.Array:
  """``G(x)`` ``[B, S, S, C]`` in ``[0, 1]`` (BatchNorm running statistics). Jit-able."""
  check_images(images, config, "images")
  return Generator(config).apply(state.generator.variables(), images, train=False)[0]


def predict(config: Config, state: GANState,
            images: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
  """Raw per-image score terms and residual maps for a batch. Jit-able.

  Args:
    config: :class:`Config` (static).
    state: trained :class:`GANState`.
    images: ``[B, S, S, C]`` float32 in ``[0, 1]``.
  Returns:
    ``scores = {"con": L_con [B], "enc": L_enc [B], "map_max": [B]}`` (not normalised:
    :func:`normalize` combines them over the whole test set) and ``maps [B, S, S]``: ``|x - G(x)|`` channel mean, smoothed.
  """
  check_images(images, config, "images")
  fake, z1, z2 = Generator(config).apply(state.generator.variables(), images, train=False)
  amap = _gan.residual_map(config, images, fake)
  scores = {"con": jnp.mean(jnp.abs(images - fake), axis=(1, 2, 3)),
            "enc": _encoder_distance(config, z1, z2), "map_max": jnp.max(amap, axis=(1, 2))}
  return scores, amap


def anomaly_score(config: Config, con: np.ndarray, enc: np.ndarray) -> np.ndarray:
  """``AS = beta L_con + (1 - beta) L_enc`` (eq. 11), per image, not normalised."""
  return (config.score_beta * np.asarray(con, np.float64)
          + (1.0 - config.score_beta) * np.asarray(enc, np.float64))


def normalize(config: Config, scores: dict[str, np.ndarray],
              maps_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Eq. 11 (or the map maximum, ``image_score="map_max"``) then min-max over the whole test set.

  Args:
    config: :class:`Config`.
    scores: ``{"con", "enc", "map_max"}``, each ``[N]``, from :func:`predict` over the whole test set.
    maps_: ``[N, S, S]`` residual maps of the same images.
  Returns:
    ``scores [N]`` in ``[0, 1]`` and ``maps [N, S, S]`` in ``[0, 1]`` (one min and max over all
    pixels of all maps), float32. A constant input gives zeros.
  """
  raw = (anomaly_score(config, scores["con"], scores["enc"]) if config.image_score == "paper"
         else scores["map_max"])
  return _gan.minmax(raw), _gan.minmax(maps_)
