"""BTAD reader on generated trees."""

from __future__ import annotations

import numpy as np
import pytest

import jaxad.data as data
from jaxad.data import synthetic


def test_btad_layout_counts_masks_and_order(tmp_path):
  synthetic.write_btad_like(tmp_path, "02", n_train=4, n_test_ok=2, n_test_ko=3, size=40, seed=2,
                            image_ext=".bmp", mask_ext=".png")
  train = data.load_btad(tmp_path, "02", "train", image_size=32)
  test = data.load("btad", tmp_path, "test", product="02", image_size=32)
  assert len(train) == 4 and train.names[0] == "train/ok/0000.bmp"
  assert test.names == ("test/ok/0000.bmp", "test/ok/0001.bmp", "test/ko/0000.bmp", "test/ko/0001.bmp",
                        "test/ko/0002.bmp")
  np.testing.assert_array_equal(test.labels, [0, 0, 1, 1, 1])
  assert test.defect_types == ("good", "good", "ko", "ko", "ko")
  area = test.masks.sum((1, 2))
  assert np.all(area[:2] == 0) and np.all(area[2:] > 0)


def test_btad_bmp_masks_and_errors(tmp_path):
  synthetic.write_btad_like(tmp_path, "03", n_train=2, n_test_ok=1, n_test_ko=2, size=32,
                            image_ext=".png", mask_ext=".bmp")
  test = data.load_btad(tmp_path / "03", None, "test", image_size=None)
  assert test.images.shape == (3, 32, 32, 3) and test.masks[1:].sum() > 0
  (tmp_path / "03" / "ground_truth" / "ko" / "0001.bmp").unlink()
  with pytest.raises(FileNotFoundError, match=r"no mask for defective image .*test/ko/0001.png"):
    data.load_btad(tmp_path, "03", "test")
  with pytest.raises(FileNotFoundError, match="BTAD product folder not found"):
    data.load_btad(tmp_path, "01", "train")
