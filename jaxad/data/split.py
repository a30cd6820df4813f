"""`ArraySplit`: one decoded data split as numpy arrays, plus deterministic sub-splits.

Every reader in :mod:`jaxad.data` returns an :class:`ArraySplit`; the batching
pipeline (:func:`jaxad.data.batches`) consumes one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["ArraySplit", "concatenate", "split_fraction", "train_val_split"]


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit:
  """A decoded, resized and normalised data split.

  Attributes:
    images: float32 ``[N, H, W, C]`` in ``[0, 1]``, ``C`` in ``{1, 3}``.
    masks: float32 ``[N, H, W]`` in ``{0, 1}`` (1 = defective pixel); all zeros
      for normal images and where ground truth is unknown (see ``has_masks``).
    labels: int32 ``[N]``, 0 normal, 1 anomalous.
    names: ``N`` relative file paths (or ids such as ``"mnist/t10k/123"``).
    defect_types: ``N`` strings, ``"good"`` for every normal image.
    has_masks: ``True`` when ``masks`` are real pixel ground truth for every
      anomalous image (MVTec AD, BTAD, folders with masks); ``False`` when
      they are placeholders (ELPV, MNIST): pixel metrics are then meaningless.

  Raises:
    ValueError / TypeError: on inconsistent shapes, dtypes, lengths or values
      (checked in ``__post_init__``).
  """

  images: np.ndarray
  masks: np.ndarray
  labels: np.ndarray
  names: tuple[str, ...]
  defect_types: tuple[str, ...]
  has_masks: bool = True

  def __post_init__(self) -> None:
    for field, dtype in (("images", np.float32), ("masks", np.float32), ("labels", np.int32)):
      value = getattr(self, field)
      if not isinstance(value, np.ndarray):
        raise TypeError(f"ArraySplit.{field} must be a numpy array, got {type(value).__name__}")
      if value.dtype != dtype:
        raise TypeError(f"ArraySplit.{field} must have dtype {np.dtype(dtype).name}, got {value.dtype}")
    images, masks, labels = self.images, self.masks, self.labels
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(f"ArraySplit.images must have shape [N,H,W,C] with C in (1, 3), got {images.shape}")
    n, h, w, _ = images.shape
    if masks.shape != (n, h, w):
      raise ValueError(f"ArraySplit.masks must have shape {(n, h, w)} (images {images.shape}), got {masks.shape}")
    if labels.shape != (n,):
      raise ValueError(f"ArraySplit.labels must have shape {(n,)}, got {labels.shape}")
    for field in ("names", "defect_types"):
      value = getattr(self, field)
      if not isinstance(value, tuple) or not all(isinstance(s, str) for s in value):
        raise TypeError(f"ArraySplit.{field} must be a tuple of str, got {type(value).__name__}")
      if len(value) != n:
        raise ValueError(f"ArraySplit.{field} must have {n} entries (one per image), got {len(value)}")
    if n:
      if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"ArraySplit.labels must be 0 or 1, got values {np.unique(labels).tolist()}")
      lo, hi = float(images.min()), float(images.max())
      if lo < 0.0 or hi > 1.0 or not np.isfinite(lo + hi):
        raise ValueError(f"ArraySplit.images must be in [0, 1], got range [{lo}, {hi}]")
      if not np.all((masks == 0) | (masks == 1)):
        raise ValueError("ArraySplit.masks must contain only 0 and 1, got "
                         f"{np.unique(masks)[:5].tolist()}...")
      good = np.array([d == "good" for d in self.defect_types])
      if np.any(good & (labels != 0)):
        i = int(np.argmax(good & (labels != 0)))
        raise ValueError(f"ArraySplit: {self.names[i]!r} has defect type 'good' but label {labels[i]}")

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """``(H, W, C)`` of one image."""
    return tuple(self.images.shape[1:])  # type: ignore[return-value]

  def take(self, indices: Sequence[int] | np.ndarray) -> ArraySplit:
    """Returns the rows ``indices`` (any order, repeats allowed) as a new split.

    Args:
      indices: integer indices in ``[0, N)``.

    Returns:
      An :class:`ArraySplit` with ``len(indices)`` rows.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
      raise ValueError(f"indices must be in [0, {len(self)}), got range [{idx.min()}, {idx.max()}]")
    return ArraySplit(images=self.images[idx], masks=self.masks[idx], labels=self.labels[idx],
                      names=tuple(self.names[i] for i in idx),
                      defect_types=tuple(self.defect_types[i] for i in idx),
                      has_masks=self.has_masks)

  def summary(self) -> str:
    """One line: counts per defect type and the image shape."""
    counts: dict[str, int] = {}
    for d in self.defect_types:
      counts[d] = counts.get(d, 0) + 1
    parts = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    return f"{len(self)} images {self.image_shape} ({parts}); anomalous={int(self.labels.sum())}"


