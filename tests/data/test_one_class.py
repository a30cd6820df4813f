"""One-class MNIST / Fashion-MNIST protocol (IDX files)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

import jaxad.data as data
from jaxad.data import one_class


def _write_idx(path: Path, array: np.ndarray) -> None:
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def idx_dir(tmp_path):
  rng = np.random.default_rng(0)
  for prefix, n in (("train", 200), ("t10k", 100)):
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
  return tmp_path


def test_protocol_counts_on_generated_idx(idx_dir):
  train, test = one_class.one_class_mnist(idx_dir, 3, train_fraction=0.8, anomaly_ratio=0.2, seed=0)
  assert len(train) == 24 and train.labels.sum() == 0  # 30 images of class 3
  assert (test.labels == 0).sum() == 6 and (test.labels == 1).sum() == round(0.2 / 0.8 * 6)
  assert set(train.names).isdisjoint(test.names)
  assert all(d == "good" for d in train.defect_types)
  assert "digit_3" not in test.defect_types and not test.has_masks
  # Images are the IDX pixels / 255.
  images, labels, ids = one_class.idx_pool(idx_dir)
  row = ids.index(train.names[0])
  np.testing.assert_allclose(train.images[0, ..., 0], images[row] / 255.0, atol=1e-7)
  assert labels[row] == 3


def test_protocol_is_seeded_and_resizes(idx_dir):
  a, _ = one_class.one_class_mnist(idx_dir, 5, seed=1)
  b, _ = one_class.one_class_mnist(idx_dir, 5, seed=1)
  c, _ = one_class.one_class_mnist(idx_dir, 5, seed=2)
  assert a.names == b.names and a.names != c.names
  big = data.load("mnist", idx_dir, "test", normal_class=5, image_size=32, channels=3, seed=1)
  assert big.images.shape[1:] == (32, 32, 3)
  with pytest.raises(ValueError, match="normal_class must be an int in 0..9"):
    one_class.one_class_mnist(idx_dir, 10)
  with pytest.raises(ValueError, match="anomaly_ratio must be in"):
    one_class.one_class_mnist(idx_dir, 1, anomaly_ratio=1.0)


def test_idx_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no IDX image files"):
    one_class.idx_pool(tmp_path)
  (tmp_path / "x-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3)
  (tmp_path / "x-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big"))
  with pytest.raises(ValueError, match="header says"):
    one_class.idx_pool(tmp_path)


@pytest.mark.real_data
def test_mnist_one_class_counts(mnist_dir):
  # Independent count of each digit straight from the label bytes.
  counts = np.zeros(10, int)
  for name in ("train10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    with gzip.open(mnist_dir / name) as f:
      counts += np.bincount(np.frombuffer(f.read()[8:], np.uint8), minlength=10)
  assert counts.sum() == 20000
  for digit in (0, 7):
    train, test = one_class.one_class_mnist(mnist_dir, digit, seed=0)
    n_train = round(0.8 * counts[digit])
    assert len(train) == n_train
    assert (test.labels == 0).sum() == counts[digit] - n_train
    assert (test.labels == 1).sum() == counts[digit] - n_train  # anomaly_ratio 0.5
    assert f"digit_{digit}" not in test.defect_types
    assert train.images.shape[1:] == (28, 28, 1) and 0.1 < train.images.mean() < 0.2


def test_fashion_mnist_counts():
  if not (one_class.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
    pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
  train, test = data.one_class_mnist(None, 5, fashion=True, anomaly_ratio=0.1, seed=0)
  assert len(train) == 5600 and (test.labels == 0).sum() == 1400
  assert (test.labels == 1).sum() == round(0.1 / 0.9 * 1400)
  assert "sandal" not in test.defect_types and "sneaker" in test.defect_types
