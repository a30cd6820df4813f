"""Anomaly-detection metrics: AUROC, average precision, F1-max, PRO / AUPRO.

Host-side NumPy/SciPy only (no JAX, TensorFlow or torch), so every method's
evaluation script can call :func:`evaluate` on the arrays it collected.

All metrics are **exact** (no binning): they are computed from the sorted
positive and sorted negative scores with counting (``np.searchsorted``), which
gives the same values as scikit-learn's ``roc_auc_score`` /
``average_precision_score`` (ties handled the same way: one curve point per
distinct score) and as the MVTec AD ``compute_pro`` + ``trapezoid`` code, while
using one sorted copy of the scores (4 bytes per pixel for float32 maps), the
candidate thresholds above the FPR limit (AUPRO only, ~0.3 x 4 bytes per pixel),
O(#positive pixels) and fixed-size chunks of working memory. Measured on a
200 x 256 x 256 float32 map set (13.1 M pixels): peak ~84 MiB beyond the inputs
for pixel AUROC + AUPRO (~6.7 bytes per pixel), where argsort-based
implementations (the MVTec code, scikit-learn) need tens of bytes per pixel.

Labels: ``1`` = anomalous (positive), ``0`` = normal. Higher scores mean "more
anomalous". Masks are ``[B,H,W]`` with values in ``{0, 1}`` (bool, int or float).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
  "auroc",
  "average_precision",
  "f1_max",
  "pixel_auroc",
  "pixel_auroc_per_image",
  "pixel_average_precision",
  "pixel_f1_max",
  "pro_curve",
  "aupro",
  "evaluate",
]

# Number of distinct thresholds processed at once (bounds the int64/float64
# temporaries to ~2 MB each).
_CHUNK = 1 << 18
# 8-connectivity, as in the MVTec AD evaluation code (`structure = np.ones((3, 3))`).
_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------


def _as_array(x, name: str) -> np.ndarray:
  if x is None:
    raise ValueError(f"{name} must be an array, got None")
  arr = np.asarray(x)
  if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
    raise TypeError(f"{name} must be a numeric or boolean array, got dtype {arr.dtype}")
  if arr.size == 0:
    raise ValueError(f"{name} is empty (shape {arr.shape}); metrics need at least one element")
  return arr


def _score_dtype(arr: np.ndarray) -> np.dtype:
  """float64 inputs stay float64; everything else is compared as float32 or wider."""
  return np.result_type(arr.dtype, np.float32)


def _check_finite(arr: np.ndarray, name: str) -> None:
  if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    raise ValueError(f"{name} contains {bad} NaN/inf value(s); scores must be finite")


def _check_binary(arr: np.ndarray, name: str) -> None:
  if arr.dtype == bool:
    return
  ok = (arr == 0) | (arr == 1)
  if not np.all(ok):
    bad = np.unique(arr[~ok])[:5]
    raise ValueError(f"{name} must contain only 0 (normal) and 1 (anomalous), got values such as "
                     f"{bad.tolist()} (binarise soft masks, e.g. `mask > 0.5`)")


def _check_image_level(labels, scores) -> tuple[np.ndarray, np.ndarray]:
  labels = _as_array(labels, "labels")
  scores = _as_array(scores, "scores")
  if labels.ndim != 1 or scores.ndim != 1 or labels.shape != scores.shape:
    raise ValueError(f"labels and scores must be 1-D arrays of equal length [N], got shapes "
                     f"{labels.shape} and {scores.shape}")
  _check_binary(labels, "labels")
  _check_finite(scores, "scores")
  return labels.astype(bool), scores.astype(_score_dtype(scores), copy=False)


def _check_pixel_level(masks, maps) -> tuple[np.ndarray, np.ndarray]:
  masks = _as_array(masks, "masks")
  maps = _as_array(maps, "maps")
  if masks.ndim != 3 or masks.shape != maps.shape:
    raise ValueError(f"masks and maps must both be [B,H,W] with equal shapes, got shapes "
                     f"{masks.shape} and {maps.shape}")
  return masks, maps


def _check_two_classes(num_pos: int, num_neg: int, what: str) -> None:
  if num_pos == 0 or num_neg == 0:
    present = "anomalous (1)" if num_pos else "normal (0)"
    raise ValueError(f"{what}: only one class present ({present}: {num_pos + num_neg} elements, "
                     f"positives={num_pos}, negatives={num_neg}); the metric is undefined")


# ----------------------------------------------------------------------------
# Core: exact statistics from sorted positive / negative scores
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sorted:
  """Scores split by class, each sorted ascending (plus optional PRO weights)."""

  pos: np.ndarray  # [P] ascending
  neg: np.ndarray  # [N] ascending
  weights: np.ndarray | None = None  # [P] 1/|C_k| of each positive pixel, aligned with `pos`
  num_regions: int = 0


def _split_image_level(labels: np.ndarray, scores: np.ndarray, what: str) -> _Sorted:
  pos = np.sort(scores[labels])
  neg = np.sort(scores[~labels])
  _check_two_classes(pos.size, neg.size, what)
  return _Sorted(pos, neg)


def _split_pixel_level(masks: np.ndarray, maps: np.ndarray, *, regions: bool, what: str) -> _Sorted:
  """Validates image by image and fills preallocated class arrays (bounded memory)."""
  dtype = _score_dtype(maps)
  counts = np.empty(len(masks), dtype=np.int64)
  for i in range(len(masks)):
    _check_binary(masks[i], f"masks[{i}]")
    _check_finite(maps[i], f"maps[{i}]")
    counts[i] = np.count_nonzero(masks[i])
  num_pos = int(counts.sum())
  num_neg = int(masks.size - num_pos)
  _check_two_classes(num_pos, num_neg, what)
  pos = np.empty(num_pos, dtype=dtype)
  neg = np.empty(num_neg, dtype=dtype)
  weights = np.empty(num_pos, dtype=np.float64) if regions else None
  num_regions = 0
  p = n = 0
  for i in range(len(masks)):
    m = masks[i] != 0
    s = maps[i]
    k = int(counts[i])
    pos[p:p + k] = s[m]
    neg[n:n + m.size - k] = s[~m]
    if regions and k:
      labeled, num = ndimage.label(m, structure=_EIGHT_CONNECTED)
      sizes = np.bincount(labeled.ravel())
      weights[p:p + k] = 1.0 / sizes[labeled[m]]
      num_regions += int(num)
    p += k
    n += m.size - k
  if regions:
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    weights = weights[order]
    del order
  else:
    pos.sort()
  neg.sort()
  return _Sorted(pos, neg, weights, num_regions)


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Start index and length of every run of equal values in a sorted array."""
  change = np.empty(sorted_values.size, dtype=bool)
  change[0] = True
  np.not_equal(sorted_values[1:], sorted_values[:-1], out=change[1:])
  starts = np.flatnonzero(change)
  lengths = np.diff(np.append(starts, sorted_values.size))
  return starts, lengths


