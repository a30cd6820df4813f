"""Turns a list of (image file, mask file, label, defect type) into an ArraySplit (for every reader)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxad.data import image_io
from jaxad.data.split import ArraySplit


@dataclasses.dataclass(frozen=True)
class Entry:
  """One image of a split before decoding."""
  image: Path
  mask: Path | None
  label: int
  defect_type: str


def build_split(entries: Sequence[Entry], *, names_root: Path, image_size: int | Sequence[int] | None,
                crop_size: int | Sequence[int] | None, channels: int,
                cache_dir: str | os.PathLike | None, has_masks: bool, desc: str,
                num_workers: int | None = None) -> ArraySplit:
  """Decodes ``entries`` (through the caches) into an :class:`ArraySplit`."""
  images, masks = image_io.load_arrays([e.image for e in entries], [e.mask for e in entries],
                                       image_size=image_size, crop_size=crop_size,
                                       channels=channels, cache_dir=cache_dir,
                                       num_workers=num_workers, desc=desc)
  names = []
  for e in entries:
    try:
      names.append(e.image.relative_to(names_root).as_posix())
    except ValueError:
      names.append(e.image.as_posix())
  return ArraySplit(images=image_io.to_float(images), masks=masks.astype(np.float32),
                    labels=np.array([e.label for e in entries], np.int32).reshape(-1),
                    names=tuple(names), defect_types=tuple(e.defect_type for e in entries),
                    has_masks=has_masks)


def check_split(split: str, allowed: Sequence[str] = ("train", "test")) -> None:
  if split not in allowed:
    raise ValueError(f"split must be one of {tuple(allowed)}, got {split!r}")


def require_dir(path: Path, what: str, hint: str) -> None:
  if not path.is_dir():
    raise FileNotFoundError(f"{what} not found: {path} ({hint})")


def find_mask(mask_dir: Path, stem: str, suffixes: Sequence[str] = ("_mask", "")) -> Path | None:
  """The first ``<mask_dir>/<stem><suffix><ext>`` that exists, for any image extension."""
  for suffix in suffixes:
    for ext in image_io.IMAGE_EXTENSIONS:
      for e in (ext, ext.upper()):
        candidate = mask_dir / f"{stem}{suffix}{e}"
        if candidate.is_file():
          return candidate
  return None
