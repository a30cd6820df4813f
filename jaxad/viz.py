"""Heatmap overlays and result panels written as PNG (NumPy + Pillow, no matplotlib).

Images are float NHWC in ``[0, 1]`` (grayscale ``C == 1`` is shown as RGB); maps
are ``[N,H,W]``. Everything runs on the host.

A panel (:func:`make_panels`, :func:`save_panels`) has one row per image and the columns
input | reconstruction | residual | anomaly map | ground truth (those given). By default it is
annotated for a reader: a caption per row (file name, ground truth, score, the decision against
the threshold), column headings, an optional title and one colour bar for the single colour
scale that every row's anomaly map uses. :func:`select_examples` picks rows of both classes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["jet", "heatmap_overlay", "select_examples", "make_panels", "save_panels"]

# matplotlib's "jet" segment data (x, value) per channel (matplotlib/_cm.py, `_jet_data`).
_JET = {
  "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
  "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
  "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


def jet(x) -> np.ndarray:
  """The jet colormap (dark blue -> cyan -> yellow -> dark red), piecewise linear.

  Args:
    x: array of any shape; values are clipped to ``[0, 1]``.

  Returns:
    ``x.shape + (3,)`` float32 RGB in ``[0, 1]``; matplotlib's ``cm.jet`` without its 256-entry
    quantisation (difference <= 1/255 * slope).
  """
  x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
  chans = []
  for name in ("red", "green", "blue"):
    xp, fp = zip(*_JET[name])
    chans.append(np.interp(x, xp, fp))
  return np.stack(chans, axis=-1).astype(np.float32)


def _to_rgb(images: np.ndarray, name: str) -> np.ndarray:
  if images.shape[-1] == 1:
    return np.repeat(images, 3, axis=-1)
  if images.shape[-1] != 3:
    raise ValueError(f"{name} must have 1 or 3 channels (NHWC), got shape {images.shape}")
  return images


def _check_unit(x: np.ndarray, name: str) -> None:
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contains NaN/inf")
  if x.min() < -1e-6 or x.max() > 1 + 1e-6:
    raise ValueError(f"{name} must be in [0, 1], got range [{x.min():.4g}, {x.max():.4g}]")


def heatmap_overlay(image, heat, alpha: float = 0.7) -> np.ndarray:
  """Blends a jet-coloured heatmap over an image: ``alpha * jet(heat) + (1 - alpha) * image``.

  Args:
    image: ``[H,W,C]`` or ``[N,H,W,C]`` float in ``[0, 1]``, ``C`` in {1, 3}.
    heat: ``[H,W]`` or ``[N,H,W]`` finite map, already normalised to ``[0, 1]`` (values outside are
      clipped; use ``jaxad.maps.minmax_normalize`` over the test set first).
    alpha: heatmap weight in ``[0, 1]`` (0.7 in the papers' figures).

  Returns:
    RGB float32 ``[..., H, W, 3]`` in ``[0, 1]``.

  References:
    The 0.7 x heatmap + 0.3 x image overlays of SCGAN / RAMFAE / SMCC figures.
  """
  image = np.asarray(image, dtype=np.float32)
  heat = np.asarray(heat, dtype=np.float32)
  if image.ndim not in (3, 4) or heat.shape != image.shape[:-1]:
    raise ValueError(f"image must be [H,W,C] or [N,H,W,C] and heat its [..,H,W]; got shapes "
                     f"{image.shape} and {heat.shape}")
  if not 0.0 <= float(alpha) <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  _check_unit(image, "image")
  if not np.all(np.isfinite(heat)):
    raise ValueError("heat contains NaN/inf")
  image = _to_rgb(image, "image")
  return (alpha * jet(heat) + (1.0 - alpha) * image).astype(np.float32)


def select_examples(labels, scores, n: int) -> np.ndarray:
  """Picks up to ``n`` test images for a panel: anomalous and normal ones, best to worst.

  Half of the rows (rounded up) go to anomalous images and the rest to normal images (one class
  fills in when the other has too few). Within a class the picks are spread evenly over its
  images sorted by descending score, so the panel shows the most and the least anomalous-looking
  example of each class (e.g. a missed defect and a false alarm, if there are any).

  Args:
    labels: ``[N]`` ground truth, 0 normal / 1 anomalous.
    scores: ``[N]`` finite image scores (higher = more anomalous).
    n: number of rows wanted (>= 1).

  Returns:
    ``[min(n, N)]`` int64 indices: anomalous ones by descending score, then normal ones.
  """
  labels = np.asarray(labels)
  scores = np.asarray(scores, dtype=np.float64)
  if labels.ndim != 1 or scores.shape != labels.shape:
    raise ValueError(f"labels and scores must be [N] of equal length, got shapes {labels.shape} "
                     f"and {scores.shape}")
  if not np.all(np.isin(labels, (0, 1))):
    raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), got values {np.unique(labels)}")
  if not np.all(np.isfinite(scores)):
    raise ValueError("scores contains NaN/inf")
  if not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n must be an int >= 1, got {n!r}")
  anomalous, normal = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
  n = min(int(n), labels.size)
  n_anomalous = min(anomalous.size, (n + 1) // 2)
  n_normal = min(normal.size, n - n_anomalous)
  n_anomalous = min(anomalous.size, n - n_normal)

  def spread(idx: np.ndarray, k: int) -> np.ndarray:
    ranked = idx[np.argsort(-scores[idx], kind="stable")]
    return ranked[np.round(np.linspace(0, ranked.size - 1, k)).astype(np.int64)] if k else ranked[:0]

  return np.concatenate([spread(anomalous, n_anomalous), spread(normal, n_normal)]).astype(np.int64)


# Text colours (RGB in [0, 1]) of the annotations.
_INK = (0.1, 0.1, 0.1)
_RIGHT = (0.0, 0.45, 0.0)
_WRONG = (0.8, 0.0, 0.0)


def _font(size: int):
  from PIL import ImageFont  # Imported lazily: only needed for annotated panels.

  try:
    return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: scalable
  except (TypeError, ImportError, OSError):  # pragma: no cover - older or FreeType-less Pillow
    return ImageFont.load_default()


def _text_width(font, text: str) -> int:
  left, _, right, _ = font.getbbox(text)
  return int(np.ceil(right - min(left, 0)))


def _draw_text(canvas: np.ndarray, top: int, left: int, text: str, font, color) -> None:
  """Blends ``text`` into the float RGB ``canvas`` (antialiased, clipped at the canvas edge)."""
  from PIL import Image, ImageDraw

  hgt, wid = canvas.shape[:2]
  box_w, box_h = min(_text_width(font, text) + 2, wid - left), min(int(font.size * 1.4) + 2, hgt - top)
  if box_w <= 0 or box_h <= 0:
    return
  layer = Image.new("L", (box_w, box_h), 0)
  ImageDraw.Draw(layer).text((0, 0), text, fill=255, font=font)
  alpha = np.asarray(layer, dtype=np.float32)[..., None] / 255.0
  region = canvas[top:top + box_h, left:left + box_w]
  region[...] = region * (1.0 - alpha) + np.asarray(color, np.float32) * alpha


def _shorten(text: str, max_chars: int) -> str:
  return text if len(text) <= max_chars else "..." + text[-(max_chars - 3):]


def _fmt_value(x: float) -> str:
  return f"{x:.4g}"


def make_panels(images, maps, *, reconstructions=None, masks=None, names=None, labels=None,
                scores=None, threshold: float | None = None, title: str | None = None,
                annotate: bool = True, max_rows: int = 8, vmin: float | None = None,
                vmax: float | None = None, gap: int = 2, return_layout: bool = False):
  """Builds one RGB grid: a row per sample, columns input | reconstruction | residual | heatmap | gt.

  With ``annotate=True`` (default) the grid gets, around the image cells: a caption column on the
  left (per row: file name, ground truth, image score, and ``score >= threshold -> anomalous`` or
  ``< threshold -> normal``, green when the decision matches the ground truth and red when not),
  a heading per column, the ``title`` line on top and a colour bar at the bottom that labels the
  one heatmap colour scale ``[vmin, vmax]`` shared by all rows. ``annotate=False`` gives the bare
  image grid.

  Args:
    images: ``[N,H,W,C]`` float in ``[0, 1]``, ``C`` in {1, 3}.
    maps: ``[N,H,W]`` finite anomaly maps; shown as a jet overlay after scaling ``[vmin, vmax]`` to
      ``[0, 1]`` (defaults: min/max of the shown maps; pass the test-set range to compare panels).
    reconstructions: optional ``[N,H,W,C]`` in ``[0, 1]``; adds the reconstruction column and the
      residual column ``mean_c |x - x_hat|`` (gray, clipped to ``[0, 1]``).
    masks: optional ``[N,H,W]`` ground truth in ``[0, 1]`` (gray column).
    names: optional ``N`` file names (long ones are shortened from the left).
    labels: optional ``[N]`` ground truth, 0 normal / 1 anomalous.
    scores: optional ``[N]`` finite image scores.
    threshold: optional decision threshold on the scores (prediction ``score >= threshold``), e.g.
      the F1-max threshold of ``jaxad.metrics.f1_max``.
    title: optional heading line (annotated panels only).
    annotate: add the captions, headings and colour bar.
    max_rows: at most this many samples (the first ones).
    vmin, vmax: heatmap display range.
    gap: white separator width in pixels.
    return_layout: also return where things are drawn.

  Returns:
    ``[height, width, 3]`` float32 in ``[0, 1]``; without annotations
    ``[rows*H + (rows-1)*gap, cols*W + (cols-1)*gap, 3]``. With ``return_layout=True`` a pair
    ``(grid, layout)`` where ``layout`` holds ``"cells"`` (``{(row, col): (top, left)}`` of each
    ``H x W`` image cell), ``"columns"`` (column names), ``"colorbar"`` (``(top, left, height,
    width)`` or ``None``) and ``"range"`` (``(vmin, vmax)``).
  """
  images = np.asarray(images, dtype=np.float32)
  maps = np.asarray(maps, dtype=np.float32)
  if images.ndim != 4 or images.shape[0] == 0:
    raise ValueError(f"images must be non-empty [N,H,W,C], got shape {images.shape}")
  if maps.shape != images.shape[:3]:
    raise ValueError(f"maps must be [N,H,W] = {images.shape[:3]}, got {maps.shape}")
  if not isinstance(max_rows, (int, np.integer)) or max_rows < 1:
    raise ValueError(f"max_rows must be an int >= 1, got {max_rows!r}")
  n = min(images.shape[0], int(max_rows))
  images, maps = images[:n], maps[:n]
  _check_unit(images, "images")
  if not np.all(np.isfinite(maps)):
    raise ValueError("maps contains NaN/inf")
  lo = float(maps.min()) if vmin is None else float(vmin)
  hi = float(maps.max()) if vmax is None else float(vmax)
  heat = (maps - lo) / (hi - lo) if hi > lo else np.zeros_like(maps)
  rgb = _to_rgb(images, "images")
  cols, col_names = [rgb], ["input"]
  if reconstructions is not None:
    rec = np.asarray(reconstructions, dtype=np.float32)
    if rec.shape[1:] != images.shape[1:] or rec.shape[0] < n:
      raise ValueError(f"reconstructions must have shape {images.shape[1:]} per sample like images, "
                       f"got {rec.shape}")
    rec = rec[:n]
    _check_unit(rec, "reconstructions")
    residual = np.clip(np.abs(images - rec).mean(axis=-1, keepdims=True), 0.0, 1.0)
    cols += [_to_rgb(rec, "reconstructions"), np.repeat(residual, 3, axis=-1)]
    col_names += ["recon.", "residual"]
  cols.append(heatmap_overlay(images, np.clip(heat, 0.0, 1.0)))
  col_names.append("anomaly map")
  if masks is not None:
    gt = np.asarray(masks, dtype=np.float32)
    if gt.shape[1:] != images.shape[1:3] or gt.ndim != 3 or gt.shape[0] < n:
      raise ValueError(f"masks must be [N,H,W] with H,W = {images.shape[1:3]}, got {gt.shape}")
    gt = gt[:n]
    _check_unit(gt, "masks")
    cols.append(np.repeat(gt[..., None], 3, axis=-1))
    col_names.append("gt mask")
  captions = _captions(n, names, labels, scores, threshold) if annotate else None
  h, w = images.shape[1:3]
  grid_w = len(cols) * w + (len(cols) - 1) * gap
  if not annotate:
    out = np.ones((n * h + (n - 1) * gap, grid_w, 3), np.float32)
    cells = {}
    for j, col in enumerate(cols):
      for i in range(n):
        cells[(i, j)] = (i * (h + gap), j * (w + gap))
        out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = col[i]
    layout = {"cells": cells, "columns": col_names, "colorbar": None, "range": (lo, hi)}
    return (out, layout) if return_layout else out

  font = _font(int(np.clip(round(h / 10), 10, 18)))
  line = int(font.size * 1.4) + 1
  pad = max(4, font.size // 2)
  cap_w = max(_text_width(font, t) for lines in captions for t, _ in lines) + 2 * pad
  cap_w = max(cap_w, _text_width(font, "anomalous") + 2 * pad)
  row_h = max(h, len(captions[0]) * line)
  title_h = line + pad if title else 0
  head_h = line
  bar_h = max(8, line // 2)
  foot_h = pad + bar_h + 2 + line + pad
  width = max(cap_w + grid_w, _text_width(font, title) + 2 * pad if title else 0) + pad
  height = title_h + head_h + n * row_h + (n - 1) * gap + foot_h
  out = np.ones((height, width, 3), np.float32)
  if title:
    _draw_text(out, pad // 2, pad, title, font, _INK)
  top0 = title_h + head_h
  cells = {}
  for j, (col, col_name) in enumerate(zip(cols, col_names)):
    left = cap_w + j * (w + gap)
    _draw_text(out, title_h, left + max(0, (w - _text_width(font, col_name)) // 2), col_name, font,
               _INK)
    for i in range(n):
      top = top0 + i * (row_h + gap)
      cells[(i, j)] = (top, left)
      out[top:top + h, left:left + w] = col[i]
  for i, lines in enumerate(captions):
    for k, (text, color) in enumerate(lines):
      _draw_text(out, top0 + i * (row_h + gap) + k * line, pad, text, font, color)
  # One colour bar for the one heatmap scale, under the image columns.
  bar_top, bar_left = top0 + n * row_h + (n - 1) * gap + pad, cap_w
  out[bar_top:bar_top + bar_h, bar_left:bar_left + grid_w] = jet(np.linspace(0.0, 1.0, grid_w))[None]
  ticks = [(0.0, lo), (0.5, (lo + hi) / 2), (1.0, hi)]
  for frac, value in ticks:
    text = _fmt_value(value)
    x = bar_left + int(round(frac * (grid_w - 1)))
    out[bar_top + bar_h:bar_top + bar_h + 2, max(x - 1, 0):x + 1] = _INK
    x = min(max(bar_left, x - _text_width(font, text) // 2), width - _text_width(font, text) - 1)
    _draw_text(out, bar_top + bar_h + 2, x, text, font, _INK)
  _draw_text(out, bar_top + bar_h + 2, pad, "map colour scale:", font, _INK)
  layout = {"cells": cells, "columns": col_names, "colorbar": (bar_top, bar_left, bar_h, grid_w),
            "range": (lo, hi)}
  return (out, layout) if return_layout else out


def _captions(n: int, names, labels, scores, threshold) -> list[list[tuple[str, tuple]]]:
  """Caption lines ``(text, colour)`` of each row (validated; see :func:`make_panels`)."""
  if names is not None:
    names = [str(x) for x in names]
    if len(names) < n:
      raise ValueError(f"names must have at least {n} entries (one per row), got {len(names)}")
  if labels is not None:
    labels = np.asarray(labels).reshape(-1)
    if labels.size < n or not np.all(np.isin(labels[:n], (0, 1))):
      raise ValueError(f"labels must be [N] of 0 (normal) / 1 (anomalous) with N >= {n}, got "
                       f"{labels[:n + 1]}")
  if scores is not None:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size < n or not np.all(np.isfinite(scores[:n])):
      raise ValueError(f"scores must be [N] finite values with N >= {n}, got {scores[:n + 1]}")
  if threshold is not None:
    threshold = float(threshold)
    if not np.isfinite(threshold):
      raise ValueError(f"threshold must be finite, got {threshold}")
  kind = {0: "normal", 1: "anomalous"}
  out = []
  for i in range(n):
    lines = [(_shorten(names[i], 30) if names is not None else f"#{i}", _INK),
             (f"truth: {kind[int(labels[i])]}" if labels is not None else "truth: unknown", _INK)]
    if scores is not None:
      lines.append((f"score {_fmt_value(scores[i])}", _INK))
      if threshold is not None:
        decision = int(scores[i] >= threshold)
        sign = ">=" if decision else "<"
        color = _INK if labels is None else (_RIGHT if decision == int(labels[i]) else _WRONG)
        lines.append((f"{sign} thr {_fmt_value(threshold)}: {kind[decision]}", color))
    elif threshold is not None:
      lines.append((f"thr {_fmt_value(threshold)}", _INK))
    out.append(lines)
  return out


def save_panels(path: str | os.PathLike, images, maps, *, reconstructions=None, masks=None,
                names=None, labels=None, scores=None, threshold: float | None = None,
                title: str | None = None, annotate: bool = True, max_rows: int = 8,
                vmin: float | None = None, vmax: float | None = None) -> Path:
  """Writes :func:`make_panels` as one 8-bit RGB PNG (parent folders are created).

  Args:
    path: output file, should end in ``.png``.
    images, maps, reconstructions, masks, names, labels, scores, threshold, title, annotate,
      max_rows, vmin, vmax: see :func:`make_panels`.

  Returns:
    The written path.
  """
  from PIL import Image  # Imported lazily: only needed when writing files.

  path = Path(path)
  if path.suffix.lower() != ".png":
    raise ValueError(f"path must end in .png, got {path}")
  grid = make_panels(images, maps, reconstructions=reconstructions, masks=masks, names=names,
                     labels=labels, scores=scores, threshold=threshold, title=title,
                     annotate=annotate, max_rows=max_rows, vmin=vmin, vmax=vmax)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.round(grid * 255.0).astype(np.uint8)).save(path)
  return path
