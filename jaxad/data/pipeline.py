"""Batching: fixed-shape, seeded, per-process numpy batches ready for a sharded ``device_put``.

Order: each epoch's permutation is a pure function of ``(seed, epoch)``
(``numpy.random.PCG64(SeedSequence([seed, epoch, tag]))``), the same in every
process. Global batch ``b`` holds rows ``order[b*batch_size:(b+1)*batch_size]``;
process ``p`` of ``P`` gets the contiguous slice ``[p*B, (p+1)*B)`` of it with
``B = batch_size // P``, so the processes' shards are disjoint, cover the
global batch, and concatenated in process order give it back (what
``jax.make_array_from_process_local_data`` expects for a batch axis sharded
over all devices in process order). Every process yields the same number of
batches, so multi-host steps stay in lock step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from jaxad.data.split import ArraySplit

__all__ = ["batches", "num_batches", "epoch_order", "shard_batch", "as_split"]

_ORDER_TAG = 0x6A617861  # "jaxa": keeps data-order streams apart from other numpy streams


def _check_int(value: Any, name: str, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def num_batches(split: ArraySplit | int, batch_size: int, *, drop_remainder: bool = True) -> int:
  """Number of (global) batches per epoch, the same in every process.

  Args:
    split: an ``ArraySplit`` or its length N.
    batch_size: global batch size (> 0).
    drop_remainder: drop the last incomplete batch (training) or pad it (evaluation).

  Returns:
    ``N // batch_size`` or ``ceil(N / batch_size)``.
  """
  n = len(split) if isinstance(split, ArraySplit) else _check_int(split, "split", 0)
  batch_size = _check_int(batch_size, "batch_size", 1)
  return n // batch_size if drop_remainder else -(-n // batch_size)


def epoch_order(n: int, *, seed: int, epoch: int = 0, shuffle: bool = True) -> np.ndarray:
  """The row order of one epoch: a permutation of ``range(n)`` from ``(seed, epoch)``."""
  n = _check_int(n, "n", 0)
  if not shuffle:
    return np.arange(n)
  seq = np.random.SeedSequence([_check_int(seed, "seed", 0), _check_int(epoch, "epoch", 0), _ORDER_TAG])
  return np.random.Generator(np.random.PCG64(seq)).permutation(n)


def batches(split: ArraySplit, batch_size: int, *, seed: int, epoch: int = 0, shuffle: bool = True,
            drop_remainder: bool = True, process_index: int = 0, process_count: int = 1,
            with_index: bool = False, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Yields one epoch of fixed-shape per-process batches.

  Args:
    split: the data.
    batch_size: *global* batch size; must be divisible by ``process_count``.
    seed: non-negative seed of the data order (same in every process).
    epoch: epoch number (>= 0); each epoch has its own permutation.
    shuffle: permute rows; ``False`` keeps the split's order (evaluation).
    drop_remainder: ``True`` drops the last incomplete global batch (training);
      ``False`` pads it with zero rows whose ``valid`` is ``False``.
    process_index: this process, ``0 <= process_index < process_count``
      (``jax.process_index()``).
    process_count: number of processes (``jax.process_count()``).
    with_index: also yield ``index [B] i64`` (row in ``split``, -1 for padding),
      e.g. to align scores with ``split.names``.
    start: index of the first global batch to yield (a run resumed mid-epoch).

  Yields:
    dicts of numpy arrays with ``B = batch_size // process_count`` rows:
    ``image [B,H,W,C] f32`` in [0,1], ``mask [B,H,W] f32`` in {0,1},
    ``label [B] i32``, ``valid [B] bool`` (and ``index`` with ``with_index``).
    Shapes are identical for every batch.

  Raises:
    ValueError: bad sizes/indices, or ``drop_remainder`` with fewer rows than ``batch_size``.
  """
  if not isinstance(split, ArraySplit):
    raise TypeError(f"split must be a jaxad.data.ArraySplit, got {type(split).__name__}")
  batch_size = _check_int(batch_size, "batch_size", 1)
  process_count = _check_int(process_count, "process_count", 1)
  process_index = _check_int(process_index, "process_index", 0)
  if process_index >= process_count:
    raise ValueError(f"process_index must be < process_count={process_count}, got {process_index}")
  if batch_size % process_count:
    raise ValueError(f"batch_size={batch_size} must be divisible by process_count={process_count}")
  n = len(split)
  if drop_remainder and n < batch_size:
    raise ValueError(f"batch_size={batch_size} is larger than the split ({n} rows) and "
                     "drop_remainder=True would yield no batch; lower batch_size or pass drop_remainder=False")
  start = _check_int(start, "start", 0)
  order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
  per_process = batch_size // process_count
  h, w, c = split.image_shape
  for b in range(start, num_batches(n, batch_size, drop_remainder=drop_remainder)):
    start = b * batch_size + process_index * per_process
    idx = order[start:min(start + per_process, (b + 1) * batch_size, n)] if start < n else order[:0]
    k = len(idx)
    if k == per_process:
      batch = {"image": split.images[idx], "mask": split.masks[idx], "label": split.labels[idx],
               "valid": np.ones(per_process, bool), "index": idx.astype(np.int64)}
    else:
      batch = _padded(split, idx, per_process, h, w, c)
    if not with_index:
      del batch["index"]
    yield batch


