"""TFDS builders (optional extra `data`): same arrays as the plain readers.

Runs only where tensorflow-datasets is installed (e.g. a venv with `pip install -e '.[data]'`);
prepares with file_format="array_record", which needs no TensorFlow.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="TFDS builders need the `data` extra")

import jaxad.data as data  # noqa: E402
from jaxad.data import synthetic, tfds_builders  # noqa: E402


def _prepare(builder, manual_dir):
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
                               file_format="array_record")


def _assert_same(a, b):
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.masks, b.masks)
  np.testing.assert_array_equal(a.labels, b.labels)
  assert a.names == b.names and a.defect_types == b.defect_types


def test_mvtec_builder_matches_reader(tmp_path):
  manual = tmp_path / "manual"
  synthetic.write_mvtec_like(manual, "bottle", n_train=4, n_test_good=2, n_test_defect=2, size=40)
  config = tfds_builders.MvtecAdConfig(name="bottle_t", folder="bottle", image_size=32, crop_size=24,
                                       channels=1)
  builder = tfds_builders.MvtecAd(config=config, data_dir=str(tmp_path / "tfds"))
  _prepare(builder, manual)
  assert builder.info.splits["train"].num_examples == 4
  assert builder.info.splits["test"].num_examples == 6
  for split in ("train", "test"):
    ref = data.load_mvtec(manual, "bottle", split, image_size=32, crop_size=24, channels=1)
    _assert_same(tfds_builders.as_array_split(builder, split), ref)
  assert set(tfds_builders.MvtecAd.builder_configs) >= {"bottle", "zipper"}


def test_btad_builder_matches_reader(tmp_path):
  manual = tmp_path / "manual"
  synthetic.write_btad_like(manual, "01", n_train=3, n_test_ok=2, n_test_ko=2, size=40)
  builder = tfds_builders.Btad(config="product_01", data_dir=str(tmp_path / "tfds"))
  _prepare(builder, manual)
  ref = data.load_btad(manual, "01", "test")  # default 256x256 RGB, as the registered config
  _assert_same(tfds_builders.as_array_split(builder, "test"), ref)


def test_builders_need_no_tensorflow():
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed here; this checks the TF-free path")
  import sys
  assert "tensorflow" not in sys.modules
