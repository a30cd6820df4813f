"""Benchmark: decode + resize a whole data set (train + test), then epochs from the caches.

Prints a Markdown table. Epoch = load the train and test splits (through
``jaxad.data.load``) and iterate every batch of both once.

  python experiments/benchmark_data.py --data_dir=path/to/mvtec_ad/bottle --image_size=256
  python experiments/benchmark_data.py --dataset=elpv --image_size=128

The .npz cache goes to ``--cache_dir``, else to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from absl import app, flags

import jaxad.data as data

_DATASET = flags.DEFINE_enum("dataset", "mvtec", ["mvtec", "btad", "folder", "elpv"], "data set")
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "data folder (an MVTec AD category folder for --dataset=mvtec; "
                                "not needed for elpv)")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "resize target (square)")
_BATCH = flags.DEFINE_integer("batch_size", 32, "global batch size")
_WORKERS = flags.DEFINE_integer("num_workers", 0, "decoding threads (0 = default min(4, cpus))")
_CACHE_DIR = flags.DEFINE_string("cache_dir", "", ".npz cache folder (default: a fresh temp dir)")


def _epoch(cache_dir: str, epoch: int) -> tuple[float, float, int]:
  """Returns (load seconds, iterate seconds, images)."""
  t0 = time.perf_counter()
  root = None if _DATASET.value == "elpv" else _DATA_DIR.value
  splits = [data.load(_DATASET.value, root, s, image_size=_IMAGE_SIZE.value, cache_dir=cache_dir,
                      num_workers=_WORKERS.value or None) for s in ("train", "test")]
  t1 = time.perf_counter()
  n = 0
  for split, train in zip(splits, (True, False)):
    for batch in data.batches(split, _BATCH.value, seed=0, epoch=epoch, shuffle=train,
                              drop_remainder=False):
      n += int(batch["valid"].sum())
  return t1 - t0, time.perf_counter() - t1, n


def main(argv):
  del argv
  if _DATASET.value != "elpv" and not _DATA_DIR.value:
    raise app.UsageError(f"--dataset={_DATASET.value} needs --data_dir (e.g. path/to/mvtec_ad/bottle)")
  cache_dir = _CACHE_DIR.value or tempfile.mkdtemp(prefix="jaxad-bench-cache-")
  fresh = not _CACHE_DIR.value
  try:
    data.clear_memory_cache()
    rows = [("1: cold (decode + resize, write .npz)",) + _epoch(cache_dir, 0),
            ("2: memory cache",) + _epoch(cache_dir, 1)]
    data.clear_memory_cache()
    rows.append(("3: .npz cache (memory cleared)",) + _epoch(cache_dir, 2))
    npz_mb = sum(f.stat().st_size for f in Path(cache_dir).glob("*.npz")) / 2**20
  finally:
    if fresh:
      shutil.rmtree(cache_dir, ignore_errors=True)
  first = rows[0][1] + rows[0][2]
  print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {_DATASET.value} {'' if _DATASET.value == 'elpv' else _DATA_DIR.value}, {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}, "
        f"batch {_BATCH.value}, .npz cache {npz_mb:.0f} MiB")
  print()
  print("| epoch | load s | batches s | total s | images | images/s | speed-up vs epoch 1 |")
  print("|---|---|---|---|---|---|---|")
  for name, load_s, iter_s, n in rows:
    total = load_s + iter_s
    print(f"| {name} | {load_s:.3f} | {iter_s:.3f} | {total:.3f} | {n} | {n / total:.0f} | {first / total:.1f}x |")


if __name__ == "__main__":
  app.run(main)