def _padded(split: ArraySplit, idx: np.ndarray, per_process: int, h: int, w: int,
            c: int) -> dict[str, np.ndarray]:
  k = len(idx)
  batch = {"image": np.zeros((per_process, h, w, c), np.float32),
           "mask": np.zeros((per_process, h, w), np.float32),
           "label": np.zeros(per_process, np.int32), "valid": np.zeros(per_process, bool),
           "index": np.full(per_process, -1, np.int64)}
  batch["image"][:k] = split.images[idx]
  batch["mask"][:k] = split.masks[idx]
  batch["label"][:k] = split.labels[idx]
  batch["valid"][:k] = True
  batch["index"][:k] = idx
  return batch


def as_split(data: Any) -> ArraySplit:
  """Training data as an :class:`ArraySplit` (what :func:`batches` takes).

  Args:
    data: an ``ArraySplit`` (returned as is), a float32 array ``[N, H, W, C]`` in [0, 1], or a
      dict with ``image`` (and optionally ``label``) arrays; arrays get zero masks and the
      names ``"0", "1", ...``.
  Returns:
    The :class:`ArraySplit`.
  Raises:
    ValueError / TypeError: no images, wrong rank, dtype or range (from ``ArraySplit``).
  """
  if isinstance(data, ArraySplit):
    return data
  if isinstance(data, Mapping):
    images, labels = data.get("image"), data.get("label")
  else:
    images, labels = data, None
  if images is None:
    raise ValueError("data has no images (expected an ArraySplit, an array or a dict with 'image')")
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
  n = images.shape[0]
  labels = np.zeros((n,), np.int32) if labels is None else np.asarray(labels, np.int32)
  names = tuple(str(i) for i in range(n))
  kinds = tuple("good" if int(l) == 0 else "anomalous" for l in labels) if labels.shape == (n,) \
      else ("good",) * n
  return ArraySplit(images=images, masks=np.zeros(images.shape[:3], np.float32), labels=labels,
                    names=names, defect_types=kinds, has_masks=False)


def shard_batch(batch: Mapping[str, np.ndarray], sharding: Any) -> dict[str, Any]:
  """Turns a per-process numpy batch into global ``jax.Array``s sharded by ``sharding``.

  Args:
    batch: a batch from :func:`batches` (leading axis = this process's rows).
    sharding: e.g. ``NamedSharding(mesh, PartitionSpec("data"))``; the leading
      axis of the global arrays is ``B * process_count``.

  Returns:
    dict of ``jax.Array`` (``jax.make_array_from_process_local_data``).
  """
  import jax  # Imported here: `import jaxad.data` stays free of JAX.
  out = {}
  for name, value in batch.items():
    value = np.asarray(value)
    if value.ndim == 0:
      raise ValueError(f"batch[{name!r}] must have a leading batch axis, got a scalar")
    out[name] = jax.make_array_from_process_local_data(sharding, value)
  return out
