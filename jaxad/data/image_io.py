"""Decoding, resizing, cropping and caching of image and mask files.

Preprocessing (the same for every reader, so readers and TFDS builders agree):

1. decode with Pillow; 16-bit grayscale is rescaled to 8 bit; palette/alpha
   images are converted; ``channels=3`` turns grayscale into RGB (replicated),
   ``channels=1`` turns RGB into luma (ITU-R 601, Pillow's ``"L"``);
2. resize to ``image_size`` with Pillow's bilinear filter, which is
   antialiased when shrinking (its support widens with the scale factor);
   masks use nearest neighbour and are binarised (``> 0`` -> 1);
3. optional centre crop to ``crop_size`` (e.g. resize 256 -> crop 224 as in
   SMCC / DFDA-AD and PatchCore);
4. images are kept as uint8 in the caches and become float32 in ``[0, 1]``
   (``x / 255``) only in the returned :class:`~jaxad.data.ArraySplit`.

Caching: decoded arrays are kept in an in-memory LRU cache (limit
:func:`set_memory_cache_limit`, default 2 GiB) and, with ``cache_dir``, as an
uncompressed ``.npz`` file. The key hashes every file's absolute path, size and
modification time plus the preprocessing parameters, so changing, adding or
removing a file, or changing a parameter, misses the cache.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxad import progress as progress_lib

__all__ = [
    "IMAGE_EXTENSIONS", "list_images", "normalize_size", "decode_image", "decode_mask",
    "load_arrays", "to_float", "clear_memory_cache", "set_memory_cache_limit", "CACHE_VERSION",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CACHE_VERSION = 1

Size = tuple[int, int]


def normalize_size(value: int | Sequence[int] | None, name: str) -> Size | None:
  """Turns ``256`` or ``(h, w)`` into ``(h, w)``; ``None`` stays ``None``."""
  if value is None:
    return None
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    size = (int(value), int(value))
  elif isinstance(value, Sequence) and len(value) == 2 and all(
      isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
    size = (int(value[0]), int(value[1]))
  else:
    raise TypeError(f"{name} must be an int, an (height, width) pair or None, got {value!r}")
  if min(size) <= 0:
    raise ValueError(f"{name} must be positive, got {value!r}")
  return size


def check_channels(channels: int) -> None:
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")


def list_images(directory: Path, *, recursive: bool = False) -> list[Path]:
  """Sorted image files (by relative path) in ``directory``; hidden files skipped."""
  pattern = "**/*" if recursive else "*"
  files = [p for p in Path(directory).glob(pattern)
           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
           and not any(part.startswith(".") for part in p.relative_to(directory).parts)]
  return sorted(files, key=lambda p: p.relative_to(directory).as_posix())


def _open(path: Path) -> Image.Image:
  try:
    image = Image.open(path)
    image.load()
  except FileNotFoundError:
    raise FileNotFoundError(f"image file not found: {path}") from None
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise ValueError(f"cannot read image file {path}: {e}") from e
  return image


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
  if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit grayscale -> 8 bit
    arr = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
    image = Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8), "L")
  if image.mode != mode:
    image = image.convert(mode)
  return image


def _crop_box(size_hw: Size, crop: Size) -> tuple[int, int, int, int]:
  h, w = size_hw
  ch, cw = crop
  top, left = (h - ch) // 2, (w - cw) // 2
  return left, top, left + cw, top + ch


def _check_crop(image_size: Size | None, crop_size: Size | None, native: Size, path: Path) -> None:
  if crop_size is None:
    return
  ref = image_size or native
  if crop_size[0] > ref[0] or crop_size[1] > ref[1]:
    raise ValueError(f"crop_size {crop_size} is larger than the resized image {ref} ({path})")


def decode_image(path: str | os.PathLike, *, image_size: int | Sequence[int] | None = 256,
                 crop_size: int | Sequence[int] | None = None, channels: int = 3) -> np.ndarray:
  """Decodes, resizes (bilinear, antialiased) and centre-crops one image.

  Args:
    path: an image file (PNG, JPEG, BMP, TIFF).
    image_size: ``(h, w)`` or ``s`` for ``(s, s)`` after resizing; ``None`` keeps the size.
    crop_size: centre crop after resizing, ``None`` for none.
    channels: 3 (RGB; grayscale is replicated) or 1 (luma).

  Returns:
    uint8 ``[H, W, channels]`` in ``[0, 255]``.

  Raises:
    FileNotFoundError: the file does not exist. ValueError: it cannot be decoded.
  """
  check_channels(channels)
  size = normalize_size(image_size, "image_size")
  crop = normalize_size(crop_size, "crop_size")
  path = Path(path)
  image = _open(path)
  native = (image.height, image.width)
  _check_crop(size, crop, native, path)
  image = _to_mode(image, "RGB" if channels == 3 else "L")
  if size is not None and size != native:
    image = image.resize((size[1], size[0]), Image.BILINEAR)
  if crop is not None:
    image = image.crop(_crop_box((image.height, image.width), crop))
  arr = np.asarray(image, dtype=np.uint8)
  return arr.reshape(arr.shape[0], arr.shape[1], channels)


def decode_mask(path: str | os.PathLike, *, image_size: int | Sequence[int] | None = 256,
                crop_size: int | Sequence[int] | None = None,
                expected_native: Size | None = None) -> np.ndarray:
  """Decodes a ground-truth mask, resizes it (nearest) and binarises it.

  Args:
    path: a mask file; any non-zero pixel is defective.
    image_size, crop_size: as for :func:`decode_image`.
    expected_native: ``(h, w)`` of the matching image before resizing; a
      different mask size raises ``ValueError``.

  Returns:
    uint8 ``[H, W]`` with values in ``{0, 1}``.
  """
  size = normalize_size(image_size, "image_size")
  crop = normalize_size(crop_size, "crop_size")
  path = Path(path)
  image = _open(path)
  native = (image.height, image.width)
  if expected_native is not None and native != tuple(expected_native):
    raise ValueError(f"mask {path} has size {native[1]}x{native[0]} but its image has size "
                     f"{expected_native[1]}x{expected_native[0]} (width x height)")
  _check_crop(size, crop, native, path)
  image = _to_mode(image, "L")
  if size is not None and size != native:
    image = image.resize((size[1], size[0]), Image.NEAREST)
  if crop is not None:
    image = image.crop(_crop_box((image.height, image.width), crop))
  return (np.asarray(image) > 0).astype(np.uint8)


def _native_size(path: Path) -> Size:
  try:
    with Image.open(path) as image:
      return image.height, image.width
  except FileNotFoundError:
    raise FileNotFoundError(f"image file not found: {path}") from None
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise ValueError(f"cannot read image file {path}: {e}") from e


# ---------------------------------------------------------------------------------------------
# Caches

_MEMORY: collections.OrderedDict[str, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()
_MEMORY_LOCK = threading.Lock()
_MEMORY_LIMIT = [2 << 30]


def set_memory_cache_limit(num_bytes: int) -> None:
  """Sets the in-memory cache limit in bytes (0 disables it); evicts oldest entries."""
  if num_bytes < 0:
    raise ValueError(f"num_bytes must be >= 0, got {num_bytes}")
  _MEMORY_LIMIT[0] = int(num_bytes)
  with _MEMORY_LOCK:
    _evict()


def clear_memory_cache() -> None:
  """Empties the in-memory cache of decoded arrays."""
  with _MEMORY_LOCK:
    _MEMORY.clear()


def _evict() -> None:
  total = sum(a.nbytes + b.nbytes for a, b in _MEMORY.values())
  while _MEMORY and total > _MEMORY_LIMIT[0]:
    _, (a, b) = _MEMORY.popitem(last=False)
    total -= a.nbytes + b.nbytes


def _stat(path: Path | None) -> list | None:
  if path is None:
    return None
  try:
    st = path.stat()
  except FileNotFoundError:
    raise FileNotFoundError(f"file not found: {path}") from None
  return [str(path.absolute()), st.st_size, st.st_mtime_ns]


def cache_key(image_paths: Sequence[Path], mask_paths: Sequence[Path | None], *,
              image_size: Size | None, crop_size: Size | None, channels: int) -> str:
  """Hex digest over files (path, size, mtime) and preprocessing parameters."""
  payload = {"version": CACHE_VERSION, "images": [_stat(Path(p)) for p in image_paths],
             "masks": [_stat(None if m is None else Path(m)) for m in mask_paths],
             "image_size": image_size, "crop_size": crop_size, "channels": channels}
  return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _decode_pair(image_path: Path, mask_path: Path | None, size: Size | None, crop: Size | None,
                 channels: int) -> tuple[np.ndarray, np.ndarray | None, Size]:
  native = _native_size(image_path)
  image = decode_image(image_path, image_size=size, crop_size=crop, channels=channels)
  mask = None
  if mask_path is not None:
    mask = decode_mask(mask_path, image_size=size, crop_size=crop, expected_native=native)
  return image, mask, native


def load_arrays(image_paths: Sequence[str | os.PathLike],
                mask_paths: Sequence[str | os.PathLike | None] | None = None, *,
                image_size: int | Sequence[int] | None = 256,
                crop_size: int | Sequence[int] | None = None, channels: int = 3,
                cache_dir: str | os.PathLike | None = None, num_workers: int | None = None,
                desc: str = "decode") -> tuple[np.ndarray, np.ndarray]:
  """Decodes images (and masks) once, through the memory and ``.npz`` caches.

  Args:
    image_paths: N image files.
    mask_paths: N mask files or ``None`` entries (zero mask); ``None`` for no masks at all.
    image_size, crop_size, channels: as for :func:`decode_image`. With
      ``image_size=None`` every image must have the same native size.
    cache_dir: folder for ``.npz`` caches (created if missing), or ``None``.
    num_workers: decoding threads (Pillow releases the GIL); default ``min(4, cpu_count)``.
    desc: label for progress reporting.

  Returns:
    ``(images uint8 [N,H,W,C], masks uint8 [N,H,W] in {0,1})``, read-only arrays
    shared with the memory cache (copy before writing).

  Raises:
    FileNotFoundError / ValueError: naming the missing, unreadable or
      inconsistently sized file.
  """
  check_channels(channels)
  size = normalize_size(image_size, "image_size")
  crop = normalize_size(crop_size, "crop_size")
  images_p = [Path(p) for p in image_paths]
  masks_p = [None] * len(images_p) if mask_paths is None else [
      None if m is None else Path(m) for m in mask_paths]
  if len(masks_p) != len(images_p):
    raise ValueError(f"mask_paths must have {len(images_p)} entries (one per image), got {len(masks_p)}")
  key = cache_key(images_p, masks_p, image_size=size, crop_size=crop, channels=channels)
  with _MEMORY_LOCK:
    if key in _MEMORY:
      _MEMORY.move_to_end(key)
      return _MEMORY[key]
  npz_path = None
  if cache_dir is not None:
    npz_path = Path(cache_dir) / f"{desc.replace('/', '_')}-{key[:24]}.npz"
    if npz_path.is_file():
      try:
        with np.load(npz_path) as data:
          result = (data["images"], data["masks"])
      except (OSError, ValueError, KeyError) as e:
        progress_lib.log("ignoring unreadable cache file %s: %s", npz_path, e)
      else:
        return _remember(key, result)
  result = _decode_all(images_p, masks_p, size, crop, channels, num_workers, desc)
  if npz_path is not None:
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = npz_path.with_name(npz_path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, images=result[0], masks=result[1])
    os.replace(tmp, npz_path)
  return _remember(key, result)


def _remember(key: str, result: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  for a in result:
    a.flags.writeable = False
  with _MEMORY_LOCK:
    _MEMORY[key] = result
    _evict()
  return result


def _decode_all(images_p: list[Path], masks_p: list[Path | None], size: Size | None,
                crop: Size | None, channels: int, num_workers: int | None,
                desc: str) -> tuple[np.ndarray, np.ndarray]:
  n = len(images_p)
  if n == 0:
    h, w = crop or size or (0, 0)
    return np.zeros((0, h, w, channels), np.uint8), np.zeros((0, h, w), np.uint8)
  workers = num_workers or min(4, os.cpu_count() or 1)
  images: np.ndarray | None = None
  masks: np.ndarray | None = None
  first_native: Size | None = None
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool, \
      progress_lib.Progress(total=n, desc=desc, unit="img") as bar:
    futures = [pool.submit(_decode_pair, p, m, size, crop, channels) for p, m in zip(images_p, masks_p)]
    for i, future in enumerate(futures):
      image, mask, native = future.result()
      if images is None:
        first_native = native
        images = np.empty((n,) + image.shape, np.uint8)
        masks = np.zeros((n,) + image.shape[:2], np.uint8)
      elif image.shape != images.shape[1:]:
        raise ValueError(f"inconsistent image sizes: {images_p[i]} is {native[1]}x{native[0]} but "
                         f"{images_p[0]} is {first_native[1]}x{first_native[0]} (width x height); "
                         "pass image_size to resize them to one size")
      images[i] = image
      if mask is not None:
        masks[i] = mask
      bar.update(1)
  return images, masks


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 ``[..]`` in [0, 255] -> float32 in [0, 1] (``x / 255``)."""
  return images.astype(np.float32) / np.float32(255.0)
