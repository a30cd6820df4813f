"""SMCC: self-updated memory bank and GMM centre clustering over pretrained patch features.

Method (Liu et al., IEEE TIM 2023, Algorithm 1):

1. **Patch features** (Sec. III-A): backbone layers fused into one map (each resized to the common
   grid ``image_size / feature_stride``, optional 3x3 local average and fixed projection; see
   :mod:`jaxad.models.patch_features`), one vector per grid position.
2. **Centre set** (Sec. III-B, Algorithm 2): sensitivity coreset of ``coreset_rate * N`` training
   patches (:func:`jaxad.cluster.sensitivity_coreset`), weighted GMM-EM with ``gmm_k`` components
   (:func:`jaxad.cluster.gmm_em`); the centres ``C`` are the GMM means (``centres="gmm_means"``)
   or the coreset points themselves (``centres="center_set"``, Algorithm 2's set S).
3. **Self-updated memory bank** (Sec. III-C): for W epochs (the engine's ``epochs``) over batches
   of ``batch_size`` images (the engine's global batch), minimise ``L_c + L_o`` w.r.t. the
   backbone (Adam, coupled weight decay):

       L_c = mean_i min_n D(P_i, C_n)                          (Eq. 4)
       L_o = mean_i D(P_i, C_(1)) - D(P_i, C_(2))              (Eq. 5; nearest minus 2nd nearest)

   with ``D`` the Euclidean distance and ``i`` over the valid patches of the batch (the paper's
   sums with ``loss_reduction="sum"``). The memory bank holds the patches of the latest batch
   (``batch_size * h * w`` vectors: its size does not depend on the number of training images);
   the backbone + bank of the step with the lowest selection score are kept (its own batch loss,
   or with ``selection="heldout"`` the loss on one fixed batch of training images).
4. **Scoring** (Sec. III-D, Eqs. 7-8): patch score = mean Euclidean distance to the ``knn_k``
   nearest bank entries; image score = max over patches; map = bilinear upsampling to the image
   size + Gaussian smoothing (``sigma``).

``L_o`` is bounded: by the triangle inequality ``D(P,C_1) - D(P,C_2) >= -D(C_1,C_2)``, so
``L_c + L_o`` cannot diverge to ``-inf`` (``lo_margin`` offers a hinge variant all the same).

Protocol (:mod:`jaxad.models.protocol`): :class:`Config`, :func:`init`, :func:`prepare` (features
-> coreset -> GMM centres -> first bank; the engine calls it once, before step 1),
:func:`train_step` (one self-update step, global-batch semantics), :func:`predict`. Training with
``epochs=0`` is the "no self-update" ablation (SPADE/PatchCore-like).

References:
  Y. Liu, X. Gao, J. Z. Wen, H. Luo, "Unsupervised Image Anomaly Detection and Localization in
  Industry Based on Self-Updated Memory and Center Clustering", IEEE TIM 72, 2023 (Algorithms 1-2,
  Eqs. 4-8, Table II); Roth et al., PatchCore, CVPR 2022 (anomaly maps, local aggregation).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxad import backbones, cluster
from jaxad.models import patch_features as pf
from jaxad.models.protocol import Run
from jaxad.progress import log

__all__ = ["NAME", "Config", "SMCCState", "init", "train_step", "prepare", "predict", "patch_features",
           "extract_patches", "with_bank", "memory_bytes", "grid_size", "feature_dim",
           "center_losses", "centre_slots", "CENTRES", "SELECTIONS"]

NAME = "smcc"
PyTree = Any
_HI = jax.lax.Precision.HIGHEST
CENTRES = ("gmm_means", "center_set")
_MOBILE = ("mobilenet_v2", "efficientnet_lite")
SELECTIONS = ("batch_loss", "heldout")


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
    learning_rate: Adam step size (paper: 1e-3).
    weight_decay: L2 added to the gradient, PyTorch ``Adam(weight_decay=...)`` (paper: 5e-4).
    trainable: ``"conv"`` (convolution kernels only; BN affine and classifier frozen) or ``"all"``
      (every parameter, BN affine included: the paper's "the pretrained parameters are also updated
      after each iteration"). BN running statistics stay frozen either way: the bank and the test
      patches must come from one fixed normalisation (batch statistics of 16 images would change
      every patch with its batch-mates), and sharded runs must equal single-device runs.
    centres: what ``L_c``/``L_o`` pull towards. ``"gmm_means"``: the ``gmm_k`` means of the weighted
      GMM fitted on the coreset. ``"center_set"``: the coreset points themselves (Algorithm 2's
      centre set S, ``coreset_rate * N`` points; the paper: the sampling rate "determines how many
      centers are there in the update process"); no GMM is fitted, the coreset weights are not used
      by the losses, and the nearest / second-nearest search is blocked (exact, memory-bounded).
    loss_reduction: ``"mean"`` over the valid patches of the batch or ``"sum"`` (Eqs. 4-5 as
      written; changes the loss scale relative to the coupled weight decay, not Adam's step size).
    selection: which (backbone, bank) pair is kept. ``"heldout"`` (default): the step whose
      pre-update backbone has the lowest ``L_c (+ L_o)`` on one fixed batch of training images
      (stored in the state by :func:`prepare`: the last full batch in file order; the engine also
      trains on those images, so they are fixed, not unseen). ``"batch_loss"``: the step whose own
      batch loss is lowest (compares different batches: an easy batch wins). Equal on MVTec bottle
      (3 seeds), held-out >= batch loss on ELPV (BUILD_NOTES.md, SMCC).
    use_lo: add ``L_o`` to ``L_c`` (False: the "L_c only" ablation).
    lo_margin: ``None`` = Eq. 5 as written; a float ``m`` uses ``relu(d1 - d2 + m)`` instead.
    knn_k: K nearest bank entries averaged for a patch score (paper: "K", value not given).
    sigma: Gaussian smoothing of the upsampled map in pixels (PatchCore: 4).
    conv_method: convolution path of the MobileNetV2 / EfficientNet-Lite backbones (``"auto"``:
      the backend's default; ``"native"`` / ``"unrolled"``, see :mod:`jaxad.backbones.convs`);
      same parameters and features, only the speed differs. Other backbones: ``"auto"`` only.
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
  learning_rate: float = 1e-3
  weight_decay: float = 5e-4
  trainable: str = "conv"
  centres: str = "gmm_means"
  loss_reduction: str = "mean"
  selection: str = "heldout"
  use_lo: bool = True
  lo_margin: float | None = None
  knn_k: int = 3
  sigma: float = 4.0
  conv_method: str = "auto"

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
    for name in ("image_size", "feature_stride", "gmm_k", "knn_k", "gmm_max_iter"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if self.image_size < 32:
      raise ValueError(f"image_size: expected >= 32, got {self.image_size}")
    if self.channels not in (1, 3):
      raise ValueError(f"channels: expected 1 or 3, got {self.channels!r}")
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
    for name, allowed in (("centres", CENTRES), ("loss_reduction", ("mean", "sum")),
                          ("selection", SELECTIONS)):
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
    if not self.learning_rate > 0 or not self.weight_decay >= 0:
      raise ValueError(f"learning_rate must be > 0 and weight_decay >= 0, got "
                       f"{self.learning_rate!r}, {self.weight_decay!r}")
    if self.lo_margin is not None and not self.lo_margin >= 0:
      raise ValueError(f"lo_margin: expected None or a value >= 0, got {self.lo_margin!r}")
    if not self.sigma >= 0:
      raise ValueError(f"sigma: expected >= 0, got {self.sigma!r}")
    if self.conv_method not in ("auto", *backbones.convs.CONV_METHODS):
      raise ValueError(f"conv_method: expected 'auto' or one of {backbones.convs.CONV_METHODS}, "
                       f"got {self.conv_method!r}")
    if self.conv_method != "auto" and not self.backbone.startswith(_MOBILE):
      raise ValueError(f"conv_method: {self.conv_method!r} applies to {_MOBILE} backbones only, "
                       f"got backbone={self.backbone!r}")


class SMCCState(struct.PyTreeNode):
  """SMCC's state (arrays only): backbone, optimiser, centres, memory bank and the best pair.

  Attributes:
    step: int32 scalar, self-update steps applied.
    key: the run's base PRNG key (typed).
    params, batch_stats: backbone variables being self-updated (``batch_stats`` stay frozen).
    opt_state: optax state of the self-update optimiser.
    centres: ``[C, D]`` centres (zeros until :func:`prepare`): the ``gmm_k`` GMM means, or the
      centre set padded to a capacity fixed by the run (``centres="center_set"``).
    centres_valid: ``[C]`` bool, False for padding rows of the centre set.
    bank: ``[S, D]`` memory bank of the latest step, ``S = batch_size * h * w`` rounded up to the
      kNN block.
    bank_valid: ``[S]`` bool, False for empty slots (padding rows, rounding).
    best_params: backbone params of the lowest-loss step (the params that produced its patches);
      :func:`predict` uses them.
    best_bank, best_bank_valid: that step's patches; :func:`predict` scores against them.
    best_loss: float32 scalar, the lowest selection score seen (``inf`` before the first step):
      the batch loss, or the held-out loss with ``selection="heldout"``.
    projection: ``[D_raw, D]`` fixed projection or ``None``.
    holdout: ``[batch_size, H, W, C]`` fixed training images scoring the candidates
      (``selection="heldout"``; zeros until :func:`prepare`) or ``None``.
  """
  step: jax.Array
  key: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  centres: jax.Array
  centres_valid: jax.Array
  bank: jax.Array
  bank_valid: jax.Array
  best_params: PyTree
  best_bank: jax.Array
  best_bank_valid: jax.Array
  best_loss: jax.Array
  projection: jax.Array | None
  holdout: jax.Array | None = None


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
  images = pf.to_rgb(images, config.channels)
  kw = {} if config.conv_method == "auto" else {"conv_method": config.conv_method}
  module = backbones.create(config.backbone, **kw)
  feats = backbones.extract_features(module, variables, images, config.layers, train=train)
  g = (-(-images.shape[1] // config.feature_stride), -(-images.shape[2] // config.feature_stride))
  return pf.fuse_layers(feats, config.layers, g, pool=config.pool, projection=projection)


def _sq_dists(x: jax.Array, c: jax.Array) -> jax.Array:
  """``[N, k]`` squared Euclidean distances between rows of ``x [N, D]`` and ``c [k, D]``."""
  xx = jnp.sum(x * x, axis=1, keepdims=True)
  cc = jnp.sum(c * c, axis=1)
  return jnp.maximum(xx - 2.0 * jnp.matmul(x, c.T, precision=_HI) + cc[None], 0.0)


def center_losses(patches: jax.Array, centres: jax.Array, weights: jax.Array, *,
                  lo_margin: float | None = None, eps: float = 1e-8,
                  centres_valid: jax.Array | None = None,
                  block: int | None = None) -> tuple[jax.Array, jax.Array]:
  """SMCC's centre losses ``(L_c, L_o)`` as weighted means over patches.

  Args:
    patches: ``[N, D]`` patch features.
    centres: ``[k, D]`` centres (``k >= 2``; with ``k = 1``, ``L_o = 0``).
    weights: ``[N]`` float, 1 for valid patches, 0 for padding.
    lo_margin: ``None`` -> ``d1 - d2`` (Eq. 5); a float ``m`` -> ``relu(d1 - d2 + m)``.
    eps: added inside the square root (finite gradients at zero distance).
    centres_valid: optional ``[k]`` bool, False for padding centres (ignored).
    block: ``None`` = one ``[N, k]`` distance matrix; an int = blocked exact search of the two
      nearest centres over blocks of ``block`` centres (``k % block == 0``, at least two valid
      centres), then the two distances recomputed as differences (memory ``O(N + block)`` per
      query block; gradients flow to ``patches`` only).

  Returns:
    ``L_c = sum_i w_i d1_i / sum_i w_i`` and ``L_o = sum_i w_i (d1_i - d2_i) / sum_i w_i`` with
    ``d1 <= d2`` the Euclidean distances to the nearest and second-nearest centres.

  References:
    SMCC Eqs. (4)-(6).
  """
  denom = jnp.maximum(jnp.sum(weights), 1.0)
  if block is not None:
    valid = jnp.ones(centres.shape[0], bool) if centres_valid is None else centres_valid
    _, idx = pf.nearest_rows(patches, centres, valid, k=2, block=block)
    dist = lambda j: jnp.sqrt(jnp.sum(jnp.square(patches - centres[idx[:, j]]), axis=1) + eps)
    d1, d2 = dist(0), dist(1)
    lo = d1 - d2 if lo_margin is None else jax.nn.relu(d1 - d2 + lo_margin)
    return jnp.sum(weights * d1) / denom, jnp.sum(weights * lo) / denom
  d = jnp.sqrt(_sq_dists(patches, centres) + eps)
  if centres_valid is not None:
    d = jnp.where(centres_valid[None], d, jnp.inf)
  if centres.shape[0] == 1:
    d1 = d[:, 0]
    return jnp.sum(weights * d1) / denom, jnp.zeros((), jnp.float32)
  neg, _ = jax.lax.top_k(-d, 2)
  d1, d2 = -neg[:, 0], -neg[:, 1]
  lo = d1 - d2 if lo_margin is None else jax.nn.relu(d1 - d2 + lo_margin)
  return jnp.sum(weights * d1) / denom, jnp.sum(weights * lo) / denom


# ----------------------------------------------------------------------------- patch validity


def _patch_valid(valid: jax.Array, grid: tuple[int, int]) -> jax.Array:
  return jnp.repeat(valid.astype(bool), grid[0] * grid[1])


# ----------------------------------------------------------------------------- interface


def centre_slots(config: Config, run: Run) -> tuple[int, int | None]:
  """``(rows, block)`` of ``state.centres``: ``(gmm_k, None)``, or for the centre set a capacity
  for ``coreset_rate`` of at most ``(steps_per_epoch + 1) * batch_size`` training images' patches
  (the engine drops the remainder, so fewer images than that) and the search block."""
  if config.centres == "gmm_means":
    return config.gmm_k, None
  h, w = grid_size(config)
  n_max = (max(run.steps_per_epoch, 1) + 1) * run.batch_size * h * w
  return pf.bank_layout(max(config.gmm_k, 2, int(round(config.coreset_rate * n_max))))


def _optimizer(config: Config) -> optax.GradientTransformation:
  """Adam with coupled weight decay (PyTorch ``Adam(weight_decay=...)``) on the trainable leaves."""
  inner = optax.chain(optax.add_decayed_weights(config.weight_decay),
                      optax.adam(config.learning_rate))
  if config.trainable == "all":
    return inner

  def labels(params):
    return jax.tree.map(lambda m: "train" if m else "freeze", backbones.conv_kernel_mask(params))

  return optax.multi_transform({"train": inner, "freeze": optax.set_to_zero()}, labels)


def _check_batch(batch: Mapping[str, Any], config: Config, name: str = "batch") -> None:
  pf.check_image_batch(batch, config.image_size, config.channels, name)


def init(config: Config, run: Run, key: jax.Array, example_batch: Mapping[str, Any]) -> SMCCState:
  """Loads (or randomly initialises) the backbone and allocates centres and memory bank.

  Args:
    config: :class:`Config`.
    run: the run; ``run.batch_size`` images per self-update step = images in the memory bank
      (paper: 16).
    key: PRNG key (random init and random projection).
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
  slots, _ = pf.bank_layout(run.batch_size * h * w)
  params = variables["params"]
  n_centres, _ = centre_slots(config, run)
  holdout = None
  if config.selection == "heldout":
    holdout = jnp.zeros((run.batch_size, config.image_size, config.image_size, config.channels),
                        jnp.float32)
  bank = jnp.zeros((slots, d), jnp.float32)
  valid = jnp.zeros((slots,), bool)
  return SMCCState(step=jnp.zeros((), jnp.int32), key=jax.random.fold_in(key, 1), params=params,
                   batch_stats=variables.get("batch_stats", {}),
                   opt_state=_optimizer(config).init(params),
                   centres=jnp.zeros((n_centres, d), jnp.float32),
                   centres_valid=jnp.zeros((n_centres,), bool), bank=bank, bank_valid=valid,
                   best_params=params, best_bank=bank, best_bank_valid=valid,
                   best_loss=jnp.asarray(jnp.inf, jnp.float32), projection=proj, holdout=holdout)


