"""Torch-free reading of PyTorch ``.pth`` checkpoints and conversion to Flax variables.

``load_torch_state_dict`` reads both on-disk formats written by ``torch.save``:

* the zip format (PyTorch >= 1.6): ``<root>/data.pkl`` plus one raw file per storage
  (``<root>/data/<key>``);
* the legacy format (PyTorch < 1.6): five consecutive pickles/records (magic number, protocol
  version, system info, the object, the storage keys) followed by the raw storages, each
  preceded by its element count as a little-endian int64.

The object pickle is read with a *restricted* unpickler: the only globals it may name are
``collections.OrderedDict``, the tensor rebuild functions of ``torch._utils`` (replaced here by
NumPy implementations) and the ``torch.*Storage`` classes (mapped to NumPy dtypes). Any other
global (``os.system``, ``builtins.eval``, ``copyreg._reconstructor`` ...) raises
:class:`UnsafeCheckpointError` before anything is called, so reading a checkpoint never executes
code and never imports torch.

``torch_to_flax`` maps torchvision-style names (``layer1.0.conv1.weight``) to the nested Flax
variables of ``jaxad.backbones`` (``params/layer1_0/conv1/kernel``), transposing conv kernels
``OIHW -> HWIO`` and linear weights ``(out, in) -> (in, out)``.

References:
  PyTorch ``torch/serialization.py`` (``_legacy_load``, ``_load``) and ``torch/_utils.py``
  (``_rebuild_tensor_v2``), which define the formats read here.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import struct
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

__all__ = [
  "NotACheckpointError",
  "UnsafeCheckpointError",
  "load_torch_state_dict",
  "torch_key_to_flax_path",
  "torch_to_flax",
]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_MAX_LEGACY_PROTOCOL = 1001


class UnsafeCheckpointError(pickle.UnpicklingError):
  """A checkpoint's pickle names a global outside the tensor/storage allow-list."""


class NotACheckpointError(pickle.UnpicklingError, ValueError):
  """A file is in neither of ``torch.save``'s formats (e.g. a text file named ``.pth``)."""


def _bfloat16():
  import ml_dtypes  # a dependency of jax; imported lazily (only bfloat16 checkpoints need it)
  return np.dtype(ml_dtypes.bfloat16)


# torch storage class name -> NumPy dtype (callable for lazily imported dtypes).
_STORAGE_DTYPES: dict[str, Any] = {
  "DoubleStorage": np.float64,
  "FloatStorage": np.float32,
  "HalfStorage": np.float16,
  "BFloat16Storage": _bfloat16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
}


class _StorageType:
  """Stand-in for a ``torch.*Storage`` class: only carries the element dtype."""

  def __init__(self, name: str):
    dtype = _STORAGE_DTYPES[name]
    self.name = name
    self.dtype = np.dtype(dtype() if callable(dtype) and not isinstance(dtype, type) else dtype)


class _Storage:
  """A flat storage: element dtype, element count and (once read) its NumPy data."""

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype = dtype
    self.numel = numel
    self.data: np.ndarray | None = None


class _StorageView:
  """Legacy-format view of a root storage (``view_metadata``)."""

  def __init__(self, root: _Storage, offset: int, numel: int):
    self.root = root
    self.offset = offset
    self.numel = numel


