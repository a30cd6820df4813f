"""Tiny synthetic data sets in the MVTec AD / BTAD / folder layouts, for tests and demos.

Normal images: a smooth two-colour gradient with a filled disc ("the product")
and mild pixel noise. Defective images: the same plus one drawn defect (a
rectangle, ellipse or line in a contrasting colour, inside the disc) whose
pixels are 255 in the mask file. Everything is a pure function of ``seed``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["make_image", "write_mvtec_like", "write_btad_like", "write_folder_like"]


def make_image(rng: np.random.Generator, size: int, *, defect: bool,
               grayscale: bool = False) -> tuple[Image.Image, Image.Image]:
  """Draws one image and its mask (mode ``"L"``, 0/255; all 0 when ``defect`` is False).

  Args:
    rng: numpy generator (consumed).
    size: side in pixels (>= 16).
    defect: draw a defect.
    grayscale: return an ``"L"`` image instead of ``"RGB"``.
  """
  if size < 16:
    raise ValueError(f"size must be >= 16 pixels, got {size}")
  yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
  base = np.stack([0.3 + 0.2 * xx, 0.35 + 0.2 * yy, 0.4 + 0.1 * (xx + yy)], -1)
  img = Image.fromarray(np.uint8(np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1) * 255), "RGB")
  draw = ImageDraw.Draw(img)
  c = size / 2 + rng.uniform(-0.05, 0.05, 2) * size
  r = size * 0.3
  draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=(200, 190, 170))
  mask = Image.new("L", (size, size), 0)
  if defect:
    mdraw = ImageDraw.Draw(mask)
    kind = int(rng.integers(3))
    w, h = rng.uniform(0.08, 0.2, 2) * size
    x0, y0 = c - r / 2 + rng.uniform(0, r / 2, 2)
    box = [x0, y0, x0 + w, y0 + h]
    colour = tuple(int(v) for v in rng.integers(0, 80, 3))
    for d, fill in ((draw, colour), (mdraw, 255)):
      if kind == 0:
        d.rectangle(box, fill=fill)
      elif kind == 1:
        d.ellipse(box, fill=fill)
      else:
        d.line(box, fill=fill, width=max(2, size // 16))
  if grayscale:
    img = img.convert("L")
  return img, mask


def _rng(seed: int, *tags: int) -> np.random.Generator:
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *tags])))


def write_mvtec_like(root: str | os.PathLike, category: str = "widget", *, n_train: int = 8,
                     n_test_good: int = 3, n_test_defect: int = 3, size: int = 64, seed: int = 0,
                     defect_types: Sequence[str] = ("scratch", "hole"),
                     grayscale: bool = False) -> Path:
  """Writes ``<root>/<category>/{train/good,test/<type>,ground_truth/<type>}`` PNGs.

  Args:
    root: output folder (created).
    category: category folder name.
    n_train: normal training images.
    n_test_good: normal test images.
    n_test_defect: defective test images *per defect type* (each with ``<nnn>_mask.png``).
    size: image side in pixels.
    seed: everything is a pure function of it.
    defect_types: defect folder names.
    grayscale: write ``"L"`` PNGs (like MVTec's grid, screw, zipper).

  Returns:
    The category folder.
  """
  cat = Path(root) / category
  plan = [("train", "good", n_train, False)] + [("test", "good", n_test_good, False)] + [
      ("test", d, n_test_defect, True) for d in defect_types]
  for s, (split, defect, n, is_defect) in enumerate(plan):
    out = cat / split / defect
    out.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed, s)
    for i in range(n):
      img, mask = make_image(rng, size, defect=is_defect, grayscale=grayscale)
      img.save(out / f"{i:03d}.png")
      if is_defect:
        gt = cat / "ground_truth" / defect
        gt.mkdir(parents=True, exist_ok=True)
        mask.save(gt / f"{i:03d}_mask.png")
  return cat


def write_btad_like(root: str | os.PathLike, product: str = "01", *, n_train: int = 8,
                    n_test_ok: int = 3, n_test_ko: int = 3, size: int = 64, seed: int = 0,
                    image_ext: str = ".bmp", mask_ext: str = ".png") -> Path:
  """Writes ``<root>/<product>/{train/ok,test/ok,test/ko,ground_truth/ko}`` (BTAD layout).

  Returns:
    The product folder. Masks are ``ground_truth/ko/<stem><mask_ext>``.
  """
  prod = Path(root) / product
  plan = [("train/ok", n_train, False), ("test/ok", n_test_ok, False), ("test/ko", n_test_ko, True)]
  for s, (sub, n, is_defect) in enumerate(plan):
    out = prod / sub
    out.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed, 100 + s)
    for i in range(n):
      img, mask = make_image(rng, size, defect=is_defect)
      img.save(out / f"{i:04d}{image_ext}")
      if is_defect:
        gt = prod / "ground_truth" / "ko"
        gt.mkdir(parents=True, exist_ok=True)
        mask.save(gt / f"{i:04d}{mask_ext}")
  return prod


def write_folder_like(root: str | os.PathLike, *, n_train: int = 8, n_test_normal: int = 3,
                      n_test_abnormal: int = 3, size: int = 64, seed: int = 0,
                      defect_types: Sequence[str] | None = None) -> Path:
  """Writes ``<root>/{train,test/normal,test/abnormal[/<type>],masks[/<type>]}`` (PNG images and masks).

  Returns:
    ``root``, usable with ``jaxad.data.load("folder", root, split)``.
  """
  root = Path(root)
  subs = [""] if not defect_types else list(defect_types)
  plan = [(root / "train", n_train, False, None), (root / "test" / "normal", n_test_normal, False, None)]
  plan += [(root / "test" / "abnormal" / d, n_test_abnormal, True, root / "masks" / d) for d in subs]
  for s, (out, n, is_defect, mask_dir) in enumerate(plan):
    out.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed, 200 + s)
    for i in range(n):
      img, mask = make_image(rng, size, defect=is_defect)
      img.save(out / f"img{i:03d}.png")
      if mask_dir is not None:
        mask_dir.mkdir(parents=True, exist_ok=True)
        mask.save(mask_dir / f"img{i:03d}_mask.png")
  return root
