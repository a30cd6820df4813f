"""Reader for a generic folder of your own product images.

Only ``train_dir`` (normal images) is needed for training. For testing, give
``test_normal_dir`` and/or ``test_abnormal_dir``, optionally with ``mask_dir``.
Sub-folders are searched (``recursive=True``); an abnormal image in a
sub-folder gets the sub-folder's name as defect type (else ``"anomalous"``).
The mask of ``<test_abnormal_dir>/<sub>/<stem>.<ext>`` is the first existing of
``<mask_dir>/<sub>/<stem>_mask.<ext'>``, ``<mask_dir>/<sub>/<stem>.<ext'>``,
then the same directly in ``mask_dir`` (any image extension ``ext'``).

The dispatcher ``jaxad.data.load("folder", root, split)`` uses the defaults
``root/train``, ``root/test/normal``, ``root/test/abnormal`` and ``root/masks``
(each only if it exists).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from jaxad.data import _entries, image_io
from jaxad.data.split import ArraySplit

__all__ = ["load_folder", "folder_entries"]


def _dir(value: str | os.PathLike | None, name: str) -> Path | None:
  if value is None:
    return None
  path = Path(value)
  if not path.is_dir():
    raise FileNotFoundError(f"{name} not found: {path}")
  return path


def folder_entries(*, split: str, train_dir=None, test_normal_dir=None, test_abnormal_dir=None,
                   mask_dir=None, recursive: bool = True,
                   require_masks: bool = True) -> list[_entries.Entry]:
  """Lists the files of a folder split (see module docstring for the matching rules)."""
  _entries.check_split(split)
  train = _dir(train_dir, "train_dir")
  normal = _dir(test_normal_dir, "test_normal_dir")
  abnormal = _dir(test_abnormal_dir, "test_abnormal_dir")
  masks = _dir(mask_dir, "mask_dir")
  if split == "train":
    if train is None:
      raise ValueError("split='train' needs train_dir (a folder of normal images), got None")
    files = image_io.list_images(train, recursive=recursive)
    if not files:
      raise ValueError(f"no training images in {train} (extensions {image_io.IMAGE_EXTENSIONS})")
    return [_entries.Entry(f, None, 0, "good") for f in files]
  if normal is None and abnormal is None:
    raise ValueError("split='test' needs test_normal_dir and/or test_abnormal_dir, got neither")
  entries = []
  if normal is not None:
    entries += [_entries.Entry(f, None, 0, "good") for f in image_io.list_images(normal, recursive=recursive)]
  if abnormal is not None:
    for f in image_io.list_images(abnormal, recursive=recursive):
      rel = f.relative_to(abnormal)
      defect = rel.parts[0] if len(rel.parts) > 1 else "anomalous"
      if defect == "good":
        raise ValueError(f"{f}: an abnormal image's defect sub-folder must not be called 'good'")
      mask = None
      if masks is not None:
        mask = (_entries.find_mask(masks / rel.parent, f.stem)
                or _entries.find_mask(masks, f.stem))
        if mask is None and require_masks:
          raise FileNotFoundError(f"no mask for abnormal image {f} in {masks} (expected "
                                  f"{masks / rel.parent / (f.stem + '_mask.png')} or {f.stem}.png; "
                                  "pass require_masks=False for all-zero masks)")
      entries.append(_entries.Entry(f, mask, 1, defect))
  if not entries:
    raise ValueError(f"no test images in {normal} / {abnormal}")
  return entries


def load_folder(*, train_dir: str | os.PathLike | None = None,
                test_normal_dir: str | os.PathLike | None = None,
                test_abnormal_dir: str | os.PathLike | None = None,
                mask_dir: str | os.PathLike | None = None, split: str = "train",
                image_size: int | Sequence[int] | None = 256,
                crop_size: int | Sequence[int] | None = None, channels: int = 3,
                cache_dir: str | os.PathLike | None = None, recursive: bool = True,
                require_masks: bool = True, num_workers: int | None = None) -> ArraySplit:
  """Loads a split from plain folders of images.

  Args:
    train_dir: normal training images (needed for ``split="train"``).
    test_normal_dir: normal test images.
    test_abnormal_dir: abnormal test images (sub-folders = defect types).
    mask_dir: ground-truth masks of the abnormal images (non-zero = defect).
      Without it, ``has_masks`` is ``False`` and masks are zeros.
    split: ``"train"`` or ``"test"``.
    image_size, crop_size, channels, cache_dir, num_workers: as for
      :func:`jaxad.data.load_mvtec`.
    recursive: also read sub-folders.
    require_masks: with ``mask_dir``, raise for an abnormal image without mask.

  Returns:
    ``ArraySplit``; names relative to the common parent of the given folders.
  """
  entries = folder_entries(split=split, train_dir=train_dir, test_normal_dir=test_normal_dir,
                           test_abnormal_dir=test_abnormal_dir, mask_dir=mask_dir,
                           recursive=recursive, require_masks=require_masks)
  dirs = [Path(d).resolve() for d in (train_dir, test_normal_dir, test_abnormal_dir) if d is not None]
  base = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else dirs[0].parent
  entries = [_entries.Entry(e.image.resolve(), e.mask, e.label, e.defect_type) for e in entries]
  return _entries.build_split(entries, names_root=base, image_size=image_size, crop_size=crop_size,
                              channels=channels, cache_dir=cache_dir,
                              has_masks=split == "train" or mask_dir is not None,
                              desc=f"folder/{split}", num_workers=num_workers)