def _binary_stats(data: _Sorted) -> dict[str, float]:
  """AUROC, AP and F1-max (with threshold) in one pass over the distinct positive scores.

  With ``tp(t) = #{pos >= t}`` and ``fp(t) = #{neg >= t}``:
  AUROC = P(s+ > s-) + 0.5 P(s+ = s-) (equal to the trapezoidal ROC area with ties);
  AP = sum_t (tp(t) - tp(t+)) / P * tp(t) / (tp(t) + fp(t)) (scikit-learn's step sum; recall only
  changes at positive scores); F1(t) = 2 tp / (tp + fp + P), maximal at a positive score.
  """
  pos, neg = data.pos, data.neg
  num_pos, num_neg = pos.size, neg.size
  starts, lengths = _runs(pos)
  twice_wins = 0  # sum over pos of 2 #{neg < s} + #{neg == s}: exact integer arithmetic
  ap = 0.0
  best_f1, best_thr = -1.0, float(pos[-1])
  # Descending threshold order so that F1 ties keep the highest threshold.
  for hi in range(starts.size, 0, -_CHUNK):
    lo = max(hi - _CHUNK, 0)
    st = starts[lo:hi][::-1]
    ln = lengths[lo:hi][::-1]
    u = pos[st]
    below = np.searchsorted(neg, u, side="left")
    below_or_eq = np.searchsorted(neg, u, side="right")
    twice_wins += int(np.sum(ln * (below + below_or_eq)))
    tp = (num_pos - st).astype(np.float64)
    fp = (num_neg - below).astype(np.float64)
    ap += float(np.sum(ln / num_pos * (tp / (tp + fp))))
    f1 = 2.0 * tp / (tp + fp + num_pos)
    j = int(np.argmax(f1))
    if f1[j] > best_f1:
      best_f1, best_thr = float(f1[j]), float(u[j])
  return {
    "auroc": twice_wins / (2.0 * num_pos * num_neg),
    "ap": ap,
    "f1_max": best_f1,
    "f1_threshold": best_thr,
  }


