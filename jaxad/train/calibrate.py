"""A decision threshold and a score normalisation for a trained run, from validation scores.

A trained detector outputs raw anomaly scores whose scale depends on the method, the data and
the training run. To decide "defective or not" on new images, every run of
``experiments/train.py`` holds out a share of its (normal) training images and calibrates on
their scores after training:

* threshold, ``rule="quantile"`` (default, needs no anomalies): the ``quantile`` (0.99) of the
  held-out normal scores (NumPy's linear interpolation), i.e. about 1 % of normal images
  are flagged;
* threshold, ``rule="f1"`` (a labelled validation set, normal and anomalous images, was given):
  the F1-optimal threshold of :func:`jaxad.metrics.f1_max` on those labels and scores;
* normalisation, fixed once from the *normal* validation scores, so the same image gets the
  same normalised score anywhere (no per-batch or per-test-set statistics)::

    normalised = clip(0.5 + (score - threshold) / (high - low), 0, 1)

  with ``(low, high)`` the minimum and maximum (``normalization="minmax"``) or the
  ``norm_quantiles`` (``"quantile"``, default ``(0.01, 0.99)``) of the normal scores. The
  threshold maps to 0.5. Decisions are always taken on the raw score (``score >= threshold``),
  never on the rounded normalised one.
* a display range for anomaly maps (``map_low``, ``map_high``: minimum and maximum of the normal
  validation maps), so overlays of different images share one colour scale.

Thresholds and ranges are stored rounded to float32, the dtype of the scores, so that NumPy here
and an exported model (:mod:`jaxad.deploy`) take the same decisions. The record is written as
``<workdir>/calibration.json`` (:func:`write_calibration`). The functions here are NumPy only;
:func:`calibrate_run` scores images with :func:`jaxad.train.predict.predict_dataset`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CALIBRATION_FILE", "RULES", "NORMALIZATIONS", "Calibration", "calibrate",
           "normalize_scores", "decide", "write_calibration", "read_calibration", "calibrate_run"]

CALIBRATION_FILE = "calibration.json"
RULES = ("quantile", "f1")
NORMALIZATIONS = ("minmax", "quantile")


def _f32(x: float) -> float:
  """``x`` rounded to the nearest float32 (as a Python float)."""
  return float(np.float32(x))


@dataclasses.dataclass(frozen=True)
class Calibration:
  """A threshold and a score normalisation (see the module docstring).

  Attributes:
    threshold: decision threshold on raw scores (anomalous when ``score >= threshold``).
    low, high: raw scores mapped to ``0.5 -/+ (high - low) / 2`` around the threshold, i.e. the
      normalisation scale is ``high - low`` (``> 0``).
    rule: ``"quantile"`` or ``"f1"``: how the threshold was chosen.
    quantile: the quantile of the normal scores (``rule="quantile"``).
    normalization: ``"minmax"`` or ``"quantile"``: how ``(low, high)`` were chosen.
    norm_quantiles: the quantiles of ``(low, high)`` for ``normalization="quantile"``.
    map_low, map_high: display range of anomaly maps (min / max over the normal validation maps),
      or ``None``.
    num_normal, num_anomalous: validation images used.
    f1: the validation F1 at the threshold (``rule="f1"``), else ``None``.
    info: free JSON-able details (validation fraction, seed, checkpoint step ...).
  """
  threshold: float
  low: float
  high: float
  rule: str = "quantile"
  quantile: float | None = 0.99
  normalization: str = "minmax"
  norm_quantiles: tuple[float, float] | None = None
  map_low: float | None = None
  map_high: float | None = None
  num_normal: int = 0
  num_anomalous: int = 0
  f1: float | None = None
  info: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self) -> None:
    for name in ("threshold", "low", "high"):
      value = getattr(self, name)
      if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"Calibration.{name} must be a finite number, got {value!r}")
    if not self.high > self.low:
      raise ValueError(f"Calibration needs high > low, got low={self.low}, high={self.high}")
    if self.rule not in RULES:
      raise ValueError(f"Calibration.rule must be one of {RULES}, got {self.rule!r}")
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f"Calibration.normalization must be one of {NORMALIZATIONS}, got "
                       f"{self.normalization!r}")

  @property
  def scale(self) -> float:
    """``high - low``: raw score units per unit of normalised score."""
    return self.high - self.low

  def to_dict(self) -> dict[str, Any]:
    """A JSON-compatible dict (tuples become lists)."""
    out = dataclasses.asdict(self)
    if out["norm_quantiles"] is not None:
      out["norm_quantiles"] = list(out["norm_quantiles"])
    return out

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "Calibration":
    """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
      raise ValueError(f"calibration record has unknown field(s) {unknown}; fields: {sorted(fields)}")
    values = dict(values)
    if values.get("norm_quantiles") is not None:
      values["norm_quantiles"] = tuple(values["norm_quantiles"])
    return cls(**values)