class _PendingTensor:
  """A tensor whose storage bytes are read after the pickle (legacy format)."""

  def __init__(self, storage, storage_offset, size, stride):
    self.storage = storage
    self.storage_offset = int(storage_offset)
    self.size = tuple(int(s) for s in size)
    self.stride = tuple(int(s) for s in stride)

  def materialise(self) -> np.ndarray:
    storage, offset = self.storage, self.storage_offset
    if isinstance(storage, _StorageView):
      offset += storage.offset
      storage = storage.root
    if storage.data is None:
      raise pickle.UnpicklingError("checkpoint references a storage whose bytes are missing")
    flat = storage.data
    if not self.size:
      return flat[offset:offset + 1].reshape(()).copy()
    needed = offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
    if any(n == 0 for n in self.size):
      return np.zeros(self.size, flat.dtype)
    if needed > flat.size or offset < 0 or any(s < 0 for s in self.stride):
      raise pickle.UnpicklingError(
        f"tensor of size {self.size} stride {self.stride} offset {offset} exceeds its storage "
        f"of {flat.size} elements")
    view = np.lib.stride_tricks.as_strided(
      flat[offset:], shape=self.size, strides=tuple(s * flat.itemsize for s in self.stride),
      writeable=False)
    return np.array(view, copy=True, order="C")


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """NumPy stand-in for ``torch._utils._rebuild_tensor(_v2)``; extra args are ignored."""
  del unused  # requires_grad, backward_hooks, metadata: meaningless for NumPy arrays.
  return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
  """NumPy stand-in for ``torch._utils._rebuild_parameter``: a parameter is its data."""
  del requires_grad, backward_hooks, unused
  return data


