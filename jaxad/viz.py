"""Heatmap overlays and result panels written as PNG (NumPy + Pillow, no matplotlib).

Images are float NHWC in ``[0, 1]`` (grayscale ``C == 1`` is shown as RGB); maps
are ``[N,H,W]``. Everything runs on the host.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["jet", "heatmap_overlay", "make_panels", "save_panels"]

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


def make_panels(images, maps, *, reconstructions=None, masks=None, max_rows: int = 8,
                vmin: float | None = None, vmax: float | None = None, gap: int = 2) -> np.ndarray:
  """Builds one RGB grid: a row per sample, columns input | reconstruction | residual | heatmap | gt.

  Args:
    images: ``[N,H,W,C]`` float in ``[0, 1]``, ``C`` in {1, 3}.
    maps: ``[N,H,W]`` finite anomaly maps; shown as a jet overlay after scaling ``[vmin, vmax]`` to
      ``[0, 1]`` (defaults: min/max of the shown maps; pass the test-set range to compare panels).
    reconstructions: optional ``[N,H,W,C]`` in ``[0, 1]``; adds the reconstruction column and the
      residual column ``mean_c |x - x_hat|`` (gray, clipped to ``[0, 1]``).
    masks: optional ``[N,H,W]`` ground truth in ``[0, 1]`` (gray column).
    max_rows: at most this many samples (the first ones).
    vmin, vmax: heatmap display range.
    gap: white separator width in pixels.

  Returns:
    ``[rows*H + (rows-1)*gap, cols*W + (cols-1)*gap, 3]`` float32 in ``[0, 1]``.
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
  cols = [rgb]
  if reconstructions is not None:
    rec = np.asarray(reconstructions, dtype=np.float32)
    if rec.shape[1:] != images.shape[1:] or rec.shape[0] < n:
      raise ValueError(f"reconstructions must have shape {images.shape[1:]} per sample like images, "
                       f"got {rec.shape}")
    rec = rec[:n]
    _check_unit(rec, "reconstructions")
    residual = np.clip(np.abs(images - rec).mean(axis=-1, keepdims=True), 0.0, 1.0)
    cols += [_to_rgb(rec, "reconstructions"), np.repeat(residual, 3, axis=-1)]
  cols.append(heatmap_overlay(images, np.clip(heat, 0.0, 1.0)))
  if masks is not None:
    gt = np.asarray(masks, dtype=np.float32)
    if gt.shape[1:] != images.shape[1:3] or gt.ndim != 3 or gt.shape[0] < n:
      raise ValueError(f"masks must be [N,H,W] with H,W = {images.shape[1:3]}, got {gt.shape}")
    gt = gt[:n]
    _check_unit(gt, "masks")
    cols.append(np.repeat(gt[..., None], 3, axis=-1))
  h, w = images.shape[1:3]
  out = np.ones((n * h + (n - 1) * gap, len(cols) * w + (len(cols) - 1) * gap, 3), np.float32)
  for j, col in enumerate(cols):
    for i in range(n):
      out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = col[i]
  return out


def save_panels(path: str | os.PathLike, images, maps, *, reconstructions=None, masks=None,
                max_rows: int = 8, vmin: float | None = None, vmax: float | None = None) -> Path:
  """Writes :func:`make_panels` as one 8-bit RGB PNG (parent folders are created).

  Args:
    path: output file, should end in ``.png``.
    images, maps, reconstructions, masks, max_rows, vmin, vmax: see :func:`make_panels`.

  Returns:
    The written path.
  """
  from PIL import Image  # Imported lazily: only needed when writing files.

  path = Path(path)
  if path.suffix.lower() != ".png":
    raise ValueError(f"path must end in .png, got {path}")
  grid = make_panels(images, maps, reconstructions=reconstructions, masks=masks,
                     max_rows=max_rows, vmin=vmin, vmax=vmax)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.round(grid * 255.0).astype(np.uint8)).save(path)
  return path
