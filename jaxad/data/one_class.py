"""One-class protocols on MNIST and Fashion-MNIST (IDX files).

Protocol (RAMFAE, Sec. 4.1: "The training data consists of 80% normal data, and
the test data consists of the remaining 20% normal data and 10-50% abnormal
data randomly selected from other categories"):

* the pool is every IDX image/label pair found in ``root`` (e.g. ``train10k-*``
  and ``t10k-*``; ``train-*`` and ``t10k-*``), in file-name order;
* class ``normal_class`` is normal: its pool images are permuted with ``seed``;
  the first ``round(train_fraction * n)`` train, the rest are test normals;
* ``anomaly_ratio`` = share of anomalies in the test set (paper: 10-50%, default
  0.5): ``round(ratio / (1 - ratio) * n_test_normal)`` images drawn uniformly
  without replacement (seeded) from the pool's other classes.
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from jaxad.data import image_io
from jaxad.data.split import ArraySplit, _permutation

__all__ = ["read_idx", "idx_pool", "one_class_mnist", "FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle_boot")
_HINT = {False: "MNIST IDX files (e.g. t10k-images-idx3-ubyte.gz from http://yann.lecun.com/exdb/mnist/)",
         True: "Fashion-MNIST IDX files: `apt-get install dataset-fashion-mnist` puts them in "
               f"{FASHION_MNIST_DIR}"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (optionally gzipped) of unsigned bytes.

  Returns:
    uint8 array of the shape stored in the header (``[N, 28, 28]`` or ``[N]``).
  """
  path = Path(path)
  return _read_idx_cached(str(path.resolve()), *_stat(path))


def _stat(path: Path) -> tuple[int, int]:
  try:
    st = path.stat()
  except FileNotFoundError:
    raise FileNotFoundError(f"IDX file not found: {path}") from None
  return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=16)
def _read_idx_cached(path: str, size: int, mtime: int) -> np.ndarray:
  del size, mtime  # cache key only
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f"cannot read IDX file {path}: {e}") from e
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()})")
  ndim = data[3]
  dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  offset = 4 + 4 * ndim
  expected = int(np.prod(dims))
  if len(data) - offset != expected:
    raise ValueError(f"{path}: header says {dims} ({expected} bytes) but holds {len(data) - offset}")
  arr = np.frombuffer(data, np.uint8, offset=offset).reshape(dims)
  arr.flags.writeable = False
  return arr


