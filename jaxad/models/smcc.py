"""SMCC: self-updated memory bank and GMM centre clustering over pretrained patch features.

Method (Liu et al., IEEE TIM 2023, Algorithm 1):

1. **Patch features** (Sec. III-A): backbone layers fused into one map (each resized to the common
   grid ``image_size / feature_stride``, optional 3x3 local average and fixed projection; see
   :mod:`jaxad.models.patch_features`), one vector per grid position.
2. **Centre set** (Sec. III-B, Algorithm 2): sensitivity coreset of ``coreset_rate * N`` training
   patches (:func:`jaxad.cluster.sensitivity_coreset`), weighted GMM-EM with ``gmm_k`` components
   (:func:`jaxad.cluster.gmm_em`); the centres ``C`` are the GMM means.
3. **Self-updated memory bank** (Sec. III-C): for ``epochs`` (W) passes over batches of
   ``batch_size`` images, minimise ``L_c + L_o`` w.r.t. the backbone (Adam, coupled weight decay):

       L_c = mean_i min_n D(P_i, C_n)                          (Eq. 4)
       L_o = mean_i D(P_i, C_(1)) - D(P_i, C_(2))              (Eq. 5; nearest minus 2nd nearest)

   with ``D`` the Euclidean distance and ``i`` over the valid patches of the batch. The memory bank
   holds the patches of the latest batch (``batch_size * h * w`` vectors: its size does not depend
   on the number of training images); the backbone + bank of the step with the lowest loss are kept.
4. **Scoring** (Sec. III-D, Eqs. 7-8): patch score = mean Euclidean distance to the ``knn_k``
   nearest bank entries; image score = max over patches; map = bilinear upsampling to the image
   size + Gaussian smoothing (``sigma``).

``L_o`` is bounded: by the triangle inequality ``D(P,C_1) - D(P,C_2) >= -D(C_1,C_2)``, so
``L_c + L_o`` cannot diverge to ``-inf`` (``lo_margin`` offers a hinge variant all the same).

Interface (CONTRIBUTING.md "One interface for every method"): :class:`Config`, :func:`init`,
:func:`train_step` (one self-update step, global-batch semantics, jit-able and shardable),
:func:`fit` (features -> coreset -> GMM centres -> W epochs of self-update), :func:`predict`.

References:
  Y. Liu, X. Gao, J. Z. Wen, H. Luo, "Unsupervised Image Anomaly Detection and Localization in
  Industry Based on Self-Updated Memory and Center Clustering", IEEE TIM 72, 2023 (Algorithms 1-2,
  Eqs. 4-8, Table II); Roth et al., PatchCore, CVPR 2022 (anomaly maps, local aggregation).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxad import backbones, cluster, maps as maps_lib
from jaxad.cluster.knn import knn_core
from jaxad.models import patch_features as pf
from jaxad.progress import Progress, log
from jaxad.train import compile as xla_compile
from jaxad.train.mesh import data_sharding, make_mesh, replicate, replicated_sharding
from jaxad.train.state import step_key

__all__ = ["Config", "SMCCState", "init", "train_step", "fit", "predict", "patch_features",
           "extract_patches", "with_bank", "memory_bytes", "grid_size", "feature_dim",
           "center_losses"]

PyTree = Any
_HI = jax.lax.Precision.HIGHEST
_KNN_BLOCK = 2048


@dataclasses.dataclass(frozen=True)
class Config:
  """SMCC hyper-parameters; defaults are the paper's (Table II) with documented gap choices.

  Attributes:
    image_size: square input side in pixels (paper: 224).
    channels: 1 (replicated to RGB inside) or 3.
    backbone: name in :data:`jaxad.backbones.NAMES` (paper: WRN50-2).
    layers: backbone layers fused (paper: layers 1-4 of the ResNet).
    weights_path: torchvision ``.pth`` for the backbone; ``None`` = installed package / torch cache.
    pretrained: False initialises the backbone randomly (tests only).
    feature_stride: common grid = ``ceil(image_size / feature_stride)`` (8: 28x28 at 224).
    pool: odd local averaging window per layer (1 = none; PatchCore: 3).
    projection: ``"none"``, ``"random"`` or ``"channel_avg"`` (see ``patch_features``).
    target_dim: projected dimension (``None`` = keep the fused dimension).
    coreset_rate: sensitivity-coreset size as a fraction of the training patches (paper: 0.1).
    gmm_k: GMM components = number of centres (paper: 10).
    gmm_covariance: ``"diag"`` or ``"full"``.
    gmm_reg_covar: added to the covariance diagonals (only the means are used).
    gmm_max_iter: EM iterations.
    epochs: W, self-update epochs (0 = no self-update: SPADE/PatchCore-like ablation).
    batch_size: images per self-update step = images in the memory bank (paper: 16).
    learning_rate: Adam step size (paper: 1e-3).
    weight_decay: L2 added to the gradient, PyTorch ``Adam(weight_decay=...)`` (paper: 5e-4).
    trainable: ``"conv"`` (convolution kernels only; BN affine and classifier frozen) or ``"all"``.
    use_lo: add ``L_o`` to ``L_c`` (False: the "L_c only" ablation).
    lo_margin: ``None`` = Eq. 5 as written; a float ``m`` uses ``relu(d1 - d2 + m)`` instead.
    knn_k: K nearest bank entries averaged for a patch score (paper: "K", value not given).
    sigma: Gaussian smoothing of the upsampled map in pixels (PatchCore: 4).
  """
  image_size: int = 224
  channels: int = 3
  backbone: str = "wide_resnet50_2"
  layers: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
  weights_path: str | None = None
  pretrained: bool = True
  feature_stride: int = 8
  pool: int = 3
  projection: str = "none"
  target_dim: int | None = None
  coreset_rate: float = 0.1
  gmm_k: int = 10
  gmm_covariance: str = "diag"
  gmm_reg_covar: float = 1e-3
  gmm_max_iter: int = 100
  epochs: int = 3
  batch_size: int = 16
  learning_rate: float = 1e-3
  weight_decay: float = 5e-4
  trainable: str = "conv"
  use_lo: bool = True
  lo_margin: float | None = None
  knn_k: int = 3
  sigma: float = 4.0

  def __post_init__(self):
    if isinstance(self.layers, str) or not isinstance(self.layers, Sequence):
      raise TypeError(f"layers: expected a tuple of layer names, got {self.layers!r}")
    object.__setattr__(self, "layers", tuple(self.layers))
    if self.backbone not in backbones.NAMES:
      raise ValueError(f"backbone: expected one of {list(backbones.NAMES)}, got {self.backbone!r}")
    avail = backbones.FEATURE_LAYERS[self.backbone]
    if not self.layers or any(l not in avail for l in self.layers):
      raise ValueError(f"layers: expected a non-empty subset of {list(avail)} for {self.backbone}, "
                       f"got {list(self.layers)}")
    for name in ("image_size", "feature_stride", "gmm_k", "batch_size", "knn_k", "gmm_max_iter"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if self.image_size < 32:
      raise ValueError(f"image_size: expected >= 32, got {self.image_size}")
    if self.channels not in (1, 3):
      raise ValueError(f"channels: expected 1 or 3, got {self.channels!r}")
    if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
      raise ValueError(f"epochs: expected an int >= 0, got {self.epochs!r}")
    if not isinstance(self.pool, int) or self.pool < 1 or self.pool % 2 == 0:
      raise ValueError(f"pool: expected an odd int >= 1, got {self.pool!r}")
    if self.projection not in pf.PROJECTIONS:
      raise ValueError(f"projection: expected one of {pf.PROJECTIONS}, got {self.projection!r}")
    if self.target_dim is not None and (not isinstance(self.target_dim, int) or self.target_dim < 1):
      raise ValueError(f"target_dim: expected None or an int >= 1, got {self.target_dim!r}")
    if not 0.0 < self.coreset_rate <= 1.0:
      raise ValueError(f"coreset_rate: expected a value in (0, 1], got {self.coreset_rate!r}")
    if self.gmm_covariance not in ("diag", "full"):
      raise ValueError(f"gmm_covariance: expected 'diag' or 'full', got {self.gmm_covariance!r}")
    if self.trainable not in ("conv", "all"):
      raise ValueError(f"trainable: expected 'conv' or 'all', got {self.trainable!r}")
    if not self.learning_rate > 0 or not self.weight_decay >= 0:
      raise ValueError(f"learning_rate must be > 0 and weight_decay >= 0, got "
                       f"{self.learning_rate!r}, {self.weight_decay!r}")
    if self.lo_margin is not None and not self.lo_margin >= 0:
      raise ValueError(f"lo_margin: expected None or a value >= 0, got {self.lo_margin!r}")
    if not self.sigma >= 0:
      raise ValueError(f"sigma: expected >= 0, got {self.sigma!r}")


class SMCCState(struct.PyTreeNode):
  """SMCC's state: backbone, optimiser, centres, memory bank and the best (backbone, bank) so far.

  Attributes:
    step: int32 scalar, self-update steps applied.
    key: the run's base PRNG key (typed).
    params, batch_stats: backbone variables (``params`` = the current, after :func:`fit` the best).
    opt_state: optax state of the self-update optimiser.
    centres: ``[gmm_k, D]`` GMM means (zeros until :func:`fit`).
    bank: ``[S, D]`` memory bank, ``S = batch_size * h * w`` rounded up to the kNN block.
    bank_valid: ``[S]`` bool, False for empty slots (padding rows, rounding).
    best_params: backbone params of the lowest-loss step (the params that produced its patches).
    best_bank, best_bank_valid: that step's patches.
    best_loss: float32 scalar, the lowest ``L_c (+ L_o)`` seen (``inf`` before the first step).
    projection: ``[D_raw, D]`` fixed projection or ``None``.
    config: the :class:`Config` (static).
    tx: the optax transformation (static).
  """
  step: jax.Array
  key: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  centres: jax.Array
  bank: jax.Array
  bank_valid: jax.Array
  best_params: PyTree
  best_bank: jax.Array
  best_bank_valid: jax.Array
  best_loss: jax.Array
  projection: jax.Array | None
  config: Config = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)


# ----------------------------------------------------------------------------- features


def grid_size(config: Config) -> tuple[int, int]:
  """``(h, w)`` of the common patch grid: ``ceil(image_size / feature_stride)`` each."""
  g = -(-config.image_size // config.feature_stride)
  return g, g


def feature_dim(config: Config) -> int:
  """Patch-vector dimension ``D`` (fused channels, or ``target_dim`` when projected)."""
  raw = sum(backbones.FEATURE_LAYERS[config.backbone][l][1] for l in config.layers)
  if config.projection != "none" and config.target_dim is not None and config.target_dim < raw:
    return config.target_dim
  return raw


def _to_rgb(images: jax.Array, config: Config) -> jax.Array:
  if images.ndim != 4 or images.shape[-1] != config.channels:
    raise ValueError(f"images: expected [B, H, W, {config.channels}], got {tuple(images.shape)}")
  images = images.astype(jnp.float32)
  return jnp.repeat(images, 3, axis=-1) if config.channels == 1 else images


def patch_features(config: Config, variables: Mapping[str, Any], projection: jax.Array | None,
                   images: jax.Array, *, train: bool = False) -> jax.Array:
  """Fused patch features of ``images`` (jit-able; gradients flow to ``params`` if ``train``).

  Args:
    config: the model config (static).
    variables: backbone ``{"params", "batch_stats"}``.
    projection: ``[D_raw, D]`` or ``None``.
    images: ``[B, H, W, channels]`` float32 in [0, 1].
    train: let gradients flow into the backbone (BN statistics stay frozen either way).

  Returns:
    ``[B, h, w, D]`` float32, ``(h, w) = grid_size(config)`` when ``H = W = image_size``.
  """
  images = _to_rgb(images, config)
  module = backbones.create(config.backbone)
  feats = backbones.extract_features(module, variables, images, config.layers, train=train)
  g = (-(-images.shape[1] // config.feature_stride), -(-images.shape[2] // config.feature_stride))
  return pf.fuse_layers(feats, config.layers, g, pool=config.pool, projection=projection)


def _sq_dists(x: jax.Array, c: jax.Array) -> jax.Array:
  """``[N, k]`` squared Euclidean distances between rows of ``x [N, D]`` and ``c [k, D]``."""
  xx = jnp.sum(x * x, axis=1, keepdims=True)
  cc = jnp.sum(c * c, axis=1)
  return jnp.maximum(xx - 2.0 * jnp.matmul(x, c.T, precision=_HI) + cc[None], 0.0)


def center_losses(patches: jax.Array, centres: jax.Array, weights: jax.Array, *,
                  lo_margin: float | None = None, eps: float = 1e-8) -> tuple[jax.Array, jax.Array]:
  """SMCC's centre losses ``(L_c, L_o)`` as weighted means over patches.

  Args:
    patches: ``[N, D]`` patch features.
    centres: ``[k, D]`` centres (``k >= 2``; with ``k = 1``, ``L_o = 0``).
    weights: ``[N]`` float, 1 for valid patches, 0 for padding.
    lo_margin: ``None`` -> ``d1 - d2`` (Eq. 5); a float ``m`` -> ``relu(d1 - d2 + m)``.
    eps: added inside the square root (finite gradients at zero distance).

  Returns:
    ``L_c = sum_i w_i d1_i / sum_i w_i`` and ``L_o = sum_i w_i (d1_i - d2_i) / sum_i w_i`` with
    ``d1 <= d2`` the Euclidean distances to the nearest and second-nearest centres.

  References:
    SMCC Eqs. (4)-(6).
  """
  d = jnp.sqrt(_sq_dists(patches, centres) + eps)
  denom = jnp.maximum(jnp.sum(weights), 1.0)
  if centres.shape[0] == 1:
    d1 = d[:, 0]
    return jnp.sum(weights * d1) / denom, jnp.zeros((), jnp.float32)
  neg, _ = jax.lax.top_k(-d, 2)
  d1, d2 = -neg[:, 0], -neg[:, 1]
  lo = d1 - d2 if lo_margin is None else jax.nn.relu(d1 - d2 + lo_margin)
  return jnp.sum(weights * d1) / denom, jnp.sum(weights * lo) / denom


# ----------------------------------------------------------------------------- bank layout


def _bank_layout(n: int) -> tuple[int, int]:
  """``(slots, block)`` for ``n`` bank entries: slots a multiple of the kNN block."""
  if n <= 4096:
    s = -(-n // 8) * 8
    return s, s
  s = -(-n // _KNN_BLOCK) * _KNN_BLOCK
  return s, _KNN_BLOCK


def _pack(patches: jax.Array, valid: jax.Array, slots: int) -> tuple[jax.Array, jax.Array]:
  """Pads ``[n, D]`` patches / ``[n]`` validity to ``slots`` rows (zeros, invalid)."""
  n = patches.shape[0]
  if n > slots:
    raise ValueError(f"memory bank: {n} patches do not fit in {slots} slots")
  return (jnp.pad(patches, ((0, slots - n), (0, 0))),
          jnp.pad(valid.astype(bool), (0, slots - n), constant_values=False))


def _patch_valid(valid: jax.Array, grid: tuple[int, int]) -> jax.Array:
  return jnp.repeat(valid.astype(bool), grid[0] * grid[1])


# ----------------------------------------------------------------------------- interface


@functools.lru_cache(maxsize=32)
def _make_tx(config: Config) -> optax.GradientTransformation:
  """The self-update optimiser, one object per (equal) config.

  ``tx`` is a static field of :class:`SMCCState`, so it is part of the state's tree structure: a
  fresh optax object per :func:`init` would make every jitted function taking the state (features,
  train step, predict) recompile after each ``init`` with the same config. Caching keeps it equal.
  """
  inner = optax.chain(optax.add_decayed_weights(config.weight_decay),
                      optax.adam(config.learning_rate))
  if config.trainable == "all":
    return inner

  def labels(params):
    return jax.tree.map(lambda m: "train" if m else "freeze", backbones.conv_kernel_mask(params))

  return optax.multi_transform({"train": inner, "freeze": optax.set_to_zero()}, labels)


def _check_batch(batch: Mapping[str, Any], config: Config, name: str = "batch") -> None:
  if not isinstance(batch, Mapping) or "image" not in batch:
    raise TypeError(f"{name}: expected a dict with 'image' [B,H,W,C], got {type(batch).__name__}")
  shape = tuple(np.shape(batch["image"]))
  want = (config.image_size, config.image_size, config.channels)
  if len(shape) != 4 or shape[1:] != want:
    raise ValueError(f"{name}['image']: expected shape [B, {want[0]}, {want[1]}, {want[2]}] "
                     f"(config.image_size, config.channels), got {shape}")
  if not np.issubdtype(np.asarray(batch["image"]).dtype, np.floating):
    raise TypeError(f"{name}['image']: expected float32 in [0, 1], got {np.asarray(batch['image']).dtype}")


def init(key: jax.Array, config: Config, example_batch: Mapping[str, Any]) -> SMCCState:
  """Loads (or randomly initialises) the backbone and allocates centres and memory bank.

  Args:
    key: PRNG key (random init and random projection).
    config: :class:`Config`.
    example_batch: a batch dict with ``image [B, image_size, image_size, channels]`` (only its
      shape is checked).

  Returns:
    :class:`SMCCState` at step 0 with zero centres, an empty bank and ``best_loss = inf``.

  Raises:
    FileNotFoundError: pretrained weights missing (message says how to get them).
    ValueError/TypeError: config or example batch inconsistent.
  """
  if not isinstance(config, Config):
    raise TypeError(f"config: expected smcc.Config, got {type(config).__name__}")
  _check_batch(example_batch, config, "example_batch")
  k_init, k_proj = jax.random.split(jax.random.fold_in(key, 0))
  if config.pretrained:
    variables = backbones.load_pretrained(config.backbone, config.weights_path)
  else:
    variables = backbones.init_random(config.backbone, k_init, image_size=max(config.image_size, 32))
  raw = sum(backbones.FEATURE_LAYERS[config.backbone][l][1] for l in config.layers)
  proj = pf.projection_matrix(k_proj, config.projection, raw, config.target_dim)
  d = feature_dim(config)
  h, w = grid_size(config)
  slots, _ = _bank_layout(config.batch_size * h * w)
  tx = _make_tx(config)
  params = variables["params"]
  bank = jnp.zeros((slots, d), jnp.float32)
  valid = jnp.zeros((slots,), bool)
  return SMCCState(step=jnp.zeros((), jnp.int32), key=jax.random.fold_in(key, 1), params=params,
                   batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                   centres=jnp.zeros((config.gmm_k, d), jnp.float32), bank=bank, bank_valid=valid,
                   best_params=params, best_bank=bank, best_bank_valid=valid,
                   best_loss=jnp.asarray(jnp.inf, jnp.float32), projection=proj, config=config, tx=tx)


def _variables(state: SMCCState, params: PyTree | None = None) -> dict[str, PyTree]:
  return {"params": state.params if params is None else params, "batch_stats": state.batch_stats}


def train_step(state: SMCCState, batch: Mapping[str, jax.Array],
               key: jax.Array) -> tuple[SMCCState, dict[str, jax.Array]]:
  """One self-update step on a global batch: minimise ``L_c (+ L_o)`` w.r.t. the backbone.

  The memory bank becomes this batch's patches (computed with the parameters *before* the update);
  if the batch is full (``batch_size`` valid images) and its loss is the lowest so far, those
  parameters and patches become the best pair.

  Args:
    state: :class:`SMCCState` with centres set (by :func:`fit`).
    batch: ``image [B, H, W, C]`` in [0, 1] (``B <= config.batch_size``), optional ``valid [B]``.
    key: unused (the step is deterministic); kept for the common interface.

  Returns:
    ``(state, metrics)`` with float32 scalars ``loss``, ``l_c``, ``l_o``, ``best_loss``.

  References:
    SMCC Sec. III-C, Eqs. (4)-(6).
  """
  del key
  config = state.config
  images = batch["image"]
  b = images.shape[0]
  if b > config.batch_size:
    raise ValueError(f"batch['image']: at most config.batch_size={config.batch_size} images, got {b}")
  valid = batch.get("valid")
  valid = jnp.ones((b,), bool) if valid is None else valid.astype(bool)
  grid = grid_size(config)
  pvalid = _patch_valid(valid, grid)
  weights = pvalid.astype(jnp.float32)

  def loss_fn(params):
    feats = patch_features(config, _variables(state, params), state.projection, images, train=True)
    flat = feats.reshape(-1, feats.shape[-1])
    lc, lo = center_losses(flat, state.centres, weights, lo_margin=config.lo_margin)
    loss = lc + lo if config.use_lo else lc
    return loss, (flat, lc, lo)

  (loss, (flat, lc, lo)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  bank, bank_valid = _pack(jax.lax.stop_gradient(flat), pvalid, state.bank.shape[0])
  # Only a full batch can become the bank: its size stays batch_size * h * w (a padded remainder
  # batch of one image would otherwise win with a small, unrepresentative bank).
  full = jnp.logical_and(jnp.all(valid), b == config.batch_size)
  better = jnp.logical_and(loss < state.best_loss, full)
  pick = lambda new, old: jnp.where(better, new, old)
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, bank=bank, bank_valid=bank_valid,
      best_params=jax.tree.map(pick, state.params, state.best_params),
      best_bank=pick(bank, state.best_bank), best_bank_valid=pick(bank_valid, state.best_bank_valid),
      best_loss=jnp.where(better, loss, state.best_loss))
  metrics = {"loss": loss.astype(jnp.float32), "l_c": lc.astype(jnp.float32),
             "l_o": lo.astype(jnp.float32), "best_loss": new_state.best_loss}
  return new_state, metrics


def _knn_scores(state: SMCCState, feats: jax.Array) -> jax.Array:
  """``[B, h, w]`` mean Euclidean distance of every patch to its ``knn_k`` nearest bank entries."""
  b, h, w, d = feats.shape
  k = state.config.knn_k
  slots = state.bank.shape[0]
  _, block = _bank_layout(slots)
  if slots % block:
    raise ValueError(f"state.bank: {slots} rows, expected a multiple of {block} (use with_bank)")
  q = h * w
  q_pad = -(-q // 8) * 8
  queries = jnp.pad(feats.reshape(b, q, d), ((0, 0), (0, q_pad - q), (0, 0)))

  def one(qi):
    sq, _ = knn_core(qi, state.bank, state.bank_valid, k=k, block=block, query_block=q_pad)
    return sq

  sq = jax.vmap(one)(queries)[:, :q]  # [B, q, k]
  return jnp.mean(jnp.sqrt(sq), axis=-1).reshape(b, h, w)


def predict(state: SMCCState, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Image scores and anomaly maps (jit-able; shard ``images`` on the batch axis).

  Args:
    state: a fitted :class:`SMCCState`.
    images: ``[B, H, W, channels]`` float32 in [0, 1] (``H, W >= 32``).

  Returns:
    ``scores [B]`` = max patch score; ``maps [B, H, W]`` = patch scores upsampled bilinearly and
    Gaussian-smoothed with ``config.sigma`` (no normalisation; distances >= 0).

  References:
    SMCC Eqs. (7)-(8) and Sec. III-D; PatchCore anomaly maps (bilinear, sigma 4).
  """
  config = state.config
  feats = patch_features(config, _variables(state), state.projection, images)
  patch = _knn_scores(state, feats)
  scores = jnp.max(patch.reshape(patch.shape[0], -1), axis=1)
  up = maps_lib.upsample(patch, (images.shape[1], images.shape[2]), method="bilinear")
  if config.sigma > 0:
    up = maps_lib.gaussian_smooth(up, config.sigma)
  return scores, up