def concatenate(splits: Sequence[ArraySplit]) -> ArraySplit:
  """Concatenates splits of the same image shape (rows in the given order)."""
  if not splits:
    raise ValueError("concatenate needs at least one ArraySplit, got none")
  shapes = {s.image_shape for s in splits}
  if len(shapes) != 1:
    raise ValueError(f"concatenate needs splits of one image shape, got {sorted(shapes)}")
  return ArraySplit(images=np.concatenate([s.images for s in splits]),
                    masks=np.concatenate([s.masks for s in splits]),
                    labels=np.concatenate([s.labels for s in splits]),
                    names=tuple(n for s in splits for n in s.names),
                    defect_types=tuple(d for s in splits for d in s.defect_types),
                    has_masks=all(s.has_masks for s in splits))


def _permutation(n: int, seed: int, purpose: str) -> np.ndarray:
  """A permutation of ``range(n)`` that depends only on (seed, purpose)."""
  tag = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little")
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), tag]))).permutation(n)


def split_fraction(split: ArraySplit, fraction: float, *, seed: int) -> tuple[ArraySplit, ArraySplit]:
  """Splits rows at random into ``(first, rest)`` with ``round(fraction * N)`` rows first.

  Deterministic: a pure function of ``(seed, N)``; both parts keep the original
  relative row order (sorted file order), so results do not depend on how the
  permutation is consumed.

  Args:
    split: any split.
    fraction: in ``(0, 1)``; share of rows in the first part.
    seed: integer seed.

  Returns:
    ``(first, rest)``, disjoint, covering ``split``.

  References:
    DFDA-AD (Sec. 4): "80% of the normal images of each category for training, the rest for evaluation".
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"fraction must be in (0, 1), got {fraction}")
  n = len(split)
  k = int(round(fraction * n))
  if k == 0 or k == n:
    raise ValueError(f"fraction={fraction} of {n} images leaves an empty part ({k} vs {n - k})")
  perm = _permutation(n, seed, "split")
  return split.take(np.sort(perm[:k])), split.take(np.sort(perm[k:]))


def train_val_split(train: ArraySplit, val_fraction: float, *,
                    seed: int) -> tuple[ArraySplit, ArraySplit]:
  """Holds out a validation set from *training* data (never from test data).

  Args:
    train: a training split; must contain only normal images (labels 0).
    val_fraction: in ``(0, 1)``; share of images held out for validation.
    seed: integer seed.

  Returns:
    ``(train_part, val_part)``, disjoint, deterministic in ``seed``.

  Raises:
    ValueError: if ``train`` contains anomalous images (a test split was passed).
  """
  n_anomalous = int(train.labels.sum())
  if n_anomalous:
    raise ValueError("train_val_split holds validation out of training data (normal images only); "
                     f"the split passed has {n_anomalous} anomalous images: pass the train split, "
                     "never the test split")
  val, rest = split_fraction(train, val_fraction, seed=seed)
  return rest, val
