"""DFDA-AD: dual feature extraction, dual attention and a k-means memory bank.

Method (Masoudi, J. Modeling in Engineering 2024, Sects. 2-3, Fig. 1):

1. **Two backbones** (frozen, ImageNet weights) give two maps of one image: branch A (paper:
   DenseNet121 dense block 2, 28x28x512 at 224 px) and branch B (paper: ResNet50 layer 3,
   14x14x1024). Offline default: MobileNetV2 ``stride8`` (28x28x32) and EfficientNet-Lite0
   ``stride16`` (14x14x112), the same strides from two different real-weight networks.
2. **Dual attention**: :class:`jaxad.nn.attention.CBAMVariant` on branch A,
   :class:`jaxad.nn.attention.QueryKeyAttention` on branch B (each can be switched off).
3. **Patch features**: both attended maps are resized to the stride-8 grid (28x28) and concatenated
   (:func:`jaxad.models.patch_features.fuse_layers`, with PatchCore's 3x3 local average). With
   ``balance_branches`` each branch is first scaled by ``1 / sqrt(mean ||f_branch||^2)`` over the
   training patches (fixed by :func:`prepare`), so that neither backbone dominates the distances.
4. **Memory bank**: k-means (k-means++ seeding, at most ``kmeans_max_iter = 100`` Lloyd iterations,
   :func:`jaxad.cluster.kmeans`) of all training patches; ``bank_size`` centres (a fraction of the
   training patches if < 1, else a count).
5. **Attention training** (Adam 2e-4, batch 10; the paper names no objective). Ours: each step
   minimises the *relative compactness* of the batch's attended patches around their nearest
   centres, ``sum_i min_n ||f_i - c_n||^2 / sum_i ||f_i - mean f||^2`` (k-means inertia over total
   scatter: scale-free, so shrinking every gate cannot lower it), and moves the centres with
   mini-batch k-means (Sculley 2010: ``c_n += (b_n / N_n) (mean of its batch patches - c_n)``,
   ``N_n`` the running count, started at the k-means cluster size), so the bank follows the
   attention it scores. ``epochs = 0`` keeps the untrained blocks, which are initialised to the
   identity: the bank is then plain k-means of the fused backbone features.
6. **Scoring**: patch score = Euclidean distance to the nearest centre, image score = max; maps
   upsampled bilinearly and Gaussian-smoothed (``sigma``).

Protocol (:mod:`jaxad.models.protocol`): :class:`Config`, :func:`init`, :func:`prepare` (features
-> k-means bank; checkpointed as step 0), :func:`train_step` (one attention step + mini-batch
k-means, global-batch semantics), :func:`predict`.

References:
  Masoudi, "DFDA-AD: An Approach with Dual Feature Extraction Architecture and Dual Attention
  Mechanism for Image Anomaly Detection", J. Modeling in Engineering 2024 (Tables 1-6).
  Woo et al., CBAM, ECCV 2018; Ishida et al., SA-PatchCore, IEEE Access 2023; Roth et al.,
  PatchCore, CVPR 2022 (local aggregation, anomaly maps); Sculley, "Web-scale k-means
  clustering", WWW 2010 (mini-batch centre update).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxad import backbones, cluster
from jaxad.models import patch_features as pf
from jaxad.models.protocol import Run
from jaxad.nn.attention import CBAMVariant, QueryKeyAttention
from jaxad.progress import log

__all__ = ["NAME", "Config", "DFDAState", "OBJECTIVES", "init", "prepare", "train_step", "predict",
           "paper_config", "patch_features", "extract_patches", "grid_size", "feature_dim",
           "branch_shapes", "branch_columns", "branch_scales", "bank_capacity", "bank_count",
           "compactness", "memory_bytes"]

NAME = "dfdaad"
PyTree = Any
OBJECTIVES = ("relative_compactness", "compactness")


@dataclasses.dataclass(frozen=True)
class Config:
  """DFDA-AD hyper-parameters; defaults run offline (see :func:`paper_config` for the paper's pair).

  Attributes:
    image_size: square input side in pixels (paper: 224).
    channels: 1 (replicated to RGB inside) or 3.
    backbone_a: branch A backbone (CBAM branch; paper: ``densenet121``).
    layer_a: its layer (paper: ``denseblock2``, stride 8).
    weights_a: torchvision ``.pth`` for ``backbone_a``; ``None`` = installed package / torch cache.
    backbone_b: branch B backbone (query-key branch; paper: ``resnet50``); ``None`` = branch A only.
      Equal to ``backbone_a`` (same weights) = one backbone, run once for both layers.
    layer_b: its layer (paper: ``layer3``, stride 16).
    weights_b: as ``weights_a``, for ``backbone_b``.
    pretrained: False initialises the backbones randomly (tests only).
    feature_stride: patch grid = ``ceil(image_size / feature_stride)`` (8: the paper's 28x28).
    use_cbam: apply the CBAM variant to branch A (False: identity).
    use_qk: apply the query-key attention to branch B (False: identity).
    cbam_reduction: CBAM hidden width ``C // cbam_reduction`` (CBAM: 16) ...
    cbam_min_hidden: ... and at least this.
    cbam_kernel: odd spatial-attention kernel (CBAM: 7).
    qk_dim: query/key width ``d``.
    qk_pool: odd local pooling window of the query (max) and key (average).
    gate_scale: gates are ``gate_scale * sigmoid`` (paper: sigmoid alone; 2 makes the identity-
      initialised blocks exactly the identity).
    pool: odd local averaging window applied to each attended map before fusion (PatchCore: 3).
    balance_branches: scale each branch to a unit mean squared patch norm over the training set
      (:func:`branch_scales`; the paper concatenates the two maps without a word on their scales:
      EfficientNet-Lite0's stride-16 patches have ~260x the mean squared norm of MobileNetV2's
      stride-8 ones on MVTec bottle, so unscaled they decide every distance).
    bank_size: k-means centres: a fraction of the training patches if ``< 1`` (0.01: 1,639 on
      MVTec bottle), a count if ``>= 1`` (an integer value).
    kmeans_max_iter: Lloyd iterations at most (paper: 100).
    kmeans_tol: k-means stops when the centre shift is ``<= tol * mean variance``.
    learning_rate: Adam step size of the attention parameters (paper: 2e-4).
    objective: ``"relative_compactness"`` (inertia / total scatter of the batch) or
      ``"compactness"`` (mean squared distance to the nearest centre; not scale-free: the gates can
      shrink the features).
    sigma: Gaussian smoothing of the upsampled map in pixels (PatchCore: 4).
  """
  image_size: int = 224
  channels: int = 3
  backbone_a: str = "mobilenet_v2"
  layer_a: str = "stride8"
  weights_a: str | None = None
  backbone_b: str | None = "efficientnet_lite0"
  layer_b: str = "stride16"
  weights_b: str | None = None
  pretrained: bool = True
  feature_stride: int = 8
  use_cbam: bool = True
  use_qk: bool = True
  cbam_reduction: int = 16
  cbam_min_hidden: int = 8
  cbam_kernel: int = 7
  qk_dim: int = 32
  qk_pool: int = 3
  gate_scale: float = 2.0
  pool: int = 3
  balance_branches: bool = True
  bank_size: float = 0.01
  kmeans_max_iter: int = 100
  kmeans_tol: float = 1e-4
  learning_rate: float = 2e-4
  objective: str = "relative_compactness"
  sigma: float = 4.0

  def __post_init__(self):
    for name in ("backbone_a", "backbone_b"):
      value = getattr(self, name)
      if name == "backbone_b" and value is None:
        continue
      if value not in backbones.NAMES:
        raise ValueError(f"{name}: expected one of {list(backbones.NAMES)}, got {value!r}")
    for bb, layer in (("backbone_a", "layer_a"), ("backbone_b", "layer_b")):
      net = getattr(self, bb)
      if net is not None and getattr(self, layer) not in backbones.FEATURE_LAYERS[net]:
        raise ValueError(f"{layer}: expected one of {list(backbones.FEATURE_LAYERS[net])} for "
                         f"{net}, got {getattr(self, layer)!r}")
    if self.shared_backbone and self.layer_a == self.layer_b:
      raise ValueError(f"layer_b: one backbone needs two different layers, got {self.layer_a!r} twice")
    for name in ("image_size", "feature_stride", "cbam_reduction", "cbam_min_hidden", "qk_dim",
                 "kmeans_max_iter"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if self.image_size < 32:
      raise ValueError(f"image_size: expected >= 32, got {self.image_size}")
    if self.channels not in (1, 3):
      raise ValueError(f"channels: expected 1 or 3, got {self.channels!r}")
    for name in ("pool", "qk_pool", "cbam_kernel"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v % 2 == 0:
        raise ValueError(f"{name}: expected an odd int >= 1, got {v!r}")
    b = self.bank_size
    if isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0 or (
        b >= 1 and float(b) != int(b)):
      raise ValueError(f"bank_size: expected a fraction in (0, 1) or an integer count >= 1, got {b!r}")
    if not self.gate_scale > 0:
      raise ValueError(f"gate_scale: expected > 0, got {self.gate_scale!r}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate: expected > 0, got {self.learning_rate!r}")
    if not self.kmeans_tol >= 0:
      raise ValueError(f"kmeans_tol: expected >= 0, got {self.kmeans_tol!r}")
    if self.objective not in OBJECTIVES:
      raise ValueError(f"objective: expected one of {OBJECTIVES}, got {self.objective!r}")
    if not self.sigma >= 0:
      raise ValueError(f"sigma: expected >= 0, got {self.sigma!r}")

  @property
  def shared_backbone(self) -> bool:
    """True when both branches come from one backbone (same name and weights)."""
    return self.backbone_b == self.backbone_a and self.weights_b == self.weights_a


def paper_config(weights_a: str | None = None, weights_b: str | None = None, **kw) -> Config:
  """The paper's pair: DenseNet121 ``denseblock2`` (28x28x512) + ResNet50 ``layer3`` (14x14x1024).

  Needs torchvision's ``densenet121-a639ec97.pth`` and ``resnet50-0676ba61.pth`` (``weights_a``,
  ``weights_b``, or the files in ``$JAXAD_WEIGHTS_DIR`` / torch hub's cache); D = 1536.
  """
  return Config(backbone_a="densenet121", layer_a="denseblock2", weights_a=weights_a,
                backbone_b="resnet50", layer_b="layer3", weights_b=weights_b, **kw)


class DFDAState(struct.PyTreeNode):
  """DFDA-AD's state (arrays only).

  Attributes:
    step: int32 scalar, attention steps applied.
    key: the run's base PRNG key (typed).
    backbone_a: branch A backbone variables ``{"params", "batch_stats"}`` (frozen).
    backbone_b: branch B backbone variables; ``{}`` when branch B is absent or shares ``backbone_a``.
    params: attention parameters ``{"cbam": ..., "qk": ...}`` (only the blocks in use).
    opt_state: Adam state of ``params``.
    bank: ``[S, D]`` float32 k-means centres (``S`` from :func:`bank_capacity`, padded rows zero).
    bank_valid: ``[S]`` bool, True for the real centres.
    counts: ``[S]`` float32 patches seen per centre (k-means cluster sizes, then mini-batch counts).
    branch_scale: ``[n_branches]`` float32 factor of each attended branch (ones until
      :func:`prepare` balances them).
  """
  step: jax.Array
  key: jax.Array
  backbone_a: PyTree
  backbone_b: PyTree
  params: PyTree
  opt_state: PyTree
  bank: jax.Array
  bank_valid: jax.Array
  counts: jax.Array
  branch_scale: jax.Array


# ----------------------------------------------------------------------------- shapes


def grid_size(config: Config) -> tuple[int, int]:
  """``(h, w)`` of the patch grid: ``ceil(image_size / feature_stride)`` each (28x28 at 224)."""
  g = -(-config.image_size // config.feature_stride)
  return g, g


def branch_shapes(config: Config) -> dict[str, tuple[int, int, int]]:
  """``{"a": (h_a, w_a, C_a), "b": (h_b, w_b, C_b)}`` of the backbone maps (``"b"`` if present)."""
  out = {}
  for name, net, layer in (("a", config.backbone_a, config.layer_a),
                           ("b", config.backbone_b, config.layer_b)):
    if net is not None:
      stride, c = backbones.FEATURE_LAYERS[net][layer]
      s = -(-config.image_size // stride)
      out[name] = (s, s, c)
  return out


def feature_dim(config: Config) -> int:
  """Patch-vector dimension ``D = C_a + C_b`` (144 by default, 1536 for the paper's pair)."""
  return sum(c for _, _, c in branch_shapes(config).values())


def branch_columns(config: Config) -> list[slice]:
  """The columns of each branch in a patch vector, in concatenation order (A, then B)."""
  out, start = [], 0
  for _, _, c in branch_shapes(config).values():
    out.append(slice(start, start + c))
    start += c
  return out


def branch_scales(config: Config, patches: np.ndarray) -> np.ndarray:
  """``[n_branches]`` float32 ``1 / sqrt(mean_i ||f_branch,i||^2)`` of ``patches [N, D]``.

  Local averaging and resizing are linear, so scaling a branch's map scales its columns.
  """
  out = []
  for cols in branch_columns(config):
    ms = float(np.mean(np.sum(np.square(patches[:, cols], dtype=np.float64), axis=1)))
    out.append(1.0 / np.sqrt(max(ms, 1e-12)))
  return np.asarray(out, np.float32)


def bank_count(config: Config, n_patches: int) -> int:
  """Centres for ``n_patches`` training patches: ``round(bank_size * n)`` (>= 1) or the count."""
  if config.bank_size < 1:
    return max(1, int(round(config.bank_size * n_patches)))
  return int(config.bank_size)


def bank_capacity(config: Config, run: Run) -> int:
  """Rows of ``state.bank``: room for the centres of ``(steps_per_epoch + 1) * batch_size`` images
  (the engine drops the remainder batch, so fewer than that), padded by
  :func:`jaxad.models.patch_features.bank_layout`."""
  h, w = grid_size(config)
  n_max = (max(run.steps_per_epoch, 1) + 1) * run.batch_size * h * w
  return pf.bank_layout(bank_count(config, n_max))[0]


# ----------------------------------------------------------------------------- features


def _attention_modules(config: Config) -> dict[str, Any]:
  mods = {}
  if config.use_cbam:
    mods["cbam"] = CBAMVariant(reduction=config.cbam_reduction, min_hidden=config.cbam_min_hidden,
                               spatial_kernel=config.cbam_kernel, gate_scale=config.gate_scale)
  if config.use_qk and config.backbone_b is not None:
    mods["qk"] = QueryKeyAttention(dim=config.qk_dim, pool=config.qk_pool,
                                   gate_scale=config.gate_scale)
  return mods


def _backbone_maps(config: Config, state: DFDAState, images: jax.Array) -> dict[str, jax.Array]:
  """``{"a": [B, h_a, w_a, C_a], "b": [B, h_b, w_b, C_b]}`` frozen backbone maps."""
  images = pf.to_rgb(images, config.channels)
  if config.backbone_b is None:
    f = backbones.extract_features(backbones.create(config.backbone_a), state.backbone_a, images,
                                   (config.layer_a,))
    return {"a": f[config.layer_a]}
  if config.shared_backbone:
    f = backbones.extract_features(backbones.create(config.backbone_a), state.backbone_a, images,
                                   (config.layer_a, config.layer_b))
    return {"a": f[config.layer_a], "b": f[config.layer_b]}
  fa = backbones.extract_features(backbones.create(config.backbone_a), state.backbone_a, images,
                                  (config.layer_a,))
  fb = backbones.extract_features(backbones.create(config.backbone_b), state.backbone_b, images,
                                  (config.layer_b,))
  return {"a": fa[config.layer_a], "b": fb[config.layer_b]}


def patch_features(config: Config, state: DFDAState, params: PyTree, images: jax.Array) -> jax.Array:
  """Attended, fused patch features (jit-able; differentiable w.r.t. ``params``).

  Args:
    config: :class:`Config` (static).
    state: supplies the frozen backbones.
    params: attention parameters (``state.params`` or a candidate).
    images: ``[B, H, W, channels]`` float32 in [0, 1] (H = W = ``image_size``).

  Returns:
    ``[B, h, w, D]`` float32 (``grid_size``, ``feature_dim``): ``[s_a CBAM(A) | s_b QK(B)]``
    (``s = state.branch_scale``) after a ``pool x pool`` local average and bilinear resizing to
    the grid.
  """
  maps = _backbone_maps(config, state, images)
  mods = _attention_modules(config)
  if "cbam" in mods:
    maps["a"] = mods["cbam"].apply({"params": params["cbam"]}, maps["a"])
  if "qk" in mods:
    maps["b"] = mods["qk"].apply({"params": params["qk"]}, maps["b"])
  maps = {k: maps[k] * state.branch_scale[i] for i, k in enumerate(sorted(maps))}
  return pf.fuse_layers(maps, sorted(maps), grid_size(config), pool=config.pool)


@functools.partial(jax.jit, static_argnums=0)
def _features(config: Config, state: DFDAState, images: jax.Array) -> jax.Array:
  return patch_features(config, state, state.params, images)


def _check_batch(batch: Mapping[str, Any], config: Config, name: str = "batch") -> None:
  pf.check_image_batch(batch, config.image_size, config.channels, name)


def extract_patches(config: Config, state: DFDAState, batches: Iterable[Mapping[str, Any]], *,
                    desc: str = "dfdaad features") -> np.ndarray:
  """All valid patch vectors of ``batches`` with the state's attention, on the host.

  Returns:
    ``[N_patches, D]`` float32 numpy array (row order: batch, image, row, column).
  """
  out = [f[valid].reshape(-1, f.shape[-1]) for _, f, valid in pf.batch_features(
      lambda images: _features(config, state, images),
      lambda batch, name: _check_batch(batch, config, name), batches, desc)]
  if not out:
    raise ValueError("batches: no batches given")
  return np.concatenate(out)


# ----------------------------------------------------------------------------- protocol


def _optimizer(config: Config) -> optax.GradientTransformation:
  return optax.adam(config.learning_rate)


def _load_backbone(name: str, path: str | None, pretrained: bool, key: jax.Array,
                   image_size: int) -> PyTree:
  if pretrained:
    return backbones.load_pretrained(name, path)
  return backbones.init_random(name, key, image_size=max(image_size, 32))


def init(config: Config, run: Run, key: jax.Array, example_batch: Mapping[str, Any]) -> DFDAState:
  """Loads the backbones, initialises the attention blocks (identity) and allocates the bank.

  Args:
    config: :class:`Config`.
    run: the run (``batch_size`` and ``steps_per_epoch`` size the bank, see :func:`bank_capacity`).
    key: PRNG key (random backbones in tests; attention initialisation).
    example_batch: ``{"image": [B, image_size, image_size, channels]}`` (only its shape is used).

  Returns:
    :class:`DFDAState` at step 0 with an empty bank.

  Raises:
    FileNotFoundError: pretrained weights missing (the message names the file and how to pass it).
    TypeError/ValueError: config or example batch inconsistent.
  """
  if not isinstance(config, Config):
    raise TypeError(f"config: expected dfdaad.Config, got {type(config).__name__}")
  _check_batch(example_batch, config, "example_batch")
  k_a, k_b, k_att = jax.random.split(jax.random.fold_in(key, 0), 3)
  var_a = _load_backbone(config.backbone_a, config.weights_a, config.pretrained, k_a,
                         config.image_size)
  var_b = {}
  if config.backbone_b is not None and not config.shared_backbone:
    var_b = _load_backbone(config.backbone_b, config.weights_b, config.pretrained, k_b,
                           config.image_size)
  shapes = branch_shapes(config)
  params = {}
  for i, (name, mod) in enumerate(sorted(_attention_modules(config).items())):
    branch = "a" if name == "cbam" else "b"
    x = jnp.zeros((1,) + shapes[branch], jnp.float32)
    params[name] = mod.init(jax.random.fold_in(k_att, i), x)["params"]
  slots = bank_capacity(config, run)
  d = feature_dim(config)
  return DFDAState(step=jnp.zeros((), jnp.int32), key=jax.random.fold_in(key, 1),
                   backbone_a=var_a, backbone_b=var_b, params=params,
                   opt_state=_optimizer(config).init(params),
                   bank=jnp.zeros((slots, d), jnp.float32), bank_valid=jnp.zeros((slots,), bool),
                   counts=jnp.zeros((slots,), jnp.float32),
                   branch_scale=jnp.ones((len(shapes),), jnp.float32))


def prepare(config: Config, run: Run, key: jax.Array, state: DFDAState,
            batches: Callable[[], Iterable[Mapping[str, Any]]]) -> DFDAState:
  """The k-means memory bank of every training patch (with the state's attention).

  Args:
    config: :class:`Config`.
    run: the run.
    key: PRNG key of the k-means++ seeding (same key + data -> identical bank).
    state: from :func:`init`.
    batches: returns an iterator over every training image once (``valid`` marks real rows).

  Returns:
    The state with ``bank`` (``bank_count`` centres, padded), ``bank_valid``, ``counts`` (the
    cluster sizes) and, with ``balance_branches``, ``branch_scale`` (the bank is built from the
    balanced patches).

  References:
    DFDA-AD Sect. 2 ("K-means ... for clustering and, because it subsamples the data") and Sect. 3
    (at most 100 k-means iterations).
  """
  t0 = time.perf_counter()
  slots = state.bank.shape[0]
  if config.bank_size >= 1 and int(config.bank_size) > slots:  # a count: fail before extracting
    raise ValueError(f"bank_size: {int(config.bank_size)} centres do not fit in the {slots} bank "
                     f"rows sized from run (steps_per_epoch={run.steps_per_epoch}, "
                     f"batch_size={run.batch_size})")
  x = extract_patches(config, state, batches())
  scale = state.branch_scale
  if config.balance_branches:
    s = branch_scales(config, x)
    for cols, si in zip(branch_columns(config), s):
      x[:, cols] *= si
    scale = scale * jnp.asarray(s)
    log("dfdaad: branch scales %s", np.asarray(scale).round(4).tolist())
  k = bank_count(config, x.shape[0])
  if k > x.shape[0]:
    raise ValueError(f"bank_size: {k} centres but only {x.shape[0]} training patches")
  if k > slots:
    raise ValueError(f"prepare: {k} centres do not fit in the {slots} bank rows sized from run "
                     f"(steps_per_epoch={run.steps_per_epoch}, batch_size={run.batch_size})")
  res = cluster.kmeans(key, x, k, max_iter=config.kmeans_max_iter, tol=config.kmeans_tol)
  counts = jnp.zeros((k,), jnp.float32).at[res.assignments[:x.shape[0]]].add(1.0)
  bank, valid = pf.pack_rows(res.centers, jnp.ones((k,), bool), slots)
  log("dfdaad: %d training patches of dim %d, k-means %d centres in %d iterations, %.1fs",
      x.shape[0], x.shape[1], k, int(res.n_iter), time.perf_counter() - t0)
  return state.replace(bank=bank, bank_valid=valid, counts=jnp.pad(counts, (0, slots - k)),
                       branch_scale=scale)


def compactness(patches: jax.Array, weights: jax.Array, bank: jax.Array, bank_valid: jax.Array,
                *, relative: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The attention objective and the nearest centre of every patch.

  Args:
    patches: ``[N, D]`` attended patch features (gradients flow through them).
    weights: ``[N]`` float, 1 for valid patches, 0 for padding.
    bank: ``[S, D]`` centres (no gradient), ``S`` from :func:`jaxad.models.patch_features.bank_layout`.
    bank_valid: ``[S]`` bool.
    relative: divide by the total scatter.

  Returns:
    ``(loss, inertia, idx)``: ``inertia = sum_i w_i ||f_i - c_idx(i)||^2 / sum_i w_i`` and ``loss =
    inertia / (sum_i w_i ||f_i - mean_w f||^2 / sum_i w_i)`` (``relative``, in [0, 1] for the
    exact k-means of the batch) or ``inertia``; ``idx [N]`` int32 nearest valid centre.
  """
  _, block = pf.bank_layout(bank.shape[0])
  _, idx = pf.nearest_rows(patches, bank, bank_valid, k=1, block=block)
  idx = idx[:, 0]
  denom = jnp.maximum(jnp.sum(weights), 1.0)
  d2 = jnp.sum(jnp.square(patches - jax.lax.stop_gradient(bank)[idx]), axis=1)
  inertia = jnp.sum(weights * d2) / denom
  if not relative:
    return inertia, inertia, idx
  mean = jnp.sum(weights[:, None] * patches, axis=0) / denom
  total = jnp.sum(weights * jnp.sum(jnp.square(patches - mean), axis=1)) / denom
  return inertia / jnp.maximum(total, 1e-12), inertia, idx


def train_step(config: Config, run: Run, state: DFDAState, batch: Mapping[str, jax.Array],
               key: jax.Array) -> tuple[DFDAState, dict[str, jax.Array]]:
  """One attention step (Adam on the objective) and one mini-batch k-means update of the bank.

  The centres move with the batch's patches computed by the parameters *before* the update.

  Args:
    config: :class:`Config` (static).
    run: the run (static).
    state: a prepared :class:`DFDAState`.
    batch: ``image [B, H, W, C]`` in [0, 1], optional ``valid [B]``.
    key: unused (the step is deterministic).

  Returns:
    ``(state, metrics)``: float32 ``loss`` (the objective), ``inertia`` (mean squared distance to
    the nearest centre) and ``moved`` (mean squared centre shift of the step).
  """
  del key, run
  images = batch["image"]
  b = images.shape[0]
  valid = batch.get("valid")
  valid = jnp.ones((b,), bool) if valid is None else valid.astype(bool)
  h, w = grid_size(config)
  weights = jnp.repeat(valid, h * w).astype(jnp.float32)
  relative = config.objective == "relative_compactness"

  def loss_fn(params):
    feats = patch_features(config, state, params, images)
    flat = feats.reshape(-1, feats.shape[-1])
    loss, inertia, idx = compactness(flat, weights, state.bank, state.bank_valid, relative=relative)
    return loss, (flat, inertia, idx)

  (loss, (flat, inertia, idx)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = _optimizer(config).update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # Mini-batch k-means (Sculley 2010): per-centre learning rate b_n / N_n.
  slots = state.bank.shape[0]
  flat = jax.lax.stop_gradient(flat)
  sums = jax.ops.segment_sum(weights[:, None] * flat, idx, num_segments=slots)
  hits = jax.ops.segment_sum(weights, idx, num_segments=slots)
  counts = state.counts + hits
  step = hits / jnp.maximum(counts, 1.0)
  mean = sums / jnp.maximum(hits, 1.0)[:, None]
  bank = jnp.where((hits > 0)[:, None], state.bank + step[:, None] * (mean - state.bank), state.bank)
  moved = jnp.sum(jnp.square(bank - state.bank)) / jnp.maximum(jnp.sum(state.bank_valid), 1)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, bank=bank,
                            counts=counts)
  return new_state, {"loss": loss.astype(jnp.float32), "inertia": inertia.astype(jnp.float32),
                     "moved": moved.astype(jnp.float32)}


def predict(config: Config, state: DFDAState, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Image scores and anomaly maps: distance of every patch to its nearest centre (jit-able).

  Args:
    config: :class:`Config` (static).
    state: a prepared (and possibly trained) :class:`DFDAState`.
    images: ``[B, image_size, image_size, channels]`` float32 in [0, 1].

  Returns:
    ``scores [B]`` = max patch score; ``maps [B, H, W]`` = patch scores upsampled bilinearly and
    Gaussian-smoothed with ``sigma`` (Euclidean distances >= 0, not normalised).
  """
  feats = patch_features(config, state, state.params, images)
  patch = pf.knn_patch_scores(feats, state.bank, state.bank_valid, 1)
  return pf.scores_and_maps(patch, (images.shape[1], images.shape[2]), config.sigma)


def memory_bytes(state: DFDAState) -> dict[str, int]:
  """Bytes held at test time: ``bank`` (valid centres x D x 4), ``attention`` and ``backbone``.

  Returns:
    dict with ``bank``, ``attention``, ``backbone`` and ``total`` in bytes.
  """
  size = lambda tree: int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree)))
  n_valid = int(np.asarray(jax.device_get(state.bank_valid)).sum())
  bank = n_valid * int(state.bank.shape[1]) * 4
  att = size(state.params)
  bb = size((state.backbone_a, state.backbone_b))
  return {"bank": bank, "attention": att, "backbone": bb, "total": bank + att + bb}
