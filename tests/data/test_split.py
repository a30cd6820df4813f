"""ArraySplit validation and deterministic sub-splits."""

from __future__ import annotations

import numpy as np
import pytest

from jaxad.data import ArraySplit, concatenate, split_fraction, train_val_split


def _split(n=10, h=4, w=5, c=3, anomalous=0):
  rng = np.random.default_rng(0)
  labels = np.zeros(n, np.int32)
  labels[n - anomalous:] = 1
  masks = np.zeros((n, h, w), np.float32)
  masks[n - anomalous:, 1, 1] = 1
  return ArraySplit(images=rng.random((n, h, w, c), dtype=np.float32), masks=masks, labels=labels,
                    names=tuple(f"f{i}.png" for i in range(n)),
                    defect_types=tuple("good" if l == 0 else "scratch" for l in labels))


def test_valid_split_exposes_length_and_shape():
  s = _split()
  assert len(s) == 10 and s.image_shape == (4, 5, 3)
  assert "good=10" in s.summary()


@pytest.mark.parametrize("change, error, match", [
    (dict(images=np.zeros((10, 4, 5, 3), np.float64)), TypeError, "images must have dtype float32"),
    (dict(images=np.zeros((10, 4, 5, 2), np.float32)), ValueError, "C in"),
    (dict(images=np.full((10, 4, 5, 3), 1.5, np.float32)), ValueError, r"\[0, 1\]"),
    (dict(masks=np.zeros((10, 4, 4), np.float32)), ValueError, "masks must have shape"),
    (dict(masks=np.full((10, 4, 5), 0.5, np.float32)), ValueError, "only 0 and 1"),
    (dict(labels=np.full(10, 2, np.int32)), ValueError, "0 or 1"),
    (dict(labels=np.zeros(9, np.int32)), ValueError, "labels must have shape"),
    (dict(names=("a",) * 9), ValueError, "names must have 10"),
    (dict(names=["a"] * 10), TypeError, "tuple of str"),
    (dict(labels=np.ones(10, np.int32)), ValueError, "defect type 'good' but label 1"),
])
def test_post_init_rejects_inconsistent_fields(change, error, match):
  s = _split()
  fields = dict(images=s.images, masks=s.masks, labels=s.labels, names=s.names,
                defect_types=s.defect_types)
  fields.update(change)
  with pytest.raises(error, match=match):
    ArraySplit(**fields)


def test_take_and_concatenate_round_trip():
  s = _split(anomalous=3)
  a, b = s.take([0, 2, 4]), s.take([9, 1])
  both = concatenate([a, b])
  np.testing.assert_array_equal(both.images, s.images[[0, 2, 4, 9, 1]])
  assert both.names == ("f0.png", "f2.png", "f4.png", "f9.png", "f1.png")
  assert both.labels.tolist() == [0, 0, 0, 1, 0]
  with pytest.raises(ValueError, match="indices must be in"):
    s.take([10])


def test_split_fraction_is_seeded_disjoint_and_covering():
  s = _split(n=50)
  a1, b1 = split_fraction(s, 0.8, seed=3)
  a2, b2 = split_fraction(s, 0.8, seed=3)
  a3, _ = split_fraction(s, 0.8, seed=4)
  assert len(a1) == 40 and len(b1) == 10
  assert a1.names == a2.names and b1.names == b2.names
  assert a1.names != a3.names
  assert set(a1.names).isdisjoint(b1.names) and set(a1.names) | set(b1.names) == set(s.names)
  # Rows keep the original relative order.
  assert list(a1.names) == sorted(a1.names, key=s.names.index)


def test_train_val_split_refuses_test_data():
  train, val = train_val_split(_split(n=20), 0.25, seed=0)
  assert (len(train), len(val)) == (15, 5)
  with pytest.raises(ValueError, match="never the test split"):
    train_val_split(_split(n=20, anomalous=2), 0.25, seed=0)
  with pytest.raises(ValueError, match="fraction must be in"):
    train_val_split(_split(n=20), 1.0, seed=0)