# ----------------------------------------------------------------------------- fit


def _epoch_source(batches: Any) -> Callable[[int], Iterable[Mapping[str, Any]]]:
  if callable(batches):
    return batches
  if iter(batches) is batches:  # one-shot iterator: materialise once, reuse every epoch
    batches = list(batches)
  return lambda epoch: batches


@jax.jit
def _jit_features(state: SMCCState, images: jax.Array) -> jax.Array:
  return patch_features(state.config, _variables(state), state.projection, images)


def extract_patches(state: SMCCState, batches: Iterable[Mapping[str, Any]], *,
                    mesh: jax.sharding.Mesh | None = None, desc: str = "smcc features") -> np.ndarray:
  """All valid patch vectors of ``batches`` with the state's current backbone, on the host.

  Args:
    state: :class:`SMCCState` (replicated on ``mesh`` or on one device).
    batches: iterable of batch dicts (``image``, optional ``valid``).
    mesh: 1-D ``"data"`` mesh for the batch axis (all devices when ``None``).

  Returns:
    ``[N_patches, D]`` float32 numpy array (row order: batch, image, row, column).
  """
  mesh = make_mesh() if mesh is None else mesh
  out = []
  with Progress(desc=desc, unit="batch") as bar:
    for i, batch in enumerate(batches):
      _check_batch(batch, state.config, f"batches[{i}]")
      images = np.asarray(batch["image"], np.float32)
      valid = np.asarray(batch.get("valid", np.ones(images.shape[0], bool)), bool)
      f = np.asarray(_jit_features(state, _put(images, mesh)))
      out.append(f[valid].reshape(-1, f.shape[-1]))
      bar.update(1)
  if not out:
    raise ValueError("batches: no batches given")
  return np.concatenate(out)


