"""Run an exported detector (``*.jaxad``) with JAX and NumPy only.

``experiments/export.py`` (:func:`jaxad.train.export.export_run`) writes one file holding

* ``predict.jaxexport``: the method's ``predict`` serialized with :mod:`jax.export` (StableHLO,
  symbolic batch dimension) and extended by the threshold decision and the score normalisation:
  ``(variables, images [b, H, W, C], calib [2] = (threshold, scale)) -> (scores [b],
  maps [b, H, W], normalised [b], decisions [b])``;
* ``variables.npz``: the arrays of the trained state that ``predict`` reads (arguments of the
  exported function, not constants in it);
* ``metadata.json``: method, config, checkpoint step, the preprocessing of training
  (``image_size``, ``crop_size``, ``channels``), the calibration record of
  :mod:`jaxad.train.calibrate` (threshold, normalisation, map display range) and versions.

:func:`load` needs ``jax``, ``numpy`` and ``flatbuffers`` (for :mod:`jax.export`
deserialization): no Flax, no Optax, no ``jaxad.models``. :meth:`Deployed.load_images` reads image
files exactly like training did (``jaxad.data.image_io``: Pillow, bilinear antialiased resize,
optional centre crop, grayscale <-> RGB), so a file scores the same here as in
``experiments/predict.py --workdir``. On CPU the function is compiled with the XLA options of the
training engine (:func:`jaxad.train.compile.step_options`, JAX only), which makes the scores
bit-identical to :func:`jaxad.train.predict.predict_dataset` of the same images.

Example::

  from jaxad import deploy
  model = deploy.load("model.jaxad")
  images, failed = model.load_images(["a.png", "b.jpg"])
  out = model.predict(images)      # dict of numpy arrays: scores, maps, normalized, decisions
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "VERSION", "SUFFIX", "MODEL_FILE", "VARIABLES_FILE", "METADATA_FILE",
           "Deployed", "load", "write", "read_metadata", "is_exported", "preprocessing_from_run_info"]

FORMAT = "jaxad-export"
VERSION = 1
SUFFIX = ".jaxad"
MODEL_FILE = "predict.jaxexport"
VARIABLES_FILE = "variables.npz"
METADATA_FILE = "metadata.json"
OUTPUTS = ("scores", "maps", "normalized", "decisions")


def preprocessing_from_run_info(info: dict[str, Any]) -> dict[str, Any]:
  """How a run's training images were read, from its ``run.json`` (``image_shape``, ``data_kwargs``).

  Returns:
    ``{"image_size": [h, w], "crop_size": [h, w] or None, "channels": c}``, the arguments of
    :func:`jaxad.data.image_io.decode_image` that reproduce the training preprocessing.
  """
  shape = [int(v) for v in info["image_shape"]]
  kwargs = info.get("data_kwargs") or {}

  def pair(v: Any) -> list[int] | None:
    if v is None:
      return None
    return [int(v), int(v)] if isinstance(v, (int, float)) else [int(x) for x in v]

  return {"image_size": pair(kwargs.get("image_size")) or shape[:2],
          "crop_size": pair(kwargs.get("crop_size")), "channels": int(kwargs.get("channels", shape[2]))}


def write(path: str | os.PathLike, serialized: bytes, variables: Sequence[np.ndarray],
          metadata: dict[str, Any]) -> Path:
  """Writes one exported-model file (a zip archive; written to ``path.tmp``, then renamed).

  Args:
    path: output file (``.jaxad`` by convention); parent folders are created.
    serialized: ``jax.export.Exported.serialize()`` of the extended predict function.
    variables: its first argument, a list of arrays in order.
    metadata: JSON-able description (``format`` and ``version`` are added).
  Returns:
    The written path.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, **{f"v{i:04d}": np.asarray(v) for i, v in enumerate(variables)})
  meta = {"format": FORMAT, "version": VERSION, **metadata}
  tmp = path.with_name(path.name + ".tmp")
  with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
    z.writestr(METADATA_FILE, json.dumps(meta, indent=2) + "\n")
    z.writestr(MODEL_FILE, bytes(serialized))
    z.writestr(VARIABLES_FILE, buf.getvalue())
  tmp.replace(path)
  return path