# ----------------------------------------------------------------------------
# Image-level (or any 1-D) metrics
# ----------------------------------------------------------------------------


def auroc(labels, scores) -> float:
  """Area under the ROC curve (exact; equals ``sklearn.metrics.roc_auc_score``).

  Args:
    labels: ``[N]`` ground truth in ``{0, 1}`` (1 = anomalous); both classes must occur.
    scores: ``[N]`` finite anomaly scores (higher = more anomalous), any range.

  Returns:
    AUROC in ``[0, 1]``; tied scores count one half (trapezoidal ROC).

  References:
    Fawcett, "An introduction to ROC analysis", Pattern Recognit. Lett. 2006 (Alg. 2, trapezoids);
    equivalently the Mann-Whitney U statistic divided by ``P * N``.
  """
  labels, scores = _check_image_level(labels, scores)
  return _binary_stats(_split_image_level(labels, scores, "auroc"))["auroc"]


def average_precision(labels, scores) -> float:
  """Average precision (exact; equals ``sklearn.metrics.average_precision_score``).

  Args:
    labels: ``[N]`` ground truth in ``{0, 1}``; both classes must occur.
    scores: ``[N]`` finite anomaly scores.

  Returns:
    ``AP = sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds (no interpolation), in ``[0, 1]``.

  References:
    scikit-learn ``average_precision_score`` definition; Zhu, "Recall, precision and average
    precision", 2004.
  """
  labels, scores = _check_image_level(labels, scores)
  return _binary_stats(_split_image_level(labels, scores, "average_precision"))["ap"]


def f1_max(labels, scores) -> tuple[float, float]:
  """Maximum F1 score over all thresholds, and the threshold reaching it.

  Args:
    labels: ``[N]`` ground truth in ``{0, 1}``; both classes must occur.
    scores: ``[N]`` finite anomaly scores.

  Returns:
    ``(f1, threshold)``: the best ``F1 = 2PR / (P + R)`` with predictions ``score >= threshold``;
    ``threshold`` is one of the scores (the highest one if several thresholds tie).

  References:
    The "F1-max" of anomalib / VisA benchmarks (max over the precision-recall curve).
  """
  labels, scores = _check_image_level(labels, scores)
  stats = _binary_stats(_split_image_level(labels, scores, "f1_max"))
  return stats["f1_max"], stats["f1_threshold"]


# ----------------------------------------------------------------------------
# Pixel-level metrics
# ----------------------------------------------------------------------------


def pixel_auroc(masks, maps) -> float:
  """Pixel-level AUROC over all pixels of all images (exact, bounded memory).

  Args:
    masks: ``[B,H,W]`` ground-truth masks in ``{0, 1}``; both classes must occur somewhere.
    maps: ``[B,H,W]`` finite anomaly maps (any range; normalisation does not change AUROC).

  Returns:
    AUROC in ``[0, 1]`` equal to ``roc_auc_score(masks.ravel(), maps.ravel())``.

  References:
    Bergmann et al., "MVTec AD", CVPR 2019 / IJCV 2021 (pixel-wise ROC).
  """
  masks, maps = _check_pixel_level(masks, maps)
  return _binary_stats(_split_pixel_level(masks, maps, regions=False, what="pixel_auroc"))["auroc"]