def _put(images: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
  n = mesh.devices.size
  if images.shape[0] % n:
    raise ValueError(f"batch size {images.shape[0]} is not divisible by the {n} devices of the mesh")
  return jax.device_put(images, data_sharding(mesh))


def _centres(key: jax.Array, x: np.ndarray, config: Config) -> jax.Array:
  """Sensitivity coreset (rate ``coreset_rate``) + weighted GMM-EM; returns the GMM means."""
  k_cs, k_gmm = jax.random.split(key)
  n = x.shape[0]
  if n < config.gmm_k:
    raise ValueError(f"batches: {n} training patches, fewer than gmm_k={config.gmm_k}")
  m = max(config.gmm_k, int(round(config.coreset_rate * n)))
  cs = cluster.sensitivity_coreset(k_cs, x, m, config.gmm_k)
  res = cluster.gmm_em(k_gmm, jnp.asarray(x)[cs.indices], config.gmm_k, weights=cs.weights,
                       covariance=config.gmm_covariance, reg_covar=config.gmm_reg_covar,
                       max_iter=config.gmm_max_iter)
  return res.params.means


def _initial_bank(state: SMCCState, images: jax.Array, valid: np.ndarray) -> SMCCState:
  """Bank = patches of ``images`` with the current backbone (the ``epochs = 0`` bank)."""
  feats = _jit_features(state, images)
  pvalid = np.repeat(valid, int(np.prod(grid_size(state.config))))
  flat = jax.device_get(feats).reshape(-1, feats.shape[-1])
  bank, bank_valid = _pack(jnp.asarray(flat), jnp.asarray(pvalid), state.bank.shape[0])
  return state.replace(bank=bank, bank_valid=bank_valid, best_bank=bank, best_bank_valid=bank_valid)


@functools.lru_cache(maxsize=8)
def _sharded_step(mesh: jax.sharding.Mesh) -> Callable[..., Any]:
  """:func:`train_step` jitted with the state replicated and the batch sharded over ``mesh``."""
  repl = replicated_sharding(mesh)
  return xla_compile.jit(train_step, in_shardings=(repl, data_sharding(mesh), repl),
                         out_shardings=(repl, repl))


def fit(key: jax.Array, state: SMCCState, batches: Any, *, mesh: jax.sharding.Mesh | None = None,
        history: list[dict[str, float]] | None = None) -> SMCCState:
  """SMCC training: features -> sensitivity coreset -> GMM centres -> W epochs of self-update.

  Args:
    key: PRNG key for the coreset and the GMM (same key + data -> identical state).
    state: from :func:`init`.
    batches: the training batches (dicts with ``image [B,H,W,C]`` in [0,1], optional ``valid``,
      ``B <= config.batch_size`` and divisible by the mesh size): a re-iterable (list), a one-shot
      iterator (materialised once) or a callable ``epoch -> iterable`` (e.g. a shuffled order per
      epoch). The first epoch's batches are used for the centres.
    mesh: 1-D ``"data"`` mesh; all devices when ``None``.
    history: optional list receiving one metrics dict (``step``, ``epoch``, ``loss``, ``l_c``,
      ``l_o``, ``best_loss`` as floats) per self-update step.

  Returns:
    The fitted state: ``params``/``bank`` = the best pair (lowest loss among the steps on full
    batches); with ``epochs = 0`` (or no full batch) the pretrained backbone and the first batch's
    patches.

  References:
    SMCC Algorithm 1 (feature extraction, GMM cluster, self-updated memory bank).
  """
  config = state.config
  mesh = make_mesh() if mesh is None else mesh
  source = _epoch_source(batches)
  first = list(source(0))
  if not first:
    raise ValueError("batches: no batches given")
  for i, b in enumerate(first):
    _check_batch(b, config, f"batches[{i}]")
    if np.shape(b["image"])[0] > config.batch_size:
      raise ValueError(f"batches[{i}]['image']: at most config.batch_size={config.batch_size} "
                       f"images per batch, got {np.shape(b['image'])[0]}")
  state = replicate(state, mesh)
  t0 = time.perf_counter()
  x = extract_patches(state, first, mesh=mesh)
  centres = _centres(key, x, config)
  log("smcc: %d training patches of dim %d, %d centres, %.1fs", x.shape[0], x.shape[1],
      config.gmm_k, time.perf_counter() - t0)
  state = replicate(state.replace(centres=jnp.asarray(centres)), mesh)
  b0 = first[0]
  images0 = np.asarray(b0["image"], np.float32)
  valid0 = np.asarray(b0.get("valid", np.ones(images0.shape[0], bool)), bool)
  state = replicate(_initial_bank(state, _put(images0, mesh), valid0), mesh)
  if config.epochs == 0:
    return state.replace(best_params=state.params)
  step_fn = _sharded_step(mesh)
  n_steps = config.epochs * len(first)
  with Progress(total=n_steps, desc="smcc self-update", unit="step") as bar:
    for epoch in range(config.epochs):
      for batch in (first if epoch == 0 else source(epoch)):
        images = np.asarray(batch["image"], np.float32)
        valid = np.asarray(batch.get("valid", np.ones(images.shape[0], bool)), bool)
        dev = {"image": _put(images, mesh), "valid": jax.device_put(valid, data_sharding(mesh))}
        state, metrics = step_fn(state, dev, step_key(state))
        m = {k: float(v) for k, v in metrics.items()}
        if history is not None:
          history.append({"step": int(state.step), "epoch": epoch, **m})
        bar.update(1, **m)
  return state.replace(params=state.best_params, bank=state.best_bank,
                       bank_valid=state.best_bank_valid)


# ----------------------------------------------------------------------------- helpers


def with_bank(state: SMCCState, bank: Any) -> SMCCState:
  """Replaces the memory bank by ``bank [N, D]`` (any N >= knn_k), e.g. a PatchCore coreset.

  Args:
    state: :class:`SMCCState`.
    bank: ``[N, D]`` finite patch vectors with ``D = feature_dim(config)``.

  Returns:
    The state with ``bank``/``bank_valid`` (and the best pair) set to the padded ``bank``.
  """
  bank = np.asarray(bank, np.float32)
  d = feature_dim(state.config)
  if bank.ndim != 2 or bank.shape[1] != d or bank.shape[0] < state.config.knn_k:
    raise ValueError(f"bank: expected [N >= knn_k={state.config.knn_k}, {d}], got {bank.shape}")
  if not np.all(np.isfinite(bank)):
    raise ValueError("bank: contains NaN or inf")
  slots, _ = _bank_layout(bank.shape[0])
  b, v = _pack(jnp.asarray(bank), jnp.ones((bank.shape[0],), bool), slots)
  return state.replace(bank=b, bank_valid=v, best_bank=b, best_bank_valid=v)


def memory_bytes(state: SMCCState) -> dict[str, int]:
  """Bytes held at test time: ``bank`` (valid entries x D x 4), ``centres``, ``backbone`` params.

  Returns:
    dict with ``bank``, ``centres``, ``backbone`` and ``total`` in bytes.
  """
  n_valid = int(np.asarray(jax.device_get(state.bank_valid)).sum())
  bank = n_valid * int(state.bank.shape[1]) * 4
  centres = int(np.prod(state.centres.shape)) * 4
  leaves = jax.tree.leaves({"p": state.params, "b": state.batch_stats})
  bb = int(sum(np.prod(x.shape) * x.dtype.itemsize for x in leaves))
  return {"bank": bank, "centres": centres, "backbone": bb, "total": bank + centres + bb}