def is_exported(path: str | os.PathLike) -> bool:
  """True when ``path`` is a file holding an exported model (checks the archive, not the name)."""
  path = Path(path)
  if not path.is_file() or not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as z:
    return {METADATA_FILE, MODEL_FILE, VARIABLES_FILE} <= set(z.namelist())


def _open(path: Path) -> zipfile.ZipFile:
  if not path.is_file():
    raise FileNotFoundError(f"exported model not found: {path} (write one with experiments/"
                            "export.py --workdir=RUN --out=model.jaxad)")
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path} is not an exported jaxad model (not a zip archive; expected the "
                     "output of experiments/export.py)")
  z = zipfile.ZipFile(path)
  missing = {METADATA_FILE, MODEL_FILE, VARIABLES_FILE} - set(z.namelist())
  if missing:
    z.close()
    raise ValueError(f"{path} is not an exported jaxad model (missing {sorted(missing)})")
  return z


def _check_meta(meta: dict[str, Any], path: Path) -> dict[str, Any]:
  if meta.get("format") != FORMAT:
    raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
  if meta.get("version") != VERSION:
    raise ValueError(f"{path}: format version {meta.get('version')!r}; this jaxad reads version "
                     f"{VERSION} (re-export the run with this version's experiments/export.py)")
  return meta


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
  """The ``metadata.json`` of an exported model (without loading the function)."""
  path = Path(path)
  with _open(path) as z:
    return _check_meta(json.loads(z.read(METADATA_FILE)), path)