def pixel_auroc_per_image(masks, maps) -> tuple[float, int]:
  """Mean over images of each image's pixel AUROC (RAMFAE's protocol), and how many images count.

  RAMFAE (Sun et al. 2023): "A ROC AUC score is calculated for each image by pixel, and an average
  score is calculated". A per-image AUROC is defined only for an image whose mask has both
  classes: images without defect pixels (all normal test images) and fully defective masks are
  **excluded** from the mean, not counted as 0 or 1.

  Args:
    masks: ``[B,H,W]`` ground-truth masks in ``{0, 1}``; at least one image with both classes.
    maps: ``[B,H,W]`` finite anomaly maps.

  Returns:
    ``(mean AUROC in [0, 1], number of images averaged)``; each image's AUROC equals
    ``roc_auc_score(masks[i].ravel(), maps[i].ravel())``.

  Raises:
    ValueError: no image has both classes, or bad shapes / values.
  """
  masks, maps = _check_pixel_level(masks, maps)
  values = []
  for m, s in zip(masks, maps):
    pos = int(np.count_nonzero(m))
    if 0 < pos < m.size:
      values.append(auroc(m.ravel(), s.ravel()))
  if not values:
    raise ValueError("pixel_auroc_per_image: no image has both defect and normal pixels")
  return float(np.mean(values)), len(values)


def pixel_average_precision(masks, maps) -> float:
  """Pixel-level average precision (exact; equals sklearn's AP on the flattened pixels).

  Args:
    masks: ``[B,H,W]`` ground-truth masks in ``{0, 1}``.
    maps: ``[B,H,W]`` finite anomaly maps.

  Returns:
    AP in ``[0, 1]``.

  References:
    scikit-learn ``average_precision_score``; pixel AP as reported e.g. by DRAEM / DFDA-AD Table 6.
  """
  masks, maps = _check_pixel_level(masks, maps)
  return _binary_stats(_split_pixel_level(masks, maps, regions=False,
                                          what="pixel_average_precision"))["ap"]


def pixel_f1_max(masks, maps) -> tuple[float, float]:
  """Pixel-level F1-max and its threshold (see :func:`f1_max`).

  Args:
    masks: ``[B,H,W]`` ground-truth masks in ``{0, 1}``.
    maps: ``[B,H,W]`` finite anomaly maps.

  Returns:
    ``(f1, threshold)`` with predictions ``map >= threshold``.

  References:
    anomalib ``F1Max``.
  """
  masks, maps = _check_pixel_level(masks, maps)
  stats = _binary_stats(_split_pixel_level(masks, maps, regions=False, what="pixel_f1_max"))
  return stats["f1_max"], stats["f1_threshold"]


