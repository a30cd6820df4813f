"""jaxad.metrics against scikit-learn, brute force and slow from-the-definition references."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label as sk_label
from sklearn.metrics import average_precision_score, roc_auc_score

from jaxad import metrics

TOL = 1e-6  # the tolerance vs scikit-learn; the implementation is exact (errors ~1e-15)


def _random_case(rng, n, ties: bool, dtype=np.float64):
  labels = rng.integers(0, 2, n)
  labels[0], labels[1] = 0, 1  # both classes
  if ties:
    scores = rng.integers(0, 4, n).astype(dtype)
  else:
    scores = rng.normal(size=n).astype(dtype) + 0.7 * labels
  return labels, scores


# ----------------------------------------------------------------------------
# AUROC / AP vs scikit-learn
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [2, 7, 100, 5000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auroc_and_ap_match_sklearn(n, ties, dtype):
  rng = np.random.default_rng(n + 10 * ties)
  labels, scores = _random_case(rng, n, ties, dtype)
  assert abs(metrics.auroc(labels, scores) - roc_auc_score(labels, scores)) < TOL
  assert abs(metrics.average_precision(labels, scores) - average_precision_score(labels, scores)) < TOL


def test_auroc_ap_all_tied_and_bool_labels():
  labels = np.array([True, False, True, False, False])
  scores = np.full(5, 0.3, np.float32)
  assert metrics.auroc(labels, scores) == pytest.approx(0.5, abs=1e-12)
  assert metrics.average_precision(labels, scores) == pytest.approx(
    average_precision_score(labels, scores), abs=TOL)
  assert metrics.auroc([0, 1], [1.0, 0.0]) == 0.0  # inverted ranking


def test_pixel_auroc_and_ap_match_sklearn_on_flattened_pixels():
  rng = np.random.default_rng(3)
  masks = (rng.random((6, 24, 20)) > 0.85).astype(np.float32)
  maps = np.round(rng.random(masks.shape) + 0.5 * masks, 2).astype(np.float32)  # many ties
  assert abs(metrics.pixel_auroc(masks, maps) - roc_auc_score(masks.ravel(), maps.ravel())) < TOL
  assert abs(metrics.pixel_average_precision(masks, maps)
             - average_precision_score(masks.ravel(), maps.ravel())) < TOL


# ----------------------------------------------------------------------------
# F1-max vs brute force
# ----------------------------------------------------------------------------


def _f1_brute(labels, scores):
  labels = np.asarray(labels).astype(bool)
  best, thresholds = -1.0, []
  for t in np.concatenate((np.unique(scores), [np.inf])):
    pred = scores >= t
    tp = np.sum(pred & labels)
    fp = np.sum(pred & ~labels)
    fn = np.sum(~pred & labels)
    f1 = 2 * tp / (2 * tp + fp + fn)
    if f1 > best + 1e-12:
      best, thresholds = f1, [t]
    elif abs(f1 - best) <= 1e-12:
      thresholds.append(t)
  return best, thresholds


@pytest.mark.parametrize("seed", range(6))
def test_f1_max_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  labels, scores = _random_case(rng, 60, ties=seed % 2 == 0)
  f1, thr = metrics.f1_max(labels, scores)
  ref, ref_thresholds = _f1_brute(labels, scores)
  assert abs(f1 - ref) < 1e-12
  assert thr in ref_thresholds and thr == max(ref_thresholds)  # highest optimal threshold
  pred = scores >= thr  # the returned threshold really achieves the F1
  tp = np.sum(pred & (labels == 1))
  assert abs(2 * tp / (pred.sum() + labels.sum()) - f1) < 1e-12


def test_pixel_f1_max_matches_brute_force():
  rng = np.random.default_rng(7)
  masks = (rng.random((3, 10, 10)) > 0.8).astype(np.uint8)
  maps = rng.integers(0, 6, masks.shape).astype(np.float32) + masks
  f1, thr = metrics.pixel_f1_max(masks, maps)
  ref, ref_thresholds = _f1_brute(masks.ravel(), maps.ravel())
  assert abs(f1 - ref) < 1e-12 and thr in ref_thresholds


# ----------------------------------------------------------------------------
# PRO / AUPRO vs a slow reference written from the definition
# ----------------------------------------------------------------------------


def _pro_reference(masks, maps):
  """Definition, one threshold at a time: regions = 8-connected components (scikit-image)."""
  regions = []
  for m, s in zip(masks, maps):
    lab = sk_label(m.astype(np.int32), connectivity=2, background=0)
    for k in range(1, lab.max() + 1):
      regions.append(s[lab == k])
  normal = maps[masks == 0]
  fpr, pro = [0.0], [0.0]
  for t in np.unique(maps)[::-1]:  # every distinct score, descending
    fpr.append(np.mean(normal >= t))
    pro.append(np.mean([np.mean(r >= t) for r in regions]))
  return np.array(fpr), np.array(pro)


def _aupro_reference(masks, maps, limit=0.3):
  fpr, pro = _pro_reference(masks, maps)
  fpr, pro = np.append(fpr, 1.0), np.append(pro, 1.0)
  inside = fpr <= limit
  x, y = fpr[inside], pro[inside]
  if x[-1] < limit:  # linear interpolation on the segment that crosses the limit
    i = np.flatnonzero(~inside)[0]
    y_lim = pro[i - 1] + (pro[i] - pro[i - 1]) * (limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
    x, y = np.append(x, limit), np.append(y, y_lim)
  return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x))) / limit


def _mvtec_compute_pro(maps, masks):
  """A straightforward port of the MVTec AD evaluation code (argsort + cumsum)."""
  fp_changes = np.zeros(maps.shape, np.uint32)
  pro_changes = np.zeros(maps.shape, np.float64)
  num_ok, num_regions = 0, 0
  for i, m in enumerate(masks):
    lab, n = ndimage.label(m, np.ones((3, 3), int))
    num_regions += n
    ok = lab == 0
    num_ok += ok.sum()
    fp_changes[i, ok] = 1
    for k in range(n):
      region = lab == k + 1
      pro_changes[i, region] = 1.0 / region.sum()
  scores = maps.ravel()
  order = np.argsort(scores)[::-1]
  scores = scores[order]
  fprs = np.cumsum(fp_changes.ravel()[order]) / num_ok
  pros = np.cumsum(pro_changes.ravel()[order]) / num_regions
  keep = np.append(np.diff(scores) != 0, True)
  fprs = np.concatenate(([0.0], np.minimum(fprs[keep], 1), [1.0]))
  pros = np.concatenate(([0.0], np.minimum(pros[keep], 1), [1.0]))
  return fprs, pros


def _masks_with_regions(rng, b=5, h=16, w=16):
  masks = np.zeros((b, h, w), np.float32)
  masks[0, 1:4, 1:4] = 1  # three regions in one image, one of them diagonal-only connected
  masks[0, 8:14, 9:11] = 1
  masks[0, 5, 5] = masks[0, 6, 6] = 1
  masks[1, 3:12, 2:15] = 1  # one big region
  masks[3, 0:2, 14:16] = 1  # region touching the border
  masks[3, 10, 3] = 1  # single pixel
  # images 2 and 4 are normal
  return masks


@pytest.mark.parametrize("quantised", [False, True])
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_matches_definition_reference(quantised, limit):
  rng = np.random.default_rng(11)
  masks = _masks_with_regions(rng)
  maps = rng.random(masks.shape) + 0.4 * masks
  if quantised:
    maps = np.round(maps * 8) / 8  # heavy ties, ~12 distinct values
  maps = maps.astype(np.float32)
  assert abs(metrics.aupro(masks, maps, fpr_limit=limit) - _aupro_reference(masks, maps, limit)) < 1e-9


def test_pro_curve_matches_definition_and_mvtec_port():
  rng = np.random.default_rng(5)
  masks = _masks_with_regions(rng)
  maps = (np.round(rng.random(masks.shape) * 20) / 20 + 0.3 * masks).astype(np.float32)
  fpr, pro = metrics.pro_curve(masks, maps)
  ref_fpr, ref_pro = _pro_reference(masks, maps)
  np.testing.assert_allclose(fpr[:-1], ref_fpr, atol=1e-12)
  np.testing.assert_allclose(pro[:-1], ref_pro, atol=1e-12)
  mv_fpr, mv_pro = _mvtec_compute_pro(maps, masks)
  np.testing.assert_allclose(fpr, mv_fpr, atol=1e-12)
  np.testing.assert_allclose(pro, mv_pro, atol=1e-12)
  assert fpr[0] == 0 and pro[0] == 0 and fpr[-1] == 1 and pro[-1] == 1
  assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
  # Truncated curve: same points, ending at the first FPR beyond the limit.
  tf, tp = metrics.pro_curve(masks, maps, fpr_limit=0.3)
  np.testing.assert_array_equal(tf, fpr[:tf.size])
  np.testing.assert_array_equal(tp, pro[:tp.size])
  assert tf[-1] > 0.3 >= tf[-2]


def test_aupro_hand_computed_cases():
  masks = np.zeros((2, 10, 10), np.float32)
  masks[0, 2:4, 2:4] = 1
  masks[0, 6:8, 6:8] = 1
  perfect = masks.copy()
  assert metrics.aupro(masks, perfect) == pytest.approx(1.0, abs=1e-12)
  assert metrics.aupro(masks, 1.0 - masks) == pytest.approx(0.0, abs=1e-12)  # inverted
  # Constant map: the curve jumps from (0, 0) to (1, 1); area of y = x up to 0.3 is 0.045.
  assert metrics.aupro(masks, np.zeros_like(masks)) == pytest.approx(0.045 / 0.3, abs=1e-12)
  # Two regions found at different thresholds, with normal pixels in between:
  # curve (0,0) -> (0,0.5) [t=1] -> (f,0.5) [t=.75] -> (f,1) [t=.5] -> (1,1), f = 40/192.
  maps = np.zeros_like(masks)
  maps[0, 2:4, 2:4] = 1.0
  maps[0, 6:8, 6:8] = 0.5
  maps[1, :4, :] = 0.75  # 40 of the 192 normal pixels
  f = 40 / 192
  assert metrics.aupro(masks, maps) == pytest.approx((0.5 * f + 1.0 * (0.3 - f)) / 0.3, abs=1e-12)


def test_aupro_uses_8_connectivity():
  masks = np.zeros((1, 10, 10), np.float32)
  masks[0, 2, 2] = masks[0, 3, 3] = 1  # diagonal neighbours: one region (size 2) with 8-connectivity
  masks[0, 7, 7] = 1  # a second region
  maps = np.zeros_like(masks)
  maps[0, 2, 2] = 1.0
  maps[0, 3, 3] = maps[0, 7, 7] = 0.5
  maps[0, 0, :] = 0.75  # 10 of 97 normal pixels
  f = 10 / 97
  pro_at_075 = (0.5 + 0.0) / 2  # 8-connectivity; 4-connectivity would give 1/3
  expected = (pro_at_075 * f + 1.0 * (0.3 - f)) / 0.3
  assert metrics.aupro(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_aupro_matches_mvtec_port_on_larger_random_set():
  rng = np.random.default_rng(2)
  masks = np.zeros((12, 48, 48), np.float32)
  for i in range(0, 12, 2):
    for _ in range(3):
      y, x, hh, ww = rng.integers(0, 40, 2).tolist() + rng.integers(2, 9, 2).tolist()
      masks[i, y:y + hh, x:x + ww] = 1
  maps = ndimage.gaussian_filter(rng.random(masks.shape) + masks, (0, 2, 2)).astype(np.float32)
  fpr, pro = _mvtec_compute_pro(maps, masks)
  # MVTec `trapezoid(fpr, pro, x_max=0.3) / 0.3`
  inside = fpr <= 0.3
  i = np.flatnonzero(~inside)[0]
  y_lim = pro[i - 1] + (pro[i] - pro[i - 1]) * (0.3 - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
  area = np.sum(0.5 * (pro[inside][1:] + pro[inside][:-1]) * np.diff(fpr[inside]))
  ref = (area + 0.5 * (y_lim + pro[i - 1]) * (0.3 - fpr[i - 1])) / 0.3
  assert abs(metrics.aupro(masks, maps) - ref) < 1e-9


# ----------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------


def test_evaluate_keys_and_consistency():
  rng = np.random.default_rng(9)
  masks = _masks_with_regions(rng)
  maps = (rng.random(masks.shape) + 0.5 * masks).astype(np.float32)
  labels = (masks.reshape(len(masks), -1).max(axis=1) > 0).astype(np.int32)
  scores = maps.reshape(len(maps), -1).max(axis=1)
  image_only = metrics.evaluate(labels, scores)
  assert set(image_only) == {"image_auroc", "image_ap", "image_f1_max"}
  out = metrics.evaluate(labels, scores, masks, maps)
  assert set(out) == {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
                      "pixel_f1_max", "aupro", "pixel_auroc_per_image", "pixel_auroc_images"}
  both = [i for i in range(len(masks)) if 0 < masks[i].sum() < masks[i].size]
  assert out.pop("pixel_auroc_images") == len(both)
  assert out["pixel_auroc_per_image"] == pytest.approx(
      np.mean([roc_auc_score(masks[i].ravel(), maps[i].ravel()) for i in both]), abs=TOL)
  assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out.values())
  assert out["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=TOL)
  assert out["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=TOL)
  assert out["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=TOL)
  assert out["pixel_f1_max"] == pytest.approx(metrics.pixel_f1_max(masks, maps)[0], abs=1e-12)
  assert out["aupro"] == pytest.approx(_aupro_reference(masks, maps), abs=1e-9)


def test_pixel_auroc_per_image_matches_sklearn_per_image():
  # RAMFAE's protocol: mean of per-image pixel AUROCs over images with both classes; images
  # without defect pixels (and fully defective masks) are excluded. Per-image separability
  # differs from pooled: each image's maps get their own offset, which only the pooled AUROC sees.
  rng = np.random.default_rng(11)
  masks = np.zeros((6, 12, 10), np.float32)
  masks[0, 2:5, 3:7] = 1
  masks[2, 6:, :4] = 1
  masks[3, 0, 0] = 1  # one defect pixel
  masks[5] = 1  # fully defective: no per-image AUROC
  maps = rng.random(masks.shape) + 0.8 * masks + np.arange(6)[:, None, None] * 0.7
  got, count = metrics.pixel_auroc_per_image(masks, maps)
  want = [roc_auc_score(masks[i].ravel(), maps[i].ravel()) for i in (0, 2, 3)]
  assert count == 3
  assert got == pytest.approx(np.mean(want), abs=TOL)
  pooled = metrics.pixel_auroc(masks, maps)
  assert abs(pooled - got) > 0.02  # the two protocols differ here
  out = metrics.evaluate([1, 0, 1, 1, 0, 1], maps.max(axis=(1, 2)), masks, maps)
  assert out["pixel_auroc_per_image"] == pytest.approx(got, abs=TOL)
  assert out["pixel_auroc_images"] == 3 and out["pixel_auroc"] == pytest.approx(pooled, abs=TOL)
  with pytest.raises(ValueError, match="both"):
    metrics.pixel_auroc_per_image(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
  # No image with both classes (only a fully defective mask): evaluate omits the per-image keys.
  full = np.zeros((2, 4, 4))
  full[1] = 1
  out = metrics.evaluate([0, 1], [0.0, 1.0], full, rng.random((2, 4, 4)))
  assert "pixel_auroc_per_image" not in out and "pixel_auroc" in out


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [metrics.auroc, metrics.average_precision, metrics.f1_max])
def test_image_level_errors(fn):
  with pytest.raises(ValueError, match="empty"):
    fn([], [])
  with pytest.raises(ValueError, match="only one class"):
    fn([1, 1, 1], [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match="only one class"):
    fn([0, 0], [0.1, 0.2])
  with pytest.raises(ValueError, match="equal length"):
    fn([0, 1, 1], [0.1, 0.2])
  with pytest.raises(ValueError, match="NaN"):
    fn([0, 1], [0.1, np.nan])
  with pytest.raises(ValueError, match="NaN"):
    fn([0, 1], [np.inf, 0.1])
  with pytest.raises(ValueError, match="only 0"):
    fn([0, 2], [0.1, 0.2])
  with pytest.raises(TypeError, match="numeric"):
    fn(["a", "b"], [0.1, 0.2])


@pytest.mark.parametrize("fn", [metrics.pixel_auroc, metrics.pixel_average_precision,
                                metrics.pixel_f1_max, metrics.aupro, metrics.pro_curve])
def test_pixel_level_errors(fn):
  masks = np.zeros((2, 4, 4), np.float32)
  masks[0, 1, 1] = 1
  maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
  with pytest.raises(ValueError, match="only one class"):
    fn(np.zeros_like(masks), maps)
  with pytest.raises(ValueError, match="only one class"):
    fn(np.ones_like(masks), maps)
  with pytest.raises(ValueError, match="equal shapes"):
    fn(masks, maps[:, :3])
  with pytest.raises(ValueError, match=r"\[B,H,W\]"):
    fn(masks[0], maps[0])
  with pytest.raises(ValueError, match="empty"):
    fn(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))
  bad = maps.copy()
  bad[1, 2, 2] = np.nan
  with pytest.raises(ValueError, match=r"maps\[1\].*NaN"):
    fn(masks, bad)
  soft = masks * 0.7
  with pytest.raises(ValueError, match="only 0"):
    fn(soft, maps)


def test_fpr_limit_and_evaluate_argument_errors():
  masks = np.zeros((2, 4, 4), np.float32)
  masks[0, 1, 1] = 1
  maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
  for bad in (0.0, -0.1, 1.5, "0.3"):
    with pytest.raises(ValueError, match="fpr_limit"):
      metrics.aupro(masks, maps, fpr_limit=bad)
  with pytest.raises(ValueError, match="both masks and maps"):
    metrics.evaluate([0, 1], [0.1, 0.2], masks=masks)
  with pytest.raises(ValueError, match="one entry per image"):
    metrics.evaluate([0, 1, 0], [0.1, 0.2, 0.3], masks, maps)


def test_metrics_import_is_light():
  code = ("import sys, jaxad.metrics; heavy = [m for m in ('jax', 'torch', 'tensorflow', 'flax') "
          "if m in sys.modules]; print(heavy)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------

_MEMORY_CODE = """
import tracemalloc
import numpy as np
from jaxad import metrics
b, h, w = {shape}
rng = np.random.default_rng(0)
masks = np.zeros((b, h, w), np.uint8)
for i in range(0, b, 2):
  masks[i, h // 4: h // 2, w // 4: w // 2] = 1
  masks[i, 3 * h // 4: 3 * h // 4 + 8, 10: 30] = 1
maps = rng.random((b, h, w), dtype=np.float32) + np.float32(0.3) * masks.astype(np.float32)
assert maps.dtype == np.float32
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
a = metrics.pixel_auroc(masks, maps)
p = metrics.aupro(masks, maps)
peak = tracemalloc.get_traced_memory()[1] - base
print(peak, maps.nbytes, a, p)
"""


def _peak_extra_bytes(shape):
  out = subprocess.run([sys.executable, "-c", textwrap.dedent(_MEMORY_CODE.format(shape=shape))],
                       capture_output=True, text=True, check=True)
  peak, map_bytes, a, p = out.stdout.split()
  return int(peak), int(map_bytes), float(a), float(p)


@pytest.mark.parametrize("shape", [(200, 256, 256)])
def test_memory_stays_bounded_on_200x256x256(shape):
  # 13.1 M pixels. An argsort-based implementation needs >= 8 B/pixel for int64 indices alone
  # plus sorted copies (the MVTec port: ~29 B/pixel); ours keeps one sorted copy of the scores
  # (4 B/pixel for float32), the candidate thresholds above the FPR limit (~0.3 x 4 B/pixel),
  # fixed-size chunks and O(#positive pixels); measured ~1.7 x the map bytes. Bound: 2 x.
  peak, map_bytes, a, p = _peak_extra_bytes(shape)
  assert peak < 2.0 * map_bytes, (peak / 2**20, map_bytes / 2**20)
  assert 0.5 < a < 1.0 and 0.0 < p < 1.0


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_processing_gives_identical_results(monkeypatch, chunk):
  # Tiny chunks exercise the chunk boundaries (ties across chunks, F1 ties, early stop at the limit).
  rng = np.random.default_rng(4)
  masks = _masks_with_regions(rng)
  maps = (np.round(rng.random(masks.shape) * 30) / 30 + 0.2 * masks).astype(np.float32)
  labels = (masks.reshape(len(masks), -1).max(axis=1) > 0).astype(np.int32)
  scores = np.round(maps.reshape(len(maps), -1).mean(axis=1), 2)
  full = metrics.evaluate(labels, scores, masks, maps)
  full_curve = metrics.pro_curve(masks, maps)
  full_f1 = metrics.pixel_f1_max(masks, maps)
  monkeypatch.setattr(metrics, "_CHUNK", chunk)
  chunked = metrics.evaluate(labels, scores, masks, maps)
  for key, value in full.items():
    assert chunked[key] == pytest.approx(value, abs=1e-12), key
  assert chunked["aupro"] == pytest.approx(_aupro_reference(masks, maps), abs=1e-9)
  assert metrics.pixel_f1_max(masks, maps) == full_f1
  fpr, pro = metrics.pro_curve(masks, maps)
  np.testing.assert_allclose(fpr, full_curve[0], atol=1e-12)
  np.testing.assert_allclose(pro, full_curve[1], atol=1e-12)


@pytest.mark.real_data
def test_real_mvtec_bottle_masks_match_references(mvtec_bottle):
  # Real defect shapes (several regions, irregular borders): pixel AUROC/AP vs sklearn and AUPRO
  # vs the MVTec-code port, with 20 good images (all-zero masks) in the set.
  from PIL import Image

  masks = []
  for path in sorted((mvtec_bottle / "ground_truth").glob("*/*_mask.png"))[::4]:
    img = Image.open(path).convert("L").resize((64, 64), Image.NEAREST)
    masks.append((np.asarray(img) > 127).astype(np.uint8))
  masks = np.stack(masks + [np.zeros((64, 64), np.uint8)] * 20)
  rng = np.random.default_rng(0)
  maps = ndimage.gaussian_filter(rng.random(masks.shape) + 0.3 * masks, (0, 2, 2)).astype(np.float32)
  assert metrics.pixel_auroc(masks, maps) == pytest.approx(
    roc_auc_score(masks.ravel(), maps.ravel()), abs=TOL)
  assert metrics.pixel_average_precision(masks, maps) == pytest.approx(
    average_precision_score(masks.ravel(), maps.ravel()), abs=TOL)
  fpr, pro = _mvtec_compute_pro(maps, masks)
  np.testing.assert_allclose(metrics.pro_curve(masks, maps), (fpr, pro), atol=1e-12)
