"""Reader for the MVTec AD folder layout.

Layout (official download, one folder per category)::

  <root>/<category>/train/good/*.png
  <root>/<category>/test/good/*.png
  <root>/<category>/test/<defect>/*.png
  <root>/<category>/ground_truth/<defect>/<stem>_mask.png

References:
  Bergmann et al., "MVTec AD - A Comprehensive Real-World Dataset for Unsupervised
  Anomaly Detection", CVPR 2019.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from jaxad.data import _entries, image_io
from jaxad.data.split import ArraySplit

__all__ = ["MVTEC_CATEGORIES", "load_mvtec", "mvtec_entries"]

MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
                    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper")
_HINT = ("download MVTec AD from https://www.mvtec.com/company/research/datasets/mvtec-ad, extract it "
         "and pass root=<folder holding the category folders>")


def _category_dir(root: str | os.PathLike, category: str | None) -> Path:
  root = Path(root)
  cat_dir = root if category is None else root / category
  if category is None and root.is_dir() and not (root / "train").is_dir() and not (root / "test").is_dir():
    found = sorted(p.name for p in root.iterdir() if (p / "train").is_dir())
    raise FileNotFoundError(f"{root} is not an MVTec AD category folder (no train/ or test/); "
                            f"pass category= one of {found or 'none found'} ({_HINT})")
  if not cat_dir.is_dir():
    found = sorted(p.name for p in root.iterdir() if (p / "train").is_dir()) if root.is_dir() else []
    raise FileNotFoundError(f"MVTec AD category folder not found: {cat_dir} (categories found in "
                            f"{root}: {found or 'none'}; {_HINT})")
  return cat_dir


def mvtec_entries(root: str | os.PathLike, category: str | None, split: str, *,
                  require_masks: bool = True) -> tuple[Path, list[_entries.Entry]]:
  """Lists the files of one split in sorted order (defect folder, then file name).

  Args:
    root: folder holding the category folders (or the category folder itself when
      ``category`` is ``None``).
    category: e.g. ``"bottle"``, or ``None``.
    split: ``"train"`` or ``"test"``.
    require_masks: raise when a defective test image has no mask (else: zero mask).

  Returns:
    ``(category_dir, entries)``.
  """
  _entries.check_split(split)
  cat_dir = _category_dir(root, category)
  split_dir = cat_dir / split
  _entries.require_dir(split_dir, f"MVTec AD {split} folder", _HINT)
  if split == "train":
    good = split_dir / "good"
    files = image_io.list_images(good) if good.is_dir() else []
    if not files:
      raise ValueError(f"no training images in {good} (expected normal images <category>/train/good/*.png)")
    return cat_dir, [_entries.Entry(f, None, 0, "good") for f in files]
  entries = []
  for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
    defect = defect_dir.name
    for f in image_io.list_images(defect_dir):
      if defect == "good":
        entries.append(_entries.Entry(f, None, 0, "good"))
        continue
      mask = _entries.find_mask(cat_dir / "ground_truth" / defect, f.stem)
      if mask is None and require_masks:
        raise FileNotFoundError(
            f"no mask for defective image {f}: expected {cat_dir / 'ground_truth' / defect / (f.stem + '_mask.png')} "
            "(pass require_masks=False to use an all-zero mask)")
      entries.append(_entries.Entry(f, mask, 1, defect))
  if not entries:
    raise ValueError(f"no test images in {split_dir} (expected test/good/*.png and test/<defect>/*.png)")
  return cat_dir, entries


def load_mvtec(root: str | os.PathLike, category: str | None = None, split: str = "train", *,
               image_size: int | Sequence[int] | None = 256,
               crop_size: int | Sequence[int] | None = None, channels: int = 3,
               cache_dir: str | os.PathLike | None = None, require_masks: bool = True,
               num_workers: int | None = None) -> ArraySplit:
  """Loads one MVTec AD category split as an :class:`~jaxad.data.ArraySplit`.

  Args:
    root: folder holding the category folders (or the category folder itself
      when ``category`` is ``None``).
    category: e.g. ``"bottle"``; ``None`` when ``root`` is the category folder.
    split: ``"train"`` (normal images only) or ``"test"`` (good + defects, with masks).
    image_size: resize target ``s`` or ``(h, w)`` (bilinear, antialiased; masks
      nearest); ``None`` keeps the native size.
    crop_size: optional centre crop after resizing (SMCC / DFDA-AD: 256 -> 224).
    channels: 3 (RGB; grayscale categories are replicated) or 1.
    cache_dir: optional folder for ``.npz`` caches of the decoded arrays.
    require_masks: raise ``FileNotFoundError`` for a defective image without mask.
    num_workers: decoding threads.

  Returns:
    ``ArraySplit``: images float32 ``[N,H,W,C]`` in [0,1], masks ``{0,1}``,
    labels 0 for ``good`` and 1 otherwise, names relative to the category folder
    (e.g. ``"test/broken_large/000.png"``), sorted by defect folder then file.
  """
  cat_dir, entries = mvtec_entries(root, category, split, require_masks=require_masks)
  return _entries.build_split(entries, names_root=cat_dir, image_size=image_size, crop_size=crop_size,
                              channels=channels, cache_dir=cache_dir, has_masks=True,
                              desc=f"mvtec/{cat_dir.name}/{split}", num_workers=num_workers)