def _pro_chunks(data: _Sorted, fpr_limit: float | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields (fpr, pro) chunks at distinct thresholds, descending threshold (ascending FPR).

  Stops one distinct threshold after the FPR exceeds ``fpr_limit`` (needed for interpolation);
  with ``fpr_limit=None`` the final point is ``(1, 1)`` as in the MVTec code.
  """
  pos, neg, w = data.pos, data.neg, data.weights
  num_neg = neg.size
  # Suffix sums of the region weights: pro_sum[i] = sum_{j >= i} w[j] (accumulated from the top,
  # like the MVTec cumsum over descending scores); pro_sum[P] = 0.
  pro_sum = np.zeros(pos.size + 1, dtype=np.float64)
  np.cumsum(w[::-1], out=pro_sum[1:])
  pro_sum = pro_sum[::-1]
  if fpr_limit is None or fpr_limit >= 1.0:
    cut_index = 0
  else:
    # neg[cut_index] is at or below the largest threshold whose FPR exceeds the limit (margin of
    # one extra point guards against float rounding of fpr_limit * N).
    cut_index = max(num_neg - int(np.floor(fpr_limit * num_neg)) - 2, 0)
  t_cut = neg[cut_index]
  # Candidate thresholds: every score >= t_cut, sorted ascending (~ fpr_limit * N + P values).
  cand = np.concatenate((neg[cut_index:], pos[np.searchsorted(pos, t_cut, side="left"):]))
  cand.sort()
  last = None  # the previous (smaller-index-in-descending-order) threshold, to drop ties
  for hi in range(cand.size, 0, -_CHUNK):
    t = cand[max(hi - _CHUNK, 0):hi][::-1]  # descending
    distinct = np.empty(t.size, dtype=bool)
    distinct[0] = last is None or t[0] != last
    np.not_equal(t[1:], t[:-1], out=distinct[1:])
    last = t[-1]
    t = t[distinct]  # one point per distinct score (the MVTec code keeps the last of a tie)
    if t.size == 0:
      continue
    fpr = (num_neg - np.searchsorted(neg, t, side="left")) / num_neg
    pro = pro_sum[np.searchsorted(pos, t, side="left")] / data.num_regions
    np.minimum(fpr, 1.0, out=fpr)
    np.minimum(pro, 1.0, out=pro)
    yield fpr, pro
    if fpr_limit is not None and fpr[-1] > fpr_limit:
      return
  yield np.ones(1), np.ones(1)


def _check_fpr_limit(fpr_limit: float) -> float:
  if not (isinstance(fpr_limit, (int, float, np.floating)) and 0.0 < float(fpr_limit) <= 1.0):
    raise ValueError(f"fpr_limit must be a number in (0, 1], got {fpr_limit!r}")
  return float(fpr_limit)


def _split_for_pro(masks, maps, what: str) -> _Sorted:
  masks, maps = _check_pixel_level(masks, maps)
  return _split_pixel_level(masks, maps, regions=True, what=what)


def pro_curve(masks, maps, fpr_limit: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Per-region-overlap curve: (false-positive rate, mean region overlap) per threshold.

  Ground-truth regions are the 8-connected components of each mask; over all images, for a
  threshold ``t``: ``FPR(t) = #{normal pixels >= t} / #normal pixels`` and
  ``PRO(t) = mean_k |{x in C_k : score(x) >= t}| / |C_k|``. One point per distinct score (the last
  of tied scores), descending threshold, with ``(0, 0)`` prepended.

  Args:
    masks: ``[B,H,W]`` ground-truth masks in ``{0, 1}``; at least one region and one normal pixel.
    maps: ``[B,H,W]`` finite anomaly maps.
    fpr_limit: ``None`` for the whole curve (ending at ``(1, 1)`` as in the MVTec code), or a
      value in ``(0, 1]``: stop at the first point whose FPR exceeds it (bounded memory).

  Returns:
    ``(fpr, pro)``, float64 arrays of equal length, FPR non-decreasing, both in ``[0, 1]``.

  References:
    Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV 2021, Sec. 5.1 and the official
    evaluation code (``compute_pro``).
  """
  if fpr_limit is not None:
    fpr_limit = _check_fpr_limit(fpr_limit)
  data = _split_for_pro(masks, maps, "pro_curve")
  fprs, pros = [np.zeros(1)], [np.zeros(1)]
  for f, p in _pro_chunks(data, fpr_limit):
    fprs.append(f)
    pros.append(p)
  return np.concatenate(fprs), np.concatenate(pros)


def _aupro_from_sorted(data: _Sorted, fpr_limit: float) -> float:
  """Streams the PRO curve through the MVTec ``trapezoid(x, y, x_max)`` rule."""
  area = 0.0
  prev_x, prev_y = 0.0, 0.0
  for f, p in _pro_chunks(data, fpr_limit):
    x = np.concatenate(([prev_x], f))
    y = np.concatenate(([prev_y], p))
    over = np.flatnonzero(x > fpr_limit)
    if over.size:
      i = int(over[0])  # x[i-1] <= fpr_limit < x[i]
      area += float(np.sum(0.5 * (y[1:i] + y[:i - 1]) * (x[1:i] - x[:i - 1])))
      if x[i - 1] != fpr_limit:  # MVTec: `if x_max not in x`, linear interpolation at x_max
        y_interp = y[i - 1] + (y[i] - y[i - 1]) * (fpr_limit - x[i - 1]) / (x[i] - x[i - 1])
        area += 0.5 * (y_interp + y[i - 1]) * (fpr_limit - x[i - 1])
      return area / fpr_limit
    area += float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])))
    prev_x, prev_y = float(x[-1]), float(y[-1])
  return area / fpr_limit