def idx_pool(root: str | os.PathLike, *, fashion: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Concatenates every ``<prefix>-images-idx3-ubyte[.gz]`` + labels pair in ``root``.

  Returns:
    ``(images uint8 [N,28,28], labels uint8 [N], ids)`` with ids ``"<prefix>/<index>"``.
  """
  root = Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"IDX folder not found: {root} (expected {_HINT[fashion]})")
  pairs = []
  for img in sorted(root.glob("*-images-idx3-ubyte*")):
    if img.suffix not in ("", ".gz"):
      continue
    prefix = img.name.split("-images-")[0]
    lab = root / img.name.replace("-images-idx3-", "-labels-idx1-")
    if not lab.is_file():
      raise FileNotFoundError(f"labels for {img} not found: expected {lab}")
    pairs.append((prefix, img, lab))
  if not pairs:
    raise FileNotFoundError(f"no IDX image files (*-images-idx3-ubyte[.gz]) in {root} "
                            f"(expected {_HINT[fashion]})")
  images, labels, ids = [], [], []
  for prefix, img, lab in pairs:
    x, y = read_idx(img), read_idx(lab)
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
      raise ValueError(f"{img} {x.shape} and {lab} {y.shape} do not match ([N,H,W] and [N])")
    images.append(x)
    labels.append(y)
    ids += [f"{prefix}/{i}" for i in range(len(y))]
  return np.concatenate(images), np.concatenate(labels), ids


def _to_split(images: np.ndarray, labels: np.ndarray, ids: list[str], class_names: Sequence[str],
              idx: np.ndarray, label: np.ndarray, size, channels: int) -> ArraySplit:
  x = images[idx]
  if size is not None and size != x.shape[1:3]:
    x = np.stack([np.asarray(Image.fromarray(im, "L").resize((size[1], size[0]), Image.BILINEAR))
                  for im in x]) if len(x) else np.zeros((0,) + size, np.uint8)
  x = x[..., None]
  if channels == 3:
    x = np.repeat(x, 3, axis=-1)
  return ArraySplit(images=image_io.to_float(x), masks=np.zeros(x.shape[:3], np.float32),
                    labels=label.astype(np.int32), names=tuple(ids[i] for i in idx),
                    defect_types=tuple("good" if l == 0 else class_names[labels[i]]
                                       for i, l in zip(idx, label)),
                    has_masks=False)


def one_class_mnist(root: str | os.PathLike | None, normal_class: int, *, train_fraction: float = 0.8,
                    anomaly_ratio: float = 0.5, seed: int = 0,
                    image_size: int | Sequence[int] | None = None, channels: int = 1,
                    fashion: bool = False) -> tuple[ArraySplit, ArraySplit]:
  """Builds the one-class (train, test) splits for one normal class.

  Args:
    root: folder with IDX files; ``None`` with ``fashion=True`` uses
      ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
    normal_class: the normal class, 0..9.
    train_fraction: share of the normal class used for training, in ``(0, 1)``.
    anomaly_ratio: share of anomalies in the test set, in ``(0, 1)``.
    seed: seed for the permutation of normals and the sampling of anomalies.
    image_size: resize target (bilinear); ``None`` keeps 28x28.
    channels: 1 (default) or 3 (replicated).
    fashion: Fashion-MNIST class names as defect types (``"sandal"``), else ``"digit_7"``.

  Returns:
    ``(train, test)`` ``ArraySplit``s; ``train`` holds only the normal class,
    ``test`` its held-out images (label 0) then the sampled anomalies (label 1).
    ``has_masks=False``.

  References:
    RAMFAE (2023), Sec. 4.1 and Table 5.
  """
  image_io.check_channels(channels)
  size = image_io.normalize_size(image_size, "image_size")
  if isinstance(normal_class, bool) or not isinstance(normal_class, (int, np.integer)) \
      or not 0 <= normal_class <= 9:
    raise ValueError(f"normal_class must be an int in 0..9, got {normal_class!r}")
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
  if not 0.0 < anomaly_ratio < 1.0:
    raise ValueError(f"anomaly_ratio must be in (0, 1), got {anomaly_ratio}")
  if root is None:
    if not fashion:
      raise ValueError("root must be the folder of the MNIST IDX files, got None")
    root = FASHION_MNIST_DIR
  images, labels, ids = idx_pool(root, fashion=fashion)
  names = FASHION_MNIST_CLASSES if fashion else tuple(f"digit_{k}" for k in range(10))
  normal = np.flatnonzero(labels == normal_class)
  other = np.flatnonzero(labels != normal_class)
  if len(normal) < 2:
    raise ValueError(f"class {normal_class} has {len(normal)} images in {root}; need at least 2")
  perm = normal[_permutation(len(normal), seed, f"normal{normal_class}")]
  n_train = int(round(train_fraction * len(normal)))
  train_idx, test_normal = np.sort(perm[:n_train]), np.sort(perm[n_train:])
  n_anom = int(round(anomaly_ratio / (1.0 - anomaly_ratio) * len(test_normal)))
  if n_anom > len(other):
    raise ValueError(f"anomaly_ratio={anomaly_ratio} needs {n_anom} anomalies but only {len(other)} exist")
  anom = np.sort(other[_permutation(len(other), seed, f"anomaly{normal_class}")[:n_anom]])
  train = _to_split(images, labels, ids, names, train_idx, np.zeros(len(train_idx)), size, channels)
  test_idx = np.concatenate([test_normal, anom])
  test_lab = np.concatenate([np.zeros(len(test_normal)), np.ones(len(anom))])
  test = _to_split(images, labels, ids, names, test_idx, test_lab, size, channels)
  return train, test