_ALLOWED_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
  ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  ("collections", "OrderedDict"): collections.OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only tensor/storage globals and resolves storages itself."""

  def __init__(self, file, storages: dict[str, _Storage], path: str):
    super().__init__(file, encoding="utf-8")
    self._storages = storages
    self._path = path

  def find_class(self, module: str, name: str):
    fn = _ALLOWED_FUNCTIONS.get((module, name))
    if fn is not None:
      return fn
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise UnsafeCheckpointError(
      f"refusing to load {self._path!r}: its pickle asks for the global '{module}.{name}', "
      "but only tensor storages (torch.*Storage, torch._utils._rebuild_tensor*, "
      "collections.OrderedDict) are allowed; the file may execute code when opened with "
      "torch.load")

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid:
      raise UnsafeCheckpointError(f"refusing to load {self._path!r}: bad persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage" or len(pid) not in (5, 6):
      raise UnsafeCheckpointError(
        f"refusing to load {self._path!r}: unsupported persistent id kind {kind!r}")
    storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise UnsafeCheckpointError(
        f"refusing to load {self._path!r}: storage type {storage_type!r} is not a torch storage")
    key = key.decode("ascii") if isinstance(key, bytes) else str(key)
    root = self._storages.get(key)
    if root is None:
      root = _Storage(storage_type.dtype, int(numel))
      self._storages[key] = root
    view = pid[5] if len(pid) == 6 else None
    if view is not None:  # legacy: (view_key, offset, view_size)
      _view_key, offset, view_size = view
      return _StorageView(root, int(offset), int(view_size))
    return root


def _materialise(obj):
  """Replaces every pending tensor in a (nested) dict/list/tuple by its NumPy array."""
  if isinstance(obj, _PendingTensor):
    return obj.materialise()
  if isinstance(obj, collections.OrderedDict):
    return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
  if isinstance(obj, dict):
    return {k: _materialise(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_materialise(v) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_materialise(v) for v in obj)
  return obj


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pkl = [n for n in names if n.endswith("data.pkl")]
    if len(pkl) != 1:
      raise pickle.UnpicklingError(f"{path!r}: expected one */data.pkl in the zip, found {pkl}")
    root = pkl[0][: -len("data.pkl")]
    byteorder_name = root + "byteorder"
    if byteorder_name in names:
      order = archive.read(byteorder_name).decode("ascii").strip()
      if order != "little":
        raise NotImplementedError(f"{path!r}: big-endian checkpoints are not supported")
    storages: dict[str, _Storage] = {}
    obj = _RestrictedUnpickler(io.BytesIO(archive.read(pkl[0])), storages, path).load()
    for key, storage in storages.items():
      raw = archive.read(f"{root}data/{key}")
      want = storage.numel * storage.dtype.itemsize
      if len(raw) < want:
        raise pickle.UnpicklingError(
          f"{path!r}: storage {key} holds {len(raw)} bytes, expected {want}")
      storage.data = np.frombuffer(raw[:want], dtype=storage.dtype)
  return _materialise(obj)


def _not_a_checkpoint(path: str, head: bytes, detail: str) -> NotACheckpointError:
  """The error for a file that is neither of ``torch.save``'s formats, with a hint from its start."""
  text = head.lstrip()
  if text.startswith(b"version https://git-lfs"):
    hint = " It is a Git LFS pointer: fetch the real file (git lfs pull)."
  elif text[:1] in (b"<", b"{") or text.lower().startswith((b"<!doctype", b"<html")):
    hint = " It looks like a web page or JSON (a failed download?)."
  elif head and all(32 <= c < 127 or c in (9, 10, 13) for c in head):
    hint = " It is a text file."
  else:
    hint = ""
  return NotACheckpointError(
    f"{path!r} is not a PyTorch checkpoint: expected a file written by torch.save, either a zip "
    f"archive holding */data.pkl (PyTorch >= 1.6) or the legacy format that starts with a "
    f"pickled magic number; the file starts with {head[:32]!r} ({detail}).{hint}")


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    head = f.read(64)
    f.seek(0)
    try:
      magic = _RestrictedUnpickler(f, {}, path).load()
    except UnsafeCheckpointError:
      raise
    except Exception as e:  # noqa: BLE001 - any failure to read the first record: wrong format
      raise _not_a_checkpoint(path, head, f"{type(e).__name__}: {e}") from e
    if not (isinstance(magic, int) and magic == _LEGACY_MAGIC):
      raise _not_a_checkpoint(path, head, f"its first pickle holds a {type(magic).__name__}, "
                                          "not the legacy magic number")
    protocol = _RestrictedUnpickler(f, {}, path).load()
    if protocol != _MAX_LEGACY_PROTOCOL:
      raise pickle.UnpicklingError(f"{path!r}: unsupported legacy protocol {protocol!r}")
    sys_info = _RestrictedUnpickler(f, {}, path).load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
      raise NotImplementedError(f"{path!r}: big-endian checkpoints are not supported")
    storages: dict[str, _Storage] = {}
    obj = _RestrictedUnpickler(f, storages, path).load()
    keys = _RestrictedUnpickler(f, {}, path).load()
    if not isinstance(keys, list):
      raise pickle.UnpicklingError(f"{path!r}: malformed storage key list")
    for key in keys:
      key = str(key)
      storage = storages.get(key)
      if storage is None:
        raise pickle.UnpicklingError(f"{path!r}: storage {key} is not referenced by any tensor")
      (numel,) = struct.unpack("<q", f.read(8))
      if numel != storage.numel:
        raise pickle.UnpicklingError(
          f"{path!r}: storage {key} has {numel} elements on disk, pickle says {storage.numel}")
      nbytes = numel * storage.dtype.itemsize
      raw = f.read(nbytes)
      if len(raw) != nbytes:
        raise pickle.UnpicklingError(f"{path!r}: truncated storage {key}")
      storage.data = np.frombuffer(raw, dtype=storage.dtype)
  return _materialise(obj)


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, Any]:
  """Reads a PyTorch ``.pth`` file into NumPy arrays without torch and without running code.

  Args:
    path: a file written by ``torch.save`` (zip or legacy format), typically a state dict.

  Returns:
    The unpickled object with every tensor replaced by a C-contiguous ``np.ndarray`` of the
    tensor's dtype and shape (``torch.float32`` -> ``float32``, ``int64`` -> ``int64``,
    ``bfloat16`` -> ``ml_dtypes.bfloat16``); for a state dict an ``OrderedDict`` name -> array.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    UnsafeCheckpointError: the pickle names a global other than torch storages, the tensor
      rebuild functions or ``collections.OrderedDict`` (nothing is called in that case).
    NotACheckpointError: the file is in neither format (a text file, a web page, a Git LFS
      pointer, a plain pickle...); the message names the file and what was expected.
    pickle.UnpicklingError: the checkpoint is malformed or truncated.

  References:
    PyTorch ``torch.serialization`` (zip and legacy formats).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint file not found: {path!r}")
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  return _load_legacy(path)


# ---------------------------------------------------------------------------------------------
# torchvision names -> Flax variables

_OLD_DENSENET = re.compile(
  r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def torch_key_to_flax_path(module_key: str, strip_prefix: str = "") -> tuple[str, ...]:
  """Maps a torch module path to the Flax module path used in ``jaxad.backbones``.

  Rule: drop ``strip_prefix``, drop leading underscores of each part, and glue each numeric
  part to the previous one with ``_`` (``layer1.0.downsample.0`` -> ``layer1_0/downsample_0``,
  ``features.1.conv.0.0`` -> ``features_1/conv_0_0``, ``_blocks.3._bn1`` -> ``blocks_3/bn1``).

  Args:
    module_key: dotted module path without the trailing parameter name.
    strip_prefix: a prefix such as ``"features."`` removed first.

  Returns:
    The tuple of Flax module names.
  """
  if strip_prefix and module_key.startswith(strip_prefix):
    module_key = module_key[len(strip_prefix):]
  out: list[str] = []
  for part in module_key.split("."):
    part = part.lstrip("_")
    if part.isdigit() and out:
      out[-1] = f"{out[-1]}_{part}"
    else:
      out.append(part)
  return tuple(out)


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  if path[-1] in tree:
    raise ValueError(f"two checkpoint entries map to the same Flax variable {'/'.join(path)}")
  tree[path[-1]] = value


def torch_to_flax(state_dict: Mapping[str, np.ndarray], strip_prefix: str = "",
                  dtype=np.float32) -> dict[str, dict]:
  """Converts a torchvision-style state dict to Flax ``{"params", "batch_stats"}``.

  Conv weights ``[O, I/groups, kh, kw]`` -> ``kernel [kh, kw, I/groups, O]``; linear weights
  ``[out, in]`` -> ``kernel [in, out]``; BatchNorm ``weight/bias/running_mean/running_var`` ->
  ``params.scale/bias`` and ``batch_stats.mean/var``; ``num_batches_tracked`` is dropped.

  Args:
    state_dict: name -> array, e.g. from :func:`load_torch_state_dict` or
      ``{k: v.numpy() for k, v in module.state_dict().items()}``.
    strip_prefix: a module-path prefix removed from every key (``"features."`` for DenseNet).
    dtype: floating dtype of the returned arrays.

  Returns:
    ``{"params": nested dict, "batch_stats": nested dict}`` of NumPy arrays.
  """
  sd: dict[str, np.ndarray] = {}
  for key, value in state_dict.items():
    match = _OLD_DENSENET.match(key)
    sd[match.group(1) + match.group(2) if match else key] = np.asarray(value)
  bn_modules = {k.rsplit(".", 1)[0] for k in sd if k.endswith(".running_mean")}
  params: dict = {}
  stats: dict = {}
  for key, value in sd.items():
    if "." not in key:
      raise ValueError(f"state dict key {key!r} has no module path")
    module_key, leaf = key.rsplit(".", 1)
    path = torch_key_to_flax_path(module_key, strip_prefix)
    if leaf == "num_batches_tracked":
      continue
    value = np.asarray(value, dtype=dtype)
    if module_key in bn_modules:
      target, name = {"weight": (params, "scale"), "bias": (params, "bias"),
                      "running_mean": (stats, "mean"), "running_var": (stats, "var")}[leaf]
      _set(target, path + (name,), value)
    elif leaf == "weight" and value.ndim == 4:
      _set(params, path + ("kernel",), np.ascontiguousarray(value.transpose(2, 3, 1, 0)))
    elif leaf == "weight" and value.ndim == 2:
      _set(params, path + ("kernel",), np.ascontiguousarray(value.T))
    elif leaf == "bias" and value.ndim == 1:
      _set(params, path + ("bias",), value)
    else:
      raise ValueError(f"don't know how to convert {key!r} with shape {value.shape}")
  return {"params": params, "batch_stats": stats}
