"""Batching: fixed shapes, padding, seeded order, per-process shards, sharded device_put."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_jax_subprocess

import jaxad.data as data
from jaxad.data import ArraySplit


def _split(n=23, h=4, w=3):
  images = (np.arange(n, dtype=np.float32)[:, None, None, None] / n) * np.ones((1, h, w, 1), np.float32)
  labels = (np.arange(n) % 3 == 0).astype(np.int32)
  masks = np.zeros((n, h, w), np.float32)
  masks[labels == 1, 0, 0] = 1
  return ArraySplit(images=images, masks=masks, labels=labels, names=tuple(str(i) for i in range(n)),
                    defect_types=tuple("x" if l else "good" for l in labels))


def _rows(batch, n=23):
  """Row ids recovered from the image values (image value = row / n)."""
  return np.rint(batch["image"][:, 0, 0, 0] * n).astype(int)


def test_fixed_shapes_padding_and_counts():
  s = _split()
  out = list(data.batches(s, 5, seed=0, drop_remainder=False, shuffle=False, with_index=True))
  assert len(out) == data.num_batches(s, 5, drop_remainder=False) == 5
  for b in out:
    assert b["image"].shape == (5, 4, 3, 1) and b["image"].dtype == np.float32
    assert b["mask"].shape == (5, 4, 3) and b["label"].dtype == np.int32 and b["valid"].dtype == bool
  last = out[-1]
  assert last["valid"].tolist() == [True, True, True, False, False]
  assert last["index"].tolist() == [20, 21, 22, -1, -1]
  assert np.all(last["image"][3:] == 0)
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in out])[:23], np.arange(23))
  # Labels and masks travel with their images.
  for b in out:
    rows = b["index"][b["valid"]]
    np.testing.assert_array_equal(b["label"][b["valid"]], s.labels[rows])
    np.testing.assert_array_equal(b["mask"][b["valid"]], s.masks[rows])
  train = list(data.batches(s, 5, seed=0))
  assert len(train) == data.num_batches(23, 5) == 4 and all(b["valid"].all() for b in train)
  assert set(train[0]) == {"image", "mask", "label", "valid"}


def test_order_is_a_pure_function_of_seed_and_epoch():
  s = _split()
  def order(**kw):
    return np.concatenate([_rows(b) for b in data.batches(s, 4, drop_remainder=False, **kw)])
  a = order(seed=7, epoch=2)
  np.testing.assert_array_equal(a, order(seed=7, epoch=2))
  assert not np.array_equal(a, order(seed=7, epoch=3))
  assert not np.array_equal(a, order(seed=8, epoch=2))
  assert sorted(a[:23].tolist()) == list(range(23))  # a permutation; padding rows at the end
  np.testing.assert_array_equal(data.epoch_order(23, seed=7, epoch=2), a[:23])


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shards_are_disjoint_and_cover_each_batch(process_count):
  s = _split()
  full = list(data.batches(s, 8, seed=3, epoch=1, drop_remainder=False, with_index=True))
  shards = [list(data.batches(s, 8, seed=3, epoch=1, drop_remainder=False, with_index=True,
                              process_index=p, process_count=process_count))
            for p in range(process_count)]
  assert all(len(sh) == len(full) for sh in shards)
  seen = []
  for b, g in enumerate(full):
    parts = [sh[b] for sh in shards]
    assert all(p["image"].shape[0] == 8 // process_count for p in parts)
    np.testing.assert_array_equal(np.concatenate([p["index"] for p in parts]), g["index"])
    np.testing.assert_array_equal(np.concatenate([p["image"] for p in parts]), g["image"])
    for p in parts:
      seen += p["index"][p["valid"]].tolist()
  assert sorted(seen) == list(range(23))


def test_argument_errors():
  s = _split()
  with pytest.raises(ValueError, match="divisible by process_count=3"):
    next(data.batches(s, 8, seed=0, process_count=3))
  with pytest.raises(ValueError, match="process_index must be < process_count"):
    next(data.batches(s, 8, seed=0, process_index=2, process_count=2))
  with pytest.raises(ValueError, match="larger than the split"):
    next(data.batches(s, 24, seed=0))
  with pytest.raises(TypeError, match="batch_size must be an int"):
    next(data.batches(s, 4.0, seed=0))
  with pytest.raises(TypeError, match="ArraySplit"):
    next(data.batches({"image": 1}, 4, seed=0))


def test_shard_batch_on_four_devices():
  out = run_jax_subprocess("""
    import json, jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import jaxad.data as data
    from jaxad.data import synthetic
    import tempfile
    root = synthetic.write_mvtec_like(tempfile.mkdtemp(), "w", n_train=8, size=32)
    split = data.load_mvtec(root, None, "train", image_size=16)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    batch = next(data.batches(split, 8, seed=0))
    g = data.shard_batch(batch, NamedSharding(mesh, P("data")))
    print(json.dumps({"shape": list(g["image"].shape), "shards": len(g["image"].addressable_shards),
                      "equal": bool(np.array_equal(np.asarray(g["image"]), batch["image"])),
                      "sum": float(jax.jit(lambda x: x.sum())(g["image"])),
                      "ref": float(batch["image"].sum(dtype=np.float64))}))
  """, devices=4)
  res = json.loads(out.strip().splitlines()[-1])
  assert res["shape"] == [8, 16, 16, 3] and res["shards"] == 4 and res["equal"]
  assert abs(res["sum"] - res["ref"]) < 1e-3 * res["ref"]


def test_import_jaxad_data_is_light():
  code = ("import sys, json, jaxad.data, jaxad.data.synthetic; "
          "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow', 'tensorflow_datasets', 'torch', 'jax', 'flax'))))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_start_resumes_mid_epoch_and_as_split_wraps_arrays():
  s = _split()
  whole = [_rows(b) for b in data.batches(s, 4, seed=3, epoch=1)]
  tail = [_rows(b) for b in data.batches(s, 4, seed=3, epoch=1, start=2)]
  assert len(tail) == len(whole) - 2
  for a, b in zip(whole[2:], tail):
    np.testing.assert_array_equal(a, b)
  split = data.as_split(s.images)
  assert isinstance(split, ArraySplit) and len(split) == 23 and not split.has_masks
  np.testing.assert_array_equal(split.images, s.images)
  assert data.as_split(s) is s
  with pytest.raises(ValueError, match="N, H, W, C"):
    data.as_split(s.images[0])
  with pytest.raises(TypeError, match="float32"):
    data.as_split(s.images.astype(np.float64))