def _scores(x: Any, name: str) -> np.ndarray:
  arr = np.asarray(x)
  if isinstance(x, dict) or arr.dtype == object:
    raise TypeError(f"{name} must be an array of per-image scores, got {type(x).__name__}")
  arr = arr.astype(np.float64).reshape(-1) if arr.ndim <= 1 else None
  if arr is None:
    raise ValueError(f"{name} must be [N] per-image scores, got shape {np.shape(x)}")
  if arr.size == 0:
    raise ValueError(f"{name} is empty: calibration needs at least one validation image")
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} contains NaN/inf")
  return arr


def _unit(value: Any, name: str, *, closed: bool = True) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
    raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
  ok = 0.0 <= value <= 1.0 if closed else 0.0 < value < 1.0
  if not ok:
    raise ValueError(f"{name} must be in {'[0, 1]' if closed else '(0, 1)'}, got {value!r}")
  return float(value)


def calibrate(normal_scores: Any, *, quantile: float = 0.99, normalization: str = "minmax",
              norm_quantiles: tuple[float, float] = (0.01, 0.99), labels: Any = None,
              scores: Any = None, normal_maps: Any = None,
              info: dict[str, Any] | None = None) -> Calibration:
  """Chooses the threshold and the normalisation from validation scores (pure NumPy).

  Args:
    normal_scores: ``[N]`` scores of held-out *normal* images (N >= 1; 20+ for a meaningful
      0.99 quantile).
    quantile: in ``[0, 1]``; the threshold is this quantile of ``normal_scores`` (used when no
      ``labels`` are given).
    normalization: ``"minmax"`` or ``"quantile"``: ``(low, high)`` of the normalisation are the
      min / max, or the ``norm_quantiles``, of the normal scores (and of the normal labelled ones).
    norm_quantiles: ``(lo, hi)`` with ``0 <= lo < hi <= 1``.
    labels: optional ``[M]`` 0/1 labels of a labelled validation set (both classes present); with
      ``scores`` the threshold is F1-optimal on them (:func:`jaxad.metrics.f1_max`).
    scores: ``[M]`` scores of the labelled validation images.
    normal_maps: optional ``[N, H, W]`` maps of the normal images: the maps' display range.
    info: free JSON-able details stored with the record.
  Returns:
    :class:`Calibration`. If all normal scores are equal, the scale is ``max(|threshold|, 1)``.
  Raises:
    ValueError / TypeError: empty or non-finite scores, bad quantiles, labels without scores, one
      class only.
  """
  normal = _scores(normal_scores, "normal_scores")
  quantile = _unit(quantile, "quantile")
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
  if (not isinstance(norm_quantiles, (tuple, list)) or len(norm_quantiles) != 2
      or not _unit(norm_quantiles[0], "norm_quantiles[0]") < _unit(norm_quantiles[1],
                                                                   "norm_quantiles[1]")):
    raise ValueError(f"norm_quantiles must be (lo, hi) with 0 <= lo < hi <= 1, got {norm_quantiles!r}")
  if (labels is None) != (scores is None):
    raise ValueError("labels and scores go together (a labelled validation set), got only one")
  f1 = None
  num_anomalous = 0
  pool = normal
  if labels is None:
    rule = "quantile"
    threshold = float(np.quantile(normal, quantile))
  else:
    from jaxad import metrics  # NumPy only
    lab = np.asarray(labels).reshape(-1)
    sc = _scores(scores, "scores")
    if lab.shape != sc.shape:
      raise ValueError(f"labels and scores must have the same length, got {lab.shape} and {sc.shape}")
    if not np.all(np.isin(lab, (0, 1))) or lab.min() == lab.max():
      raise ValueError("labels must be 0 (normal) / 1 (anomalous) with both classes present, got "
                       f"values {np.unique(lab)}")
    rule = "f1"
    f1, threshold = metrics.f1_max(lab, sc.astype(np.float32))
    f1 = float(f1)
    num_anomalous = int(lab.sum())
    pool = np.concatenate([normal, sc[lab == 0]])
  if normalization == "minmax":
    low, high = float(pool.min()), float(pool.max())
  else:
    low, high = (float(v) for v in np.quantile(pool, norm_quantiles))
  threshold, low, high = _f32(threshold), _f32(low), _f32(high)
  if not high > low:
    half = max(abs(threshold), 1.0) / 2
    low, high = _f32(threshold - half), _f32(threshold + half)
  map_low = map_high = None
  if normal_maps is not None:
    m = np.asarray(normal_maps, np.float32)
    if m.ndim != 3 or m.shape[0] != normal.size or not np.all(np.isfinite(m)):
      raise ValueError(f"normal_maps must be finite [N, H, W] with N = {normal.size}, got {m.shape}")
    map_low, map_high = _f32(m.min()), _f32(m.max())
  return Calibration(threshold=threshold, low=low, high=high, rule=rule,
                     quantile=quantile if rule == "quantile" else None,
                     normalization=normalization,
                     norm_quantiles=tuple(map(float, norm_quantiles)) if normalization == "quantile" else None,
                     map_low=map_low, map_high=map_high, num_normal=int(normal.size),
                     num_anomalous=num_anomalous, f1=f1, info=dict(info or {}))


