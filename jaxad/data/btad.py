"""Reader for the BTAD (beanTech Anomaly Detection) folder layout.

Layout (one folder per product, ``01``, ``02``, ``03``)::

  <root>/<product>/train/ok/*.{bmp,png}
  <root>/<product>/test/ok/*.{bmp,png}
  <root>/<product>/test/ko/*.{bmp,png}
  <root>/<product>/ground_truth/ko/<stem>.{png,bmp}

References:
  Mishra et al., "VT-ADL: A Vision Transformer Network for Image Anomaly
  Detection and Localization", ISIE 2021 (introduces BTAD).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from jaxad.data import _entries, image_io
from jaxad.data.split import ArraySplit

__all__ = ["BTAD_PRODUCTS", "load_btad", "btad_entries"]

BTAD_PRODUCTS = ("01", "02", "03")
_HINT = ("download BTAD (beanTech Anomaly Detection, e.g. from "
         "https://avires.dimi.uniud.it/papers/btad/btad.zip), extract it and pass root=<folder holding 01, 02, 03>")


def btad_entries(root: str | os.PathLike, product: str | None, split: str, *,
                 require_masks: bool = True) -> tuple[Path, list[_entries.Entry]]:
  """Lists the files of one BTAD split: ``ok`` then ``ko``, each sorted by file name.

  Returns:
    ``(product_dir, entries)``; ``ok`` images get defect type ``"good"``, ``ko`` images ``"ko"``.
  """
  _entries.check_split(split)
  root = Path(root)
  prod_dir = root if product is None else root / str(product)
  _entries.require_dir(prod_dir, "BTAD product folder", _HINT)
  split_dir = prod_dir / split
  _entries.require_dir(split_dir, f"BTAD {split} folder", _HINT)
  if split == "train":
    ok = split_dir / "ok"
    files = image_io.list_images(ok) if ok.is_dir() else []
    if not files:
      raise ValueError(f"no training images in {ok} (expected normal images <product>/train/ok/*)")
    return prod_dir, [_entries.Entry(f, None, 0, "good") for f in files]
  entries = []
  ok, ko = split_dir / "ok", split_dir / "ko"
  if ok.is_dir():
    entries += [_entries.Entry(f, None, 0, "good") for f in image_io.list_images(ok)]
  if ko.is_dir():
    for f in image_io.list_images(ko):
      mask = _entries.find_mask(prod_dir / "ground_truth" / "ko", f.stem, suffixes=("", "_mask"))
      if mask is None and require_masks:
        raise FileNotFoundError(f"no mask for defective image {f}: expected "
                                f"{prod_dir / 'ground_truth' / 'ko' / (f.stem + '.png')} "
                                "(pass require_masks=False to use an all-zero mask)")
      entries.append(_entries.Entry(f, mask, 1, "ko"))
  if not entries:
    raise ValueError(f"no test images in {split_dir} (expected test/ok/* and test/ko/*)")
  return prod_dir, entries


def load_btad(root: str | os.PathLike, product: str | None = None, split: str = "train", *,
              image_size: int | Sequence[int] | None = 256,
              crop_size: int | Sequence[int] | None = None, channels: int = 3,
              cache_dir: str | os.PathLike | None = None, require_masks: bool = True,
              num_workers: int | None = None) -> ArraySplit:
  """Loads one BTAD product split as an :class:`~jaxad.data.ArraySplit`.

  Args:
    root: folder holding the product folders (or the product folder itself when
      ``product`` is ``None``).
    product: ``"01"``, ``"02"``, ``"03"`` or ``None``.
    split, image_size, crop_size, channels, cache_dir, require_masks, num_workers:
      as for :func:`jaxad.data.load_mvtec`.

  Returns:
    ``ArraySplit`` with names relative to the product folder (``"test/ko/0000.bmp"``).
  """
  prod_dir, entries = btad_entries(root, product, split, require_masks=require_masks)
  return _entries.build_split(entries, names_root=prod_dir, image_size=image_size, crop_size=crop_size,
                              channels=channels, cache_dir=cache_dir, has_masks=True,
                              desc=f"btad/{prod_dir.name}/{split}", num_workers=num_workers)
