"""Data: readers (MVTec AD, BTAD, folders, ELPV, MNIST / Fashion-MNIST), caching and batching.

Every reader returns an :class:`ArraySplit` (float32 NHWC images in [0, 1],
{0, 1} masks, int32 labels); :func:`batches` turns it into fixed-shape,
seeded, per-process batches. Importing this package pulls in numpy and Pillow
only (no JAX, no TensorFlow); the TFDS builders live in
:mod:`jaxad.data.tfds_builders`, imported on demand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jaxad.data.btad import BTAD_PRODUCTS, load_btad
from jaxad.data.elpv import load_elpv
from jaxad.data.folder import load_folder
from jaxad.data.image_io import clear_memory_cache, set_memory_cache_limit
from jaxad.data.mvtec import MVTEC_CATEGORIES, load_mvtec
from jaxad.data.one_class import FASHION_MNIST_DIR, one_class_mnist
from jaxad.data.pipeline import as_split, batches, epoch_order, num_batches, shard_batch
from jaxad.data.split import ArraySplit, concatenate, split_fraction, train_val_split

__all__ = [
    "ArraySplit", "DATASETS", "BTAD_PRODUCTS", "MVTEC_CATEGORIES", "as_split", "batches", "clear_memory_cache",
    "concatenate", "epoch_order", "load", "load_btad", "load_elpv", "load_folder", "load_mvtec",
    "num_batches", "one_class_mnist", "set_memory_cache_limit", "shard_batch", "split_fraction",
    "train_val_split",
]

DATASETS = ("mvtec", "btad", "folder", "elpv", "mnist", "fashion_mnist")


def load(dataset: str, root: str | os.PathLike | None, split: str, **kwargs: Any) -> ArraySplit:
  """Loads ``split`` of a data set by name (the entry point of ``experiments/train.py``).

  Args:
    dataset: one of ``"mvtec"``, ``"btad"``, ``"folder"``, ``"elpv"``, ``"mnist"``, ``"fashion_mnist"``.
    root: the data folder:
      ``mvtec``: folder of category folders (pass ``category=``) or one category folder;
      ``btad``: folder of product folders (pass ``product=``) or one product folder;
      ``folder``: a folder with ``train/``, ``test/normal/``, ``test/abnormal/``, ``masks/``
      (each optional; override with ``train_dir=`` etc.);
      ``elpv``: ``None`` (the installed ``elpv-dataset`` package) or a copy of its ``data`` folder;
      ``mnist`` / ``fashion_mnist``: the folder of IDX files (``None`` for the Debian
      Fashion-MNIST package).
    split: ``"train"`` or ``"test"``.
    **kwargs: passed to the reader (``image_size``, ``channels``, ``crop_size``,
      ``cache_dir``, ``category``, ``normal_class``, ``seed`` ...).

  Returns:
    The :class:`ArraySplit`.
  """
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  if dataset == "mvtec":
    if root is None:
      raise ValueError("dataset 'mvtec' needs root (the MVTec AD folder), got None")
    return load_mvtec(root, kwargs.pop("category", None), split, **kwargs)
  if dataset == "btad":
    if root is None:
      raise ValueError("dataset 'btad' needs root (the BTAD folder), got None")
    return load_btad(root, kwargs.pop("product", None), split, **kwargs)
  if dataset == "folder":
    if root is None and "train_dir" not in kwargs and "test_normal_dir" not in kwargs:
      raise ValueError("dataset 'folder' needs root or train_dir/test_*_dir, got neither")
    if root is not None:
      base = Path(root)
      if not base.is_dir():
        raise FileNotFoundError(f"folder data set not found: {base}")
      defaults = {"train_dir": base / "train", "test_normal_dir": base / "test" / "normal",
                  "test_abnormal_dir": base / "test" / "abnormal", "mask_dir": base / "masks"}
      for key, path in defaults.items():
        if key not in kwargs and path.is_dir():
          kwargs[key] = path
    return load_folder(split=split, **kwargs)
  if dataset == "elpv":
    return load_elpv(split, root=root, **kwargs)
  if "normal_class" not in kwargs:
    raise ValueError(f"dataset {dataset!r} needs normal_class=0..9")
  train, test = one_class_mnist(root, kwargs.pop("normal_class"), fashion=dataset == "fashion_mnist",
                                **kwargs)
  return train if split == "train" else test
