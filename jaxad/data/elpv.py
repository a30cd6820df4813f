"""ELPV: electroluminescence images of solar cells (real industrial defects, no masks).

The images and labels come from the PyPI package ``elpv-dataset`` (installed
with ``pip install 'jaxad[elpv]'``; no download at run time): 2,624 grayscale
300x300 cells (mono- and polycrystalline) with a defect probability in
``{0, 1/3, 2/3, 1}`` given by experts.

Protocol (ELPV has no official train/test split; this one is jaxad's):

* normal = probability 0 (1,508 cells); anomalous = probabilities listed in
  ``anomalous_probabilities`` (default ``(1.0,)``: 715 cells); cells with other
  probabilities are left out of both splits;
* the normal cells are permuted with ``seed``; the first
  ``round(train_fraction * n_normal)`` form ``train`` (normal only), the
  others plus every selected anomalous cell form ``test``;
* masks are unknown: all zeros and ``has_masks=False`` (image-level metrics only).

References:
  Buerhop-Lutz et al., "A Benchmark for Visual Identification of Defective Solar
  Cells in Electroluminescence Imagery", EU PVSEC 2018; Deitsch et al., "Automatic
  classification of defective photovoltaic module cells in electroluminescence
  images", Solar Energy 185 (2019).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxad.data import _entries
from jaxad.data.split import ArraySplit, _permutation

__all__ = ["ELPV_PROBABILITIES", "load_elpv", "elpv_entries", "elpv_labels", "elpv_root"]

ELPV_PROBABILITIES = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)
_HINT = "install it with `pip install 'jaxad[elpv]'` (PyPI package elpv-dataset)"


def elpv_root() -> Path:
  """The ``data`` folder of the installed ``elpv-dataset`` package (labels.csv + images/)."""
  spec = importlib.util.find_spec("elpv_dataset")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"the ELPV images are not installed: {_HINT}")
  root = Path(list(spec.submodule_search_locations)[0]) / "data"
  if not (root / "labels.csv").is_file():
    raise FileNotFoundError(f"ELPV labels not found: {root / 'labels.csv'} ({_HINT})")
  return root


def elpv_labels(root: str | os.PathLike | None = None) -> list[tuple[str, float, str]]:
  """Parses ``labels.csv``: ``(relative image path, defect probability, cell type)`` rows."""
  root = elpv_root() if root is None else Path(root)
  path = root / "labels.csv"
  if not path.is_file():
    raise FileNotFoundError(f"ELPV labels not found: {path} ({_HINT})")
  rows = []
  for lineno, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 3:
      raise ValueError(f"{path}:{lineno}: expected 'path probability type', got {line!r}")
    rows.append((parts[0], float(parts[1]), parts[2]))
  return rows


def _grade(p: float) -> int:
  """Index of the nearest of 0, 1/3, 2/3, 1 (labels.csv writes 0.333..)."""
  return int(np.argmin([abs(p - q) for q in ELPV_PROBABILITIES]))


def elpv_entries(split: str, *, root: str | os.PathLike | None = None,
                 anomalous_probabilities: Sequence[float] = (1.0,), seed: int = 0,
                 train_fraction: float = 0.8,
                 cell_type: str | None = None) -> tuple[Path, list[_entries.Entry]]:
  """Lists the cells of one split without decoding them (arguments as for :func:`load_elpv`).

  Returns:
    ``(data_root, entries)``: normal cells first, then anomalous ones, each in labels.csv order.
  """
  _entries.check_split(split)
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
  if cell_type not in (None, "mono", "poly"):
    raise ValueError(f"cell_type must be 'mono', 'poly' or None, got {cell_type!r}")
  grades = set()
  for p in anomalous_probabilities:
    g = _grade(float(p))
    if g == 0 or abs(float(p) - ELPV_PROBABILITIES[g]) > 0.02:
      raise ValueError(f"anomalous_probabilities must be among 1/3, 2/3, 1, got {p!r}")
    grades.add(g)
  if not grades:
    raise ValueError("anomalous_probabilities must name at least one grade, got none")
  data_root = elpv_root() if root is None else Path(root)
  rows = [r for r in elpv_labels(data_root) if cell_type is None or r[2] == cell_type]
  normal = [r for r in rows if _grade(r[1]) == 0]
  if len(normal) < 2:
    raise ValueError(f"ELPV at {data_root} has {len(normal)} normal cells; need at least 2")
  perm = _permutation(len(normal), seed, "elpv")
  n_train = int(round(train_fraction * len(normal)))
  if split == "train":
    chosen = [(normal[i], 0) for i in sorted(perm[:n_train])]
  else:
    chosen = [(normal[i], 0) for i in sorted(perm[n_train:])]
    chosen += [(r, 1) for r in rows if _grade(r[1]) in grades]
  entries = [_entries.Entry(data_root / r[0], None, label,
                            "good" if label == 0 else f"defect_p{ELPV_PROBABILITIES[_grade(r[1])]:.2f}")
             for r, label in chosen]
  return data_root, entries


def load_elpv(split: str = "train", *, root: str | os.PathLike | None = None,
              image_size: int | Sequence[int] | None = 256,
              crop_size: int | Sequence[int] | None = None, channels: int = 1,
              anomalous_probabilities: Sequence[float] = (1.0,), seed: int = 0,
              train_fraction: float = 0.8, cell_type: str | None = None,
              cache_dir: str | os.PathLike | None = None,
              num_workers: int | None = None) -> ArraySplit:
  """Loads the ELPV solar cells with jaxad's seeded one-class split (module docstring).

  Args:
    split: ``"train"`` (normal cells only) or ``"test"`` (held-out normals + anomalies).
    root: folder with ``labels.csv`` and ``images/``; default: the installed package.
    image_size: resize target (native 300x300); ``None`` keeps it.
    crop_size: optional centre crop after resizing.
    channels: 1 (native grayscale, default) or 3 (replicated).
    anomalous_probabilities: defect probabilities counted as anomalous, a subset
      of ``{1/3, 2/3, 1}`` (matched to the nearest grade).
    seed: seed of the normal-cell permutation.
    train_fraction: share of normal cells used for training, in ``(0, 1)``.
    cell_type: ``"mono"``, ``"poly"`` or ``None`` for both.
    cache_dir, num_workers: as for :func:`jaxad.data.load_mvtec`.

  Returns:
    ``ArraySplit`` with names ``"images/cellNNNN.png"``, defect types ``"good"`` or
    ``"defect_p0.33"`` / ``"defect_p0.67"`` / ``"defect_p1.00"``, ``has_masks=False``.
  """
  data_root, entries = elpv_entries(split, root=root, anomalous_probabilities=anomalous_probabilities,
                                    seed=seed, train_fraction=train_fraction, cell_type=cell_type)
  return _entries.build_split(entries, names_root=data_root, image_size=image_size, crop_size=crop_size,
                              channels=channels, cache_dir=cache_dir, has_masks=False,
                              desc=f"elpv/{split}", num_workers=num_workers)
