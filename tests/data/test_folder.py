"""Generic folder reader on generated trees."""

from __future__ import annotations

import numpy as np
import pytest

import jaxad.data as data
from jaxad.data import synthetic


def test_folder_with_defect_subfolders_and_masks(tmp_path):
  synthetic.write_folder_like(tmp_path, n_train=4, n_test_normal=2, n_test_abnormal=2, size=40,
                              defect_types=("dent", "stain"))
  train = data.load("folder", tmp_path, "train", image_size=32)
  test = data.load("folder", tmp_path, "test", image_size=32, channels=1)
  assert len(train) == 4 and train.has_masks and train.names[0] == "train/img000.png"
  assert test.images.shape == (6, 32, 32, 1) and test.has_masks
  assert test.defect_types == ("good", "good", "dent", "dent", "stain", "stain")
  assert test.names[2] == "test/abnormal/dent/img000.png"  # relative to root
  area = test.masks.sum((1, 2))
  assert np.all(area[:2] == 0) and np.all(area[2:] > 0)


def test_folder_without_masks_and_errors(tmp_path):
  synthetic.write_folder_like(tmp_path, n_train=3, n_test_normal=1, n_test_abnormal=2, size=32)
  test = data.load_folder(test_normal_dir=tmp_path / "test" / "normal",
                          test_abnormal_dir=tmp_path / "test" / "abnormal", split="test", image_size=16)
  assert not test.has_masks and test.masks.sum() == 0
  assert test.defect_types == ("good", "anomalous", "anomalous")
  with pytest.raises(ValueError, match="needs train_dir"):
    data.load_folder(split="train")
  with pytest.raises(FileNotFoundError, match="test_abnormal_dir not found"):
    data.load_folder(test_abnormal_dir=tmp_path / "nope", split="test")
  (tmp_path / "masks" / "img001_mask.png").unlink()
  with pytest.raises(FileNotFoundError, match=r"no mask for abnormal image .*img001.png"):
    data.load("folder", tmp_path, "test")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="no training images in"):
    data.load_folder(train_dir=empty)