class Deployed:
  """An exported detector, ready to call (built by :func:`load`).

  Attributes:
    path: the file it was loaded from.
    metadata: its ``metadata.json``.
    image_shape: ``(H, W, C)`` the function takes.
    threshold: the stored decision threshold, or ``None`` (run trained without a validation split).
    calibration: the stored calibration record (dict) or ``None``.
  """

  def __init__(self, path: Path, metadata: dict[str, Any], exported: Any,
               variables: list[Any], compiler_options: dict[str, str] | None) -> None:
    import jax
    self.path = path
    self.metadata = metadata
    self.image_shape = tuple(int(v) for v in metadata["image_shape"])
    self.calibration = metadata.get("calibration")
    self.threshold = None if self.calibration is None else float(self.calibration["threshold"])
    self._scale = None if self.calibration is None else float(self.calibration["high"]
                                                              - self.calibration["low"])
    self._exported = exported
    self._variables = variables
    self._call = jax.jit(exported.call, compiler_options=compiler_options)

  def __repr__(self) -> str:
    return (f"Deployed({self.metadata.get('method')!r}, image_shape={self.image_shape}, "
            f"threshold={self.threshold}, path={str(self.path)!r})")

  def _check(self, images: Any) -> np.ndarray:
    arr = np.asarray(images)
    if not np.issubdtype(arr.dtype, np.floating):
      raise TypeError(f"images must be float in [0, 1] (e.g. uint8 / 255), got dtype {arr.dtype}")
    if arr.ndim == 3:
      arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != self.image_shape:
      raise ValueError(f"images must be [B, {', '.join(map(str, self.image_shape))}] (the training "
                       f"size; read files with load_images), got shape {np.shape(images)}")
    if arr.shape[0] == 0:
      raise ValueError("images is empty")
    return arr.astype(np.float32, copy=False)

  def _calib(self, threshold: float | None) -> np.ndarray:
    t = self.threshold if threshold is None else float(threshold)
    scale = self._scale if self._scale is not None else 1.0
    return np.asarray([math.nan if t is None else t, scale], np.float32)

  def __call__(self, images: Any, *, threshold: float | None = None) -> dict[str, np.ndarray]:
    """Scores one batch (any batch size; every new size compiles once).

    Args:
      images: ``[B, H, W, C]`` (or one ``[H, W, C]``) float in ``[0, 1]`` at :attr:`image_shape`.
      threshold: overrides the stored threshold for the decisions.
    Returns:
      ``scores [B]``, ``maps [B, H, W]`` (float32) and, when a threshold is known,
      ``normalized [B]`` (float32 in [0, 1], threshold -> 0.5; with an overriding threshold the
      stored scale) and ``decisions [B]`` (bool, ``scores >= threshold``).
    """
    arr = self._check(images)
    outs = self._call(self._variables, arr, self._calib(threshold))
    outs = dict(zip(OUTPUTS, (np.asarray(o) for o in outs)))
    if self.threshold is None and threshold is None:
      outs.pop("normalized")
      outs.pop("decisions")
    return outs

  def predict(self, images: Any, *, batch_size: int = 32, threshold: float | None = None,
              pad: bool | None = None) -> dict[str, np.ndarray]:
    """:meth:`__call__` over ``images`` in batches of ``batch_size``.

    Args:
      images, threshold: as for :meth:`__call__`.
      batch_size: images per call.
      pad: zero-pad a short last batch to ``batch_size`` (one compilation for any number of
        images); ``None``: pad only when there is more than one batch.
    Returns:
      As :meth:`__call__`, for all images.
    """
    arr = self._check(images)
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts = []
    for s in range(0, arr.shape[0], batch_size):
      chunk = arr[s:s + batch_size]
      real = chunk.shape[0]
      if real < batch_size and (pad or (pad is None and arr.shape[0] > batch_size)):
        chunk = np.concatenate([chunk, np.zeros((batch_size - real,) + chunk.shape[1:], np.float32)])
      out = self(chunk, threshold=threshold)
      parts.append({k: v[:real] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  @property
  def preprocessing(self) -> dict[str, Any]:
    """``image_size``, ``crop_size``, ``channels`` of :func:`jaxad.data.image_io.decode_image`."""
    return dict(self.metadata["preprocessing"])

  def load_images(self, paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, dict[str, str]]:
    """Reads image files like training did (needs Pillow; see the module docstring).

    Args:
      paths: image files of any size, grayscale or RGB.
    Returns:
      ``(images [N, H, W, C] float32 in [0, 1], failed)``: the readable files in the given
      order, and ``{path: error message}`` for files that could not be read.
    """
    from jaxad.data import image_io  # NumPy + Pillow
    pre = self.preprocessing
    images, failed = [], {}
    for p in paths:
      try:
        x = image_io.decode_image(p, image_size=pre["image_size"], crop_size=pre["crop_size"],
                                  channels=pre["channels"])
      except (OSError, ValueError) as e:
        failed[str(p)] = str(e)
        continue
      images.append(x)
    if not images:
      return np.zeros((0,) + self.image_shape, np.float32), failed
    return np.stack(images).astype(np.float32) / np.float32(255.0), failed


def load(path: str | os.PathLike, *, compiler_options: str | dict[str, str] | None = "default"
         ) -> Deployed:
  """Loads an exported model (JAX + NumPy; no Flax, Optax or ``jaxad.models``).

  Args:
    path: a file written by ``experiments/export.py``.
    compiler_options: ``"default"``: the XLA options of the training engine on CPU
      (:func:`jaxad.train.compile.step_options`, which also reads ``JAXAD_XLA_CPU_OPTIONS``);
      ``None``: XLA's defaults; or a dict of options.
  Returns:
    :class:`Deployed`.
  Raises:
    FileNotFoundError: no such file. ValueError: not an exported jaxad model, or another format
      version. RuntimeError: the file was exported for other platforms than this JAX backend.
  """
  import jax
  from jax import export as jax_export
  path = Path(path)
  with _open(path) as z:
    meta = _check_meta(json.loads(z.read(METADATA_FILE)), path)
    serialized = z.read(MODEL_FILE)
    with np.load(io.BytesIO(z.read(VARIABLES_FILE))) as npz:
      arrays = [npz[f"v{i:04d}"] for i in range(len(npz.files))]
  try:
    exported = jax_export.deserialize(bytearray(serialized))
  except ImportError as e:
    raise ImportError(f"loading {path} needs the `flatbuffers` package ({e})") from e
  backend = jax.default_backend()
  platforms = tuple(exported.platforms)
  if backend not in platforms and not (backend == "gpu" and {"cuda", "rocm"} & set(platforms)):
    raise RuntimeError(f"{path} was exported for {platforms}, this JAX runs on {backend!r}; "
                       "re-export with experiments/export.py --platforms=...")
  if compiler_options == "default":
    from jaxad.train.compile import step_options  # JAX only
    compiler_options = step_options()
  variables = [jax.device_put(a) for a in arrays]
  return Deployed(path, meta, exported, variables, compiler_options)