def normalize_scores(calibration: Calibration, scores: Any) -> np.ndarray:
  """``clip(0.5 + (scores - threshold) / (high - low), 0, 1)`` as float32 (threshold -> 0.5).

  Args:
    calibration: the run's :class:`Calibration`.
    scores: raw scores, any shape.
  Returns:
    float32 normalised scores in ``[0, 1]``, the shape of ``scores``.
  """
  s = np.asarray(scores, np.float32)
  t, scale = np.float32(calibration.threshold), np.float32(calibration.scale)
  return np.clip(np.float32(0.5) + (s - t) / scale, np.float32(0.0), np.float32(1.0))


def decide(calibration: Calibration, scores: Any, threshold: float | None = None) -> np.ndarray:
  """``scores >= threshold`` (bool, anomalous = True) on float32 raw scores.

  Args:
    calibration: the run's :class:`Calibration`.
    scores: raw scores, any shape.
    threshold: overrides ``calibration.threshold`` when given.
  """
  t = calibration.threshold if threshold is None else threshold
  return np.asarray(scores, np.float32) >= np.float32(t)


def write_calibration(workdir: str | Path, calibration: Calibration) -> Path:
  """Writes ``<workdir>/calibration.json`` atomically; returns the path."""
  path = Path(workdir) / CALIBRATION_FILE
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(calibration.to_dict(), indent=2) + "\n")
  tmp.replace(path)
  return path


def read_calibration(workdir: str | Path) -> Calibration | None:
  """The run's :class:`Calibration`, or ``None`` when ``<workdir>/calibration.json`` is absent.

  Raises:
    ValueError: the file exists but is not a calibration record.
  """
  path = Path(workdir) / CALIBRATION_FILE
  if not path.is_file():
    return None
  try:
    return Calibration.from_dict(json.loads(path.read_text()))
  except (json.JSONDecodeError, TypeError, ValueError) as e:
    raise ValueError(f"{path} is not a valid calibration record: {e}") from None


def calibrate_run(method: Any, config: Any, state: Any, normal_images: np.ndarray, *,
                  labelled_images: np.ndarray | None = None, labels: Any = None,
                  batch_size: int = 32, **kwargs: Any) -> Calibration:
  """Scores validation images with a trained state and calibrates (:func:`calibrate`).

  Args:
    method: registry name or module (must not define ``normalize``: scores normalised over a
      whole test set have no per-image meaning).
    config: the method's ``Config``.
    state: the trained state.
    normal_images: ``[N, H, W, C]`` float32 held-out normal images.
    labelled_images, labels: optional labelled validation set (F1-optimal threshold).
    batch_size: images per prediction call.
    **kwargs: ``quantile``, ``normalization``, ``norm_quantiles``, ``info`` of :func:`calibrate`.
  Returns:
    :class:`Calibration` (with ``map_low`` / ``map_high`` from the normal maps).
  """
  from jaxad.train.predict import predict_dataset  # jax and the method: imported on use
  from jaxad.train.loop import resolve_method
  method = resolve_method(method)
  if hasattr(method, "normalize"):
    raise NotImplementedError(
        f"{getattr(method, 'NAME', method.__name__)} normalises scores over a whole test set "
        "(its `normalize` hook); a per-image threshold is not defined for it")
  normal_scores, normal_maps = predict_dataset(method, config, state, normal_images,
                                               batch_size=batch_size, desc="calibrate")
  scores = None
  if labelled_images is not None:
    scores, _ = predict_dataset(method, config, state, labelled_images, batch_size=batch_size,
                                desc="calibrate (labelled)")
  return calibrate(normal_scores, labels=labels, scores=scores, normal_maps=normal_maps, **kwargs)
