"""ELPV solar cells from the PyPI package elpv-dataset (real images, no masks)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("elpv_dataset", reason="ELPV needs `pip install 'jaxad[elpv]'`")

import jaxad.data as data  # noqa: E402
from jaxad.data import elpv  # noqa: E402


def _grade_counts(rows):
  counts = {}
  for _, p, kind in rows:
    key = (round(p * 3), kind)
    counts[key] = counts.get(key, 0) + 1
  return counts


def test_elpv_class_counts_match_the_package_labels():
  import elpv_dataset  # The package's own CSV parser as the reference for the labels.
  ref = np.genfromtxt(str(elpv.elpv_root() / "labels.csv"), dtype=["|S19", "<f8", "|S4"],
                      names=["path", "probability", "type"])
  rows = elpv.elpv_labels()
  assert len(rows) == len(ref) == 2624
  np.testing.assert_allclose([r[1] for r in rows], ref["probability"])
  assert elpv_dataset is not None
  counts = _grade_counts(rows)
  per_grade = {g: counts.get((g, "mono"), 0) + counts.get((g, "poly"), 0) for g in range(4)}
  assert per_grade == {0: 1508, 1: 295, 2: 106, 3: 715}


def test_elpv_split_is_seeded_one_class_and_disjoint():
  _, train = elpv.elpv_entries("train", seed=0)
  _, test = elpv.elpv_entries("test", seed=0)
  _, test_all = elpv.elpv_entries("test", seed=0, anomalous_probabilities=(1 / 3, 2 / 3, 1.0))
  _, train_other = elpv.elpv_entries("train", seed=1)
  assert len(train) == round(0.8 * 1508) == 1206 and all(e.label == 0 for e in train)
  test_normal = [e for e in test if e.label == 0]
  assert len(test_normal) == 1508 - 1206 and len(test) - len(test_normal) == 715
  assert len(test_all) == 302 + 295 + 106 + 715
  assert {e.image for e in train}.isdisjoint(e.image for e in test)
  assert [e.image for e in elpv.elpv_entries("train", seed=0)[1]] == [e.image for e in train]
  assert {e.image for e in train} != {e.image for e in train_other}
  assert {e.defect_type for e in test_all} == {"good", "defect_p0.33", "defect_p0.67", "defect_p1.00"}
  with pytest.raises(ValueError, match="anomalous_probabilities must be among"):
    elpv.elpv_entries("test", anomalous_probabilities=(0.0,))


def test_elpv_decodes_a_small_subset():
  s = data.load("elpv", None, "test", cell_type="mono", anomalous_probabilities=(2 / 3,), image_size=32)
  assert s.images.shape == (118 + 56, 32, 32, 1) and not s.has_masks
  assert s.labels.sum() == 56 and s.masks.sum() == 0
  assert s.names[0].startswith("images/cell") and s.images.std() > 0.02