def _variables(state: SMCCState, params: PyTree) -> dict[str, PyTree]:
  return {"params": params, "batch_stats": state.batch_stats}


def train_step(config: Config, run: Run, state: SMCCState, batch: Mapping[str, jax.Array],
               key: jax.Array) -> tuple[SMCCState, dict[str, jax.Array]]:
  """One self-update step on a global batch: minimise ``L_c (+ L_o)`` w.r.t. the backbone.

  The memory bank becomes this batch's patches (computed with the parameters *before* the update);
  if the batch is full (``run.batch_size`` valid images) and its selection score (the batch loss,
  or with ``selection="heldout"`` the loss of those parameters on ``state.holdout``) is the lowest
  so far, those parameters and patches become the best pair. ``loss_reduction="sum"`` sums the
  losses over the valid patches instead of averaging them.

  Args:
    config: :class:`Config` (static).
    run: the run (static; ``batch_size`` = bank images).
    state: :class:`SMCCState` with centres set (by :func:`prepare`).
    batch: ``image [B, H, W, C]`` in [0, 1] (``B <= run.batch_size``), optional ``valid [B]``.
    key: unused (the step is deterministic); kept for the common protocol.

  Returns:
    ``(state, metrics)`` with float32 scalars ``loss``, ``l_c``, ``l_o``, ``score`` (the selection
    score of this step's pair) and ``best_loss``.

  References:
    SMCC Sec. III-C, Eqs. (4)-(6).
  """
  del key
  images = batch["image"]
  b = images.shape[0]
  if b > run.batch_size:
    raise ValueError(f"batch['image']: at most run.batch_size={run.batch_size} images, got {b}")
  valid = batch.get("valid")
  valid = jnp.ones((b,), bool) if valid is None else valid.astype(bool)
  grid = grid_size(config)
  pvalid = _patch_valid(valid, grid)
  weights = pvalid.astype(jnp.float32)
  _, block = centre_slots(config, run)

  def losses(feats, w):
    flat = feats.reshape(-1, feats.shape[-1])
    lc, lo = center_losses(flat, state.centres, w, lo_margin=config.lo_margin,
                           centres_valid=state.centres_valid, block=block)
    if config.loss_reduction == "sum":
      lc, lo = lc * jnp.sum(w), lo * jnp.sum(w)
    return (lc + lo if config.use_lo else lc), flat, lc, lo

  def loss_fn(params):
    feats = patch_features(config, _variables(state, params), state.projection, images, train=True)
    loss, flat, lc, lo = losses(feats, weights)
    return loss, (flat, lc, lo)

  (loss, (flat, lc, lo)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if config.selection == "heldout":
    hf = patch_features(config, _variables(state, state.params), state.projection, state.holdout)
    score = losses(hf, jnp.ones((hf.shape[0] * hf.shape[1] * hf.shape[2],), jnp.float32))[0]
    score = jax.lax.stop_gradient(score)
  else:
    score = loss
  updates, opt_state = _optimizer(config).update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  bank, bank_valid = pf.pack_rows(jax.lax.stop_gradient(flat), pvalid, state.bank.shape[0])
  # Only a full batch can become the bank: its size stays batch_size * h * w (a padded remainder
  # batch of one image would otherwise win with a small, unrepresentative bank).
  full = jnp.logical_and(jnp.all(valid), b == run.batch_size)
  better = jnp.logical_and(score < state.best_loss, full)
  pick = lambda new, old: jnp.where(better, new, old)
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, bank=bank, bank_valid=bank_valid,
      best_params=jax.tree.map(pick, state.params, state.best_params),
      best_bank=pick(bank, state.best_bank), best_bank_valid=pick(bank_valid, state.best_bank_valid),
      best_loss=jnp.where(better, score, state.best_loss))
  metrics = {"loss": loss.astype(jnp.float32), "l_c": lc.astype(jnp.float32),
             "l_o": lo.astype(jnp.float32), "score": score.astype(jnp.float32),
             "best_loss": new_state.best_loss}
  return new_state, metrics


