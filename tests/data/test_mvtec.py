"""MVTec AD reader: synthetic trees (layout, errors) and the real bottle category."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import jaxad.data as data
from jaxad.data import mvtec, synthetic


@pytest.fixture()
def tree(tmp_path):
  synthetic.write_mvtec_like(tmp_path, "widget", n_train=5, n_test_good=2, n_test_defect=3,
                             size=48, seed=1)
  return tmp_path


def test_synthetic_counts_labels_and_aligned_masks(tree):
  train = data.load_mvtec(tree, "widget", "train", image_size=32)
  test = data.load_mvtec(tree, "widget", "test", image_size=32, channels=1)
  assert train.images.shape == (5, 32, 32, 3) and train.labels.sum() == 0
  assert test.images.shape == (8, 32, 32, 1)
  assert test.defect_types == ("good",) * 2 + ("hole",) * 3 + ("scratch",) * 3
  assert test.names[2] == "test/hole/000.png"
  np.testing.assert_array_equal(test.labels, [0, 0, 1, 1, 1, 1, 1, 1])
  area = test.masks.sum((1, 2))
  assert np.all(area[:2] == 0) and np.all(area[2:] > 0)
  # The drawn defect is dark: inside the mask the image is darker than on the product around it.
  for i in range(2, 8):
    m = test.masks[i] > 0
    assert test.images[i, ..., 0][m].mean() < test.images[i, 12:20, 12:20, 0].mean()
  # Root pointing at the category itself (category=None) gives the same split.
  again = data.load("mvtec", tree / "widget", "test", image_size=32, channels=1)
  np.testing.assert_array_equal(again.images, test.images)


def test_errors_are_clear(tree):
  with pytest.raises(FileNotFoundError, match=r"category folder not found: .*nothing.*widget"):
    data.load_mvtec(tree, "nothing", "train")
  with pytest.raises(ValueError, match="split must be one of"):
    data.load_mvtec(tree, "widget", "val")
  (tree / "widget" / "ground_truth" / "hole" / "001_mask.png").unlink()
  with pytest.raises(FileNotFoundError, match=r"no mask for defective image .*hole/001.png"):
    data.load_mvtec(tree, "widget", "test", image_size=16)
  lenient = data.load_mvtec(tree, "widget", "test", image_size=16, require_masks=False)
  assert lenient.masks[lenient.names.index("test/hole/001.png")].sum() == 0
  for f in (tree / "widget" / "train" / "good").iterdir():
    f.unlink()
  with pytest.raises(ValueError, match="no training images in .*train/good"):
    data.load_mvtec(tree, "widget", "train")
  shutil.rmtree(tree / "widget" / "test")
  with pytest.raises(FileNotFoundError, match="MVTec AD test folder not found"):
    data.load_mvtec(tree, "widget", "test")


def test_unreadable_file_is_named(tree):
  (tree / "widget" / "train" / "good" / "003.png").write_bytes(b"\x89PNG broken")
  with pytest.raises(ValueError, match=r"cannot read image file .*train/good/003.png"):
    data.load_mvtec(tree, "widget", "train", image_size=16)


@pytest.fixture(scope="module")
def bottle_test(mvtec_bottle):
  return data.load_mvtec(mvtec_bottle, None, "test", image_size=64)


@pytest.mark.real_data
def test_bottle_file_counts(mvtec_bottle):
  _, train = mvtec.mvtec_entries(mvtec_bottle, None, "train")
  _, test = mvtec.mvtec_entries(mvtec_bottle.parent, "bottle", "test")
  assert len(train) == 209 and all(e.label == 0 for e in train)
  assert len(test) == 83
  assert sum(e.mask is not None for e in test) == 63 == sum(e.label for e in test)
  # Every mask belongs to its image: same defect folder and number.
  for e in test:
    if e.mask is not None:
      assert e.mask.parent.name == e.image.parent.name and e.mask.name == f"{e.image.stem}_mask.png"


@pytest.mark.real_data
def test_bottle_test_split_labels_and_masks_aligned(bottle_test):
  s = bottle_test
  assert s.images.shape == (83, 64, 64, 3) and s.images.dtype == np.float32
  assert set(np.unique(s.masks).tolist()) == {0.0, 1.0}
  counts = {d: s.defect_types.count(d) for d in set(s.defect_types)}
  assert counts == {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21}
  area = s.masks.sum((1, 2))
  labels = np.array([d != "good" for d in s.defect_types], np.int32)
  np.testing.assert_array_equal(s.labels, labels)
  assert np.all(area[labels == 0] == 0) and np.all(area[labels == 1] > 0)
  assert 0.0 <= s.images.min() and s.images.max() <= 1.0 and s.images.std() > 0.05


def test_dispatcher_errors(tree):
  with pytest.raises(FileNotFoundError, match=r"not an MVTec AD category folder .*\['widget'\]"):
    data.load("mvtec", tree, "train")
  with pytest.raises(ValueError, match="dataset must be one of"):
    data.load("imagenet", tree, "train")
  with pytest.raises(ValueError, match="needs normal_class"):
    data.load("mnist", tree, "train")


@pytest.mark.real_data
def test_bottle_batches_are_seeded_and_shard_by_process(bottle_test):
  def names(**kw):
    return [bottle_test.names[i] for b in data.batches(bottle_test, 16, seed=5, drop_remainder=False,
                                                       with_index=True, **kw)
            for i, v in zip(b["index"], b["valid"]) if v]
  assert names() == names() and names() != names(epoch=1)
  shards = [names(process_index=p, process_count=2) for p in range(2)]
  assert set(shards[0]).isdisjoint(shards[1])
  assert sorted(shards[0] + shards[1]) == sorted(bottle_test.names)
