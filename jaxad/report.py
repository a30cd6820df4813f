"""Reports of trained methods: readable test-set panels, seed tables and a summary figure.

Shared by ``experiments/evaluate.py`` (one trained run) and ``experiments/benchmark_methods.py``
(many methods x categories x seeds):

* :func:`save_test_panels`: heatmap panels of a test set (``jaxad.viz.save_panels``) with a row per
  selected image labelled with its file name, ground truth, score and the decision at a stated
  threshold; one colour scale (the test set's map range) and its colour bar per panel; the
  reconstruction and residual columns when the method has ``reconstruct``;
* :func:`seed_table`: one metric as Markdown, a row per category and a column per method, each cell
  ``mean ± sd`` over seeds, an optional paper column beside each method and a Mean row;
* :func:`save_scatter`: a small labelled scatter plot (e.g. accuracy vs inference speed per method)
  drawn with Pillow.

Host-side NumPy and Pillow; :func:`save_test_panels` calls JAX only for ``reconstruct``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from jaxad import metrics, viz

__all__ = ["TEST_F1_RULE", "f1_threshold", "save_test_panels", "seed_table", "save_scatter"]

# How a threshold chosen on the test set itself is named in panel titles.
TEST_F1_RULE = "image F1-max on this test set"


def f1_threshold(labels: Any, scores: Any) -> float | None:
  """The image F1-max threshold of a test set, or ``None`` when only one class is present."""
  labels = np.asarray(labels)
  if not 0 < labels.sum() < labels.size:
    return None
  return metrics.f1_max(labels, np.asarray(scores))[1]


def _display(x: np.ndarray, size: int | None) -> np.ndarray:
  """``[N, H, W(, C)]`` resized (bilinear, antialiased when shrinking) so that its longer side is
  ``size`` (``None``: unchanged)."""
  if size is None or max(x.shape[1:3]) == size:
    return x
  from PIL import Image  # Imported lazily: only needed when writing files.

  scale = size / max(x.shape[1:3])
  hw = (max(1, round(x.shape[2] * scale)), max(1, round(x.shape[1] * scale)))
  planes = x if x.ndim == 4 else x[..., None]
  out = np.stack([np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(p[..., c], np.float32))
                                       .resize(hw, Image.Resampling.BILINEAR))
                            for c in range(planes.shape[-1])], axis=-1) for p in planes])
  return out if x.ndim == 4 else out[..., 0]


def save_test_panels(path: str | os.PathLike, images: np.ndarray, scores: Any, maps: np.ndarray, *,
                     labels: Any, names: Sequence[str], masks: np.ndarray | None = None,
                     title: str, threshold: float | None = None, threshold_rule: str | None = None,
                     num_panels: int = 8, method: ModuleType | None = None, config: Any = None,
                     state: Any = None, display_size: int | None = None) -> Path:
  """Heatmap panels of ``num_panels`` test images of both classes (``viz.select_examples``).

  Args:
    path: output ``.png``.
    images: ``[N, H, W, C]`` test images in [0, 1].
    scores: ``[N]`` image scores.
    maps: ``[N, H, W]`` anomaly maps; the colour scale is their range over the whole test set.
    labels: ``[N]`` ground truth (0 normal, 1 anomalous).
    names: ``N`` file names.
    masks: optional ``[N, H, W]`` ground-truth masks (a column).
    title: first part of the title, e.g. ``"ramfae on bottle, seed 0"``.
    threshold: decision threshold on ``scores``; ``None`` uses the image F1-max threshold of this
      test set (:data:`TEST_F1_RULE`).
    threshold_rule: how ``threshold`` was chosen, stated in the title.
    num_panels: rows (half anomalous, half normal).
    method, config, state: with a method that has ``reconstruct``, adds reconstruction and
      residual columns.
    display_size: draw the images (and maps, masks) with this longer side: smaller PNGs for large
      images, readable rows for small ones (``None``: their own size).

  Returns:
    The written path.
  """
  labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
  maps = np.asarray(maps, np.float32)
  order = viz.select_examples(labels, scores, num_panels)
  if threshold is None:
    threshold, threshold_rule = f1_threshold(labels, scores), TEST_F1_RULE
  recon = None
  if method is not None and hasattr(method, "reconstruct"):
    import jax  # Only for the reconstruction column.
    recon = np.asarray(jax.jit(method.reconstruct, static_argnums=0)(config, state,
                                                                      images[order]), np.float32)
    recon = np.clip(recon, 0.0, 1.0)
  if threshold is not None:
    title = f"{title}: threshold {threshold:.4g} = {threshold_rule}"
  shown = lambda x: None if x is None else _display(np.asarray(x, np.float32), display_size)
  return viz.save_panels(path, shown(images[order]), shown(maps[order]), reconstructions=shown(recon),
                         masks=None if masks is None else (shown(masks[order]) > 0.5).astype(np.float32),
                         names=[names[i] for i in order], labels=labels[order],
                         scores=scores[order], threshold=threshold, title=title,
                         max_rows=len(order), vmin=float(maps.min()), vmax=float(maps.max()))


# ----------------------------------------------------------------------------- tables


def _cell(values: Sequence[float], scale: float, decimals: int) -> str:
  if not values:
    return "–"
  mean = float(np.mean(values)) * scale
  if len(values) == 1:
    return f"{mean:.{decimals}f}"
  sd = float(np.std(values, ddof=1)) * scale
  return f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def seed_table(records: Sequence[Mapping[str, Any]], metric: str, *, methods: Sequence[str],
               categories: Sequence[str], paper: Mapping[tuple[str, str], float] | None = None,
               scale: float = 100.0, decimals: int = 1, title: str) -> str:
  """One metric as Markdown: a row per category, a column per method, ``mean ± sd`` over seeds.

  Args:
    records: dicts with ``method``, ``category`` and ``values`` (``{metric: number}``); one per
      (method, category, seed).
    metric: the key of ``values`` to show.
    methods: column order.
    categories: row order.
    paper: ``{(method, category): value}``, the papers' numbers (same unit as the records); a
      ``<method> (paper)`` column follows every method that has one for this metric.
    scale: factor applied to values and paper numbers (100 shows fractions as percent).
    decimals: digits after the decimal point.
    title: the heading line.

  Returns:
    Markdown: the title, a blank line, the table (``mean ± sd`` with the sample standard deviation
    over seeds, a plain mean for one seed, ``–`` where missing) and a **Mean** row of the per-category
    means (``*`` when a method lacks some categories).
  """
  paper = dict(paper or {})
  cols: list[tuple[str, str]] = []
  for m in methods:
    cols.append(("run", m))
    if any((m, c) in paper for c in categories):
      cols.append(("paper", m))
  vals = {(m, c): [float(r["values"][metric]) for r in records
                   if r["method"] == m and r["category"] == c and metric in r["values"]
                   and math.isfinite(float(r["values"][metric]))]
          for m in methods for c in categories}
  head = [m if kind == "run" else f"{m} (paper)" for kind, m in cols]
  lines = [title, "", "| Category | " + " | ".join(head) + " |",
           "| --- | " + " | ".join("---:" for _ in cols) + " |"]
  for c in categories:
    cells = [_cell(vals[(m, c)], scale, decimals) if kind == "run" else
             (f"{paper[(m, c)] * scale:.{decimals}f}" if (m, c) in paper else "–") for kind, m in cols]
    lines.append(f"| {c} | " + " | ".join(cells) + " |")
  if len(categories) > 1:
    means, partial = [], False
    for kind, m in cols:
      per_cat = ([float(np.mean(vals[(m, c)])) for c in categories if vals[(m, c)]] if kind == "run"
                 else [paper[(m, c)] for c in categories if (m, c) in paper])
      mark = "*" if 0 < len(per_cat) < len(categories) else ""
      partial |= bool(mark)
      means.append(f"{np.mean(per_cat) * scale:.{decimals}f}{mark}" if per_cat else "–")
    lines.append("| **Mean** | " + " | ".join(means) + " |")
    if partial:
      lines += ["", "\\* mean over the categories available for that column."]
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figure


def save_scatter(path: str | os.PathLike, panels: Sequence[Mapping[str, Any]], *,
                 title: str | None = None, size: tuple[int, int] = (420, 320)) -> Path:
  """Scatter plots side by side, one labelled point per entry, as one PNG.

  Args:
    path: output ``.png``.
    panels: one dict per plot: ``points`` (list of ``(label, x, y)`` with finite numbers),
      ``xlabel``, ``ylabel``, optional ``log_x`` (bool) and ``ylim`` (``(low, high)``).
    title: line above the plots.
    size: ``(width, height)`` of one plot in pixels.

  Returns:
    The written path.
  """
  from PIL import Image, ImageDraw

  font = viz._font(12)
  width, height = size
  top = 24 if title else 4
  canvas = Image.new("RGB", (width * len(panels), height + top), "white")
  draw = ImageDraw.Draw(canvas)
  if title:
    draw.text((8, 4), title, fill="black", font=font)
  colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
  for k, panel in enumerate(panels):
    pts = [(str(l), float(x), float(y)) for l, x, y in panel["points"]
           if math.isfinite(float(x)) and math.isfinite(float(y)) and (float(x) > 0 or not panel.get("log_x"))]
    x0, y0, x1, y1 = k * width + 56, top + 10, (k + 1) * width - 16, top + height - 44
    draw.rectangle((x0, y0, x1, y1), outline="black")
    draw.text(((x0 + x1) // 2 - draw.textlength(panel["xlabel"], font=font) // 2, y1 + 22),
              panel["xlabel"], fill="black", font=font)
    label_img = Image.new("L", (int(draw.textlength(panel["ylabel"], font=font)) + 4, 16), 0)
    ImageDraw.Draw(label_img).text((2, 1), panel["ylabel"], fill=255, font=font)
    label_img = label_img.rotate(90, expand=True)
    canvas.paste(Image.new("RGB", label_img.size, "black"),
                 (k * width + 4, (y0 + y1) // 2 - label_img.size[1] // 2), label_img)
    if not pts:
      continue
    fx = (lambda v: math.log10(v)) if panel.get("log_x") else (lambda v: v)
    xs, ys = [fx(p[1]) for p in pts], [p[2] for p in pts]
    xlo, xhi = min(xs), max(xs)
    pad = 0.1 * (xhi - xlo) if xhi > xlo else 0.5
    xlo, xhi = xlo - pad, xhi + pad
    ylo, yhi = panel.get("ylim") or (min(ys), max(ys))
    ypad = 0.1 * (yhi - ylo) if yhi > ylo else 0.05
    ylo, yhi = (ylo, yhi) if panel.get("ylim") else (ylo - ypad, yhi + ypad)
    px = lambda v: x0 + (fx(v) - xlo) / (xhi - xlo) * (x1 - x0)
    py = lambda v: y1 - (v - ylo) / (yhi - ylo) * (y1 - y0)
    for frac in (0.0, 0.5, 1.0):  # ticks: ends and middle of each axis
      yv = ylo + frac * (yhi - ylo)
      draw.line((x0 - 4, py(yv), x0, py(yv)), fill="black")
      draw.text((x0 - 6 - draw.textlength(f"{yv:.3g}", font=font), py(yv) - 7), f"{yv:.3g}",
                fill="black", font=font)
      xv = xlo + frac * (xhi - xlo)
      xt = 10 ** xv if panel.get("log_x") else xv
      xpix = x0 + frac * (x1 - x0)
      draw.line((xpix, y1, xpix, y1 + 4), fill="black")
      draw.text((xpix - draw.textlength(f"{xt:.3g}", font=font) / 2, y1 + 6), f"{xt:.3g}",
                fill="black", font=font)
    for i, (label, x, y) in enumerate(pts):
      cx, cy, col = px(x), py(min(max(y, ylo), yhi)), colours[i % len(colours)]
      draw.ellipse((cx - 4, cy - 4, cx + 4, cy + 4), fill=col, outline="black")
      tx = cx + 6 if cx + 6 + draw.textlength(label, font=font) < x1 else cx - 6 - draw.textlength(label, font=font)
      draw.text((tx, cy - 7), label, fill=col, font=font)
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  canvas.save(path)
  return path