def _knn_scores(config: Config, state: SMCCState, feats: jax.Array) -> jax.Array:
  """``[B, h, w]`` mean Euclidean distance of every patch to its ``knn_k`` nearest bank entries."""
  return pf.knn_patch_scores(feats, state.best_bank, state.best_bank_valid, config.knn_k)


def predict(config: Config, state: SMCCState, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Image scores and anomaly maps with the best (backbone, bank) pair (jit-able).

  Args:
    config: :class:`Config` (static).
    state: a prepared (and possibly self-updated) :class:`SMCCState`.
    images: ``[B, H, W, channels]`` float32 in [0, 1] (``H, W >= 32``).

  Returns:
    ``scores [B]`` = max patch score; ``maps [B, H, W]`` = patch scores upsampled bilinearly and
    Gaussian-smoothed with ``config.sigma`` (no normalisation; distances >= 0).

  References:
    SMCC Eqs. (7)-(8) and Sec. III-D; PatchCore anomaly maps (bilinear, sigma 4).
  """
  feats = patch_features(config, _variables(state, state.best_params), state.projection, images)
  patch = _knn_scores(config, state, feats)
  return pf.scores_and_maps(patch, (images.shape[1], images.shape[2]), config.sigma)


# ----------------------------------------------------------------------------- prepare


@functools.partial(jax.jit, static_argnums=0)
def _features(config: Config, state: SMCCState, images: jax.Array) -> jax.Array:
  return patch_features(config, _variables(state, state.params), state.projection, images)


def extract_patches(config: Config, state: SMCCState, batches: Iterable[Mapping[str, Any]], *,
                    desc: str = "smcc features") -> np.ndarray:
  """All valid patch vectors of ``batches`` with the state's current backbone, on the host.

  Args:
    config: :class:`Config`.
    state: :class:`SMCCState` (on one device, or replicated over the mesh of the batches).
    batches: iterable of batch dicts (``image``, optional ``valid``); host arrays or arrays
      sharded on the batch axis.

  Returns:
    ``[N_patches, D]`` float32 numpy array (row order: batch, image, row, column).
  """
  out = [f[valid].reshape(-1, f.shape[-1]) for _, f, valid in _batch_features(config, state, batches, desc)]
  if not out:
    raise ValueError("batches: no batches given")
  return np.concatenate(out)


def _batch_features(config: Config, state: SMCCState, batches: Iterable[Mapping[str, Any]],
                    desc: str) -> Iterator[tuple[Mapping[str, Any], np.ndarray, np.ndarray]]:
  """``(batch, features [B, h, w, D] on the host, valid [B])`` per checked batch, with progress."""
  return pf.batch_features(lambda images: _features(config, state, images),
                           lambda batch, name: _check_batch(batch, config, name), batches, desc)


def _centres(key: jax.Array, x: np.ndarray, config: Config) -> jax.Array:
  """Sensitivity coreset (rate ``coreset_rate``) + weighted GMM-EM; returns the GMM means
  (``centres="gmm_means"``) or the coreset points (``"center_set"``, no GMM)."""
  k_cs, k_gmm = jax.random.split(key)
  n = x.shape[0]
  if n < config.gmm_k:
    raise ValueError(f"batches: {n} training patches, fewer than gmm_k={config.gmm_k}")
  m = max(config.gmm_k, int(round(config.coreset_rate * n)))
  cs = cluster.sensitivity_coreset(k_cs, x, m, config.gmm_k)
  if config.centres == "center_set":
    return jnp.asarray(x)[cs.indices]
  res = cluster.gmm_em(k_gmm, jnp.asarray(x)[cs.indices], config.gmm_k, weights=cs.weights,
                       covariance=config.gmm_covariance, reg_covar=config.gmm_reg_covar,
                       max_iter=config.gmm_max_iter)
  return res.params.means


def prepare(config: Config, run: Run, key: jax.Array, state: SMCCState,
            batches: Callable[[], Iterable[Mapping[str, Any]]]) -> SMCCState:
  """SMCC's non-gradient stage: features -> sensitivity coreset -> GMM centres -> first bank.

  Args:
    config: :class:`Config`.
    run: the run (``batch_size`` images per batch).
    key: PRNG key for the coreset and the GMM (same key + data -> identical state).
    state: from :func:`init`.
    batches: returns an iterator over every training image once (fixed order, ``valid`` marks
      real rows); the first batch's patches become the initial bank (the ``epochs = 0`` bank).

  Returns:
    The state with ``centres`` and ``bank`` = ``best_bank`` set (``best_params`` = ``params``).

  References:
    SMCC Algorithm 1 (feature extraction, GMM cluster), Algorithm 2 (centre set).
  """
  t0 = time.perf_counter()
  first: dict[str, Any] | None = None
  last_full = None
  parts = []
  for batch, f, valid in _batch_features(config, state, batches(), "smcc features"):
    if first is None:
      first = {"feats": f, "valid": valid}
    parts.append(f[valid].reshape(-1, f.shape[-1]))
    if f.shape[0] == run.batch_size and valid.all():
      last_full = batch["image"]
  if first is None:
    raise ValueError("batches: no batches given")
  x = np.concatenate(parts)
  centres = _centres(key, x, config)
  log("smcc: %d training patches of dim %d, %d centres, %.1fs", x.shape[0], x.shape[1],
      centres.shape[0], time.perf_counter() - t0)
  n_slots = state.centres.shape[0]
  if centres.shape[0] > n_slots:
    raise ValueError(f"prepare: {centres.shape[0]} centres do not fit in the {n_slots} slots sized "
                     f"from run (steps_per_epoch={run.steps_per_epoch}, batch_size={run.batch_size})")
  centres, centres_valid = pf.pack_rows(centres, jnp.ones((centres.shape[0],), bool), n_slots)
  holdout = state.holdout
  if holdout is not None:
    if last_full is None:
      raise ValueError(f"prepare: selection='heldout' needs one full batch of {run.batch_size} images")
    holdout = jnp.asarray(np.asarray(last_full), jnp.float32)
  pvalid = np.repeat(first["valid"], int(np.prod(grid_size(config))))
  flat = first["feats"].reshape(-1, first["feats"].shape[-1])
  bank, bank_valid = pf.pack_rows(jnp.asarray(flat), jnp.asarray(pvalid), state.bank.shape[0])
  return state.replace(centres=centres, centres_valid=centres_valid, bank=bank,
                       bank_valid=bank_valid, best_bank=bank, best_bank_valid=bank_valid,
                       best_params=state.params, holdout=holdout)


# ----------------------------------------------------------------------------- helpers


def with_bank(config: Config, state: SMCCState, bank: Any) -> SMCCState:
  """Replaces the memory bank by ``bank [N, D]`` (any N >= knn_k), e.g. a PatchCore coreset.

  Args:
    config: :class:`Config`.
    state: :class:`SMCCState`.
    bank: ``[N, D]`` finite patch vectors with ``D = feature_dim(config)``.

  Returns:
    The state with ``bank``/``bank_valid`` and the best pair's bank set to the padded ``bank``.
  """
  bank = np.asarray(bank, np.float32)
  d = feature_dim(config)
  if bank.ndim != 2 or bank.shape[1] != d or bank.shape[0] < config.knn_k:
    raise ValueError(f"bank: expected [N >= knn_k={config.knn_k}, {d}], got {bank.shape}")
  if not np.all(np.isfinite(bank)):
    raise ValueError("bank: contains NaN or inf")
  slots, _ = pf.bank_layout(bank.shape[0])
  b, v = pf.pack_rows(jnp.asarray(bank), jnp.ones((bank.shape[0],), bool), slots)
  return state.replace(bank=b, bank_valid=v, best_bank=b, best_bank_valid=v)


def memory_bytes(state: SMCCState) -> dict[str, int]:
  """Bytes held at test time: ``bank`` (valid entries x D x 4), ``centres``, ``backbone`` params.

  Returns:
    dict with ``bank``, ``centres``, ``backbone`` and ``total`` in bytes.
  """
  n_valid = int(np.asarray(jax.device_get(state.best_bank_valid)).sum())
  bank = n_valid * int(state.best_bank.shape[1]) * 4
  centres = int(np.prod(state.centres.shape)) * 4
  leaves = jax.tree.leaves({"p": state.best_params, "b": state.batch_stats})
  bb = int(sum(np.prod(x.shape) * x.dtype.itemsize for x in leaves))
  return {"bank": bank, "centres": centres, "backbone": bb, "total": bank + centres + bb}