def aupro(masks, maps, fpr_limit: float = 0.3) -> float:
  """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AD's AUPRO).

  Args:
    masks: ``[B,H,W]`` ground-truth masks in ``{0, 1}``; normal images (all-zero masks) contribute
      only normal pixels; at least one anomalous region is required.
    maps: ``[B,H,W]`` finite anomaly maps.
    fpr_limit: integration limit in ``(0, 1]`` (0.3 in the MVTec AD papers).

  Returns:
    ``integral_0^limit PRO d(FPR) / limit`` in ``[0, 1]`` (trapezoids, linear interpolation at the
    limit), exactly as the MVTec AD evaluation code computes it.

  References:
    Bergmann et al., IJCV 2021, Sec. 5.1; MVTec AD evaluation code (``compute_pro``, ``trapezoid``).
  """
  fpr_limit = _check_fpr_limit(fpr_limit)
  return _aupro_from_sorted(_split_for_pro(masks, maps, "aupro"), fpr_limit)


# ----------------------------------------------------------------------------
# Everything at once
# ----------------------------------------------------------------------------


def evaluate(labels, scores, masks=None, maps=None, *,
             fpr_limit: float = 0.3) -> dict[str, float | int]:
  """All image- and pixel-level metrics of one test set.

  Args:
    labels: ``[N]`` image labels in ``{0, 1}`` (1 = anomalous); both classes must occur.
    scores: ``[N]`` finite image anomaly scores.
    masks: optional ``[N,H,W]`` ground-truth masks in ``{0, 1}`` (give with ``maps``).
    maps: optional ``[N,H,W]`` finite anomaly maps at mask resolution.
    fpr_limit: AUPRO integration limit in ``(0, 1]``.

  Returns:
    ``{"image_auroc", "image_ap", "image_f1_max"}`` and, with masks/maps, also
    ``{"pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"}``; plain Python floats in ``[0, 1]``.
    ``pixel_auroc`` pools all pixels of all images (MVTec AD's protocol);
    ``pixel_auroc_per_image`` is the mean of the per-image pixel AUROCs over the
    ``pixel_auroc_images`` images with both classes (RAMFAE's protocol; images without defect
    pixels are excluded, see :func:`pixel_auroc_per_image`), absent when no image has both.
    The pixel maps are split and sorted once and shared by the four pixel metrics.

  References:
    See :func:`auroc`, :func:`average_precision`, :func:`f1_max`, :func:`aupro`.
  """
  labels, scores = _check_image_level(labels, scores)
  stats = _binary_stats(_split_image_level(labels, scores, "evaluate (image level)"))
  out = {"image_auroc": stats["auroc"], "image_ap": stats["ap"], "image_f1_max": stats["f1_max"]}
  if (masks is None) != (maps is None):
    raise ValueError("evaluate: give both masks and maps for pixel metrics, or neither "
                     f"(got masks={'None' if masks is None else 'array'}, "
                     f"maps={'None' if maps is None else 'array'})")
  if masks is not None:
    fpr_limit = _check_fpr_limit(fpr_limit)
    masks, maps = _check_pixel_level(masks, maps)
    if masks.shape[0] != labels.shape[0]:
      raise ValueError(f"masks/maps must have one entry per image: labels has {labels.shape[0]}, "
                       f"masks has shape {masks.shape}")
    data = _split_pixel_level(masks, maps, regions=True, what="evaluate (pixel level)")
    px = _binary_stats(data)
    out.update({"pixel_auroc": px["auroc"], "pixel_ap": px["ap"], "pixel_f1_max": px["f1_max"],
                "aupro": _aupro_from_sorted(data, fpr_limit)})
    has_both = [0 < np.count_nonzero(m) < m.size for m in masks]
    if any(has_both):
      out["pixel_auroc_per_image"], out["pixel_auroc_images"] = pixel_auroc_per_image(masks, maps)
  return {k: (v if k == "pixel_auroc_images" else float(v)) for k, v in out.items()}
