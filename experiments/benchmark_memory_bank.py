"""Memory-bank methods on one MVTec AD category: jaxad's PatchCore-style row and SMCC beside an
independent PyTorch PatchCore (``experiments/torch_patchcore.py``), timed in one run.

Rows (same images, same evaluation, ``jaxad.metrics.evaluate``):

* ``jaxad PatchCore-style``: ``smcc.Config`` with MobileNetV2 ``stride8`` + ``stride16`` (3x3
  average, 128-d), every training patch, greedy coreset of ``--coreset_ratio`` on a 128-d
  projection (``jaxad.cluster.greedy_coreset``), 1-NN scores, bilinear + Gaussian sigma 4 maps
  (as ``smcc_mvtec.py --rows=patchcore``); fit = weights + features + coreset (compilation
  included), inference through ``jaxad.train.predict.predict_dataset`` (one jitted ``predict``
  per batch: features, local average, kNN, upsampling and smoothing), one row per
  ``--batch_sizes`` entry;
* ``PyTorch PatchCore``: the same method written in PyTorch from the paper (2 threads by
  default), batches of ``--torch_batch_size``;
* ``jaxad SMCC`` (``--smcc``): the method through the engine (prepare + ``--smcc_epochs`` of
  self-update steps at batch 16, K = 3), its inference per image, and the self-update step
  (16 images at 224 px, MobileNetV2) timed with the backbone's CPU convolutions
  (``conv_method="unrolled"``, the default) and with ``conv_method="native"`` (``lax``
  convolutions: the path before ``jaxad/backbones/convs.py``).

Timing: fits run once each (``--fit_repeats`` alternates jaxad / PyTorch, ABBA); inference is
timed over whole passes of the test set after a warm-up pass, the implementations alternating
(ABBA) ``--repeats`` times, median seconds per image reported (the last batch is padded for jaxad
and included in the time). ``--check`` also scores the test set with PyTorch using jaxad's bank
and prints the largest score / map differences (same computation: they agree to float32
rounding).

  .venv/bin/python experiments/benchmark_memory_bank.py --data_dir=path/to/mvtec_ad --smcc
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from absl import app, flags

import jax
import numpy as np

from jaxad import cluster, data, metrics
from jaxad.models import smcc
from jaxad.models.protocol import Run
from jaxad.train import loop, rng
from jaxad.train.mesh import data_sharding, make_mesh, replicate
from jaxad.train.predict import predict_dataset

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "MVTec AD root (category folders).", required=True)
flags.DEFINE_string("category", "bottle", "MVTec AD category.")
flags.DEFINE_integer("resize", 256, "Resize before the centre crop.")
flags.DEFINE_integer("image_size", 224, "Centre crop = model input size.")
flags.DEFINE_string("cache_dir", None, "Decoded-image cache folder (default: none).")
flags.DEFINE_integer("max_train", 0, "Use only the first n training images (0: all; smoke runs).")
flags.DEFINE_float("coreset_ratio", 0.1, "Fraction of the training patches in the bank.")
flags.DEFINE_integer("seed", 0, "Seed (coreset projection and start, SMCC data order).")
flags.DEFINE_list("batch_sizes", ["8", "16", "32"], "jaxad inference batch sizes timed.")
flags.DEFINE_integer("torch_batch_size", 16, "PyTorch inference batch size.")
flags.DEFINE_list("torch_threads", ["2"], "torch.set_num_threads of the PyTorch rows (the first "
                  "one also fits; more values add inference rows, e.g. 2,1 on a busy machine).")
flags.DEFINE_integer("repeats", 3, "Timed inference passes per implementation (median).")
flags.DEFINE_integer("fit_repeats", 1, "Fits per implementation (ABBA order; median).")
flags.DEFINE_bool("check", True, "Score the test set with PyTorch on jaxad's bank and compare.")
flags.DEFINE_bool("smcc", False, "Also fit and time SMCC and its self-update step.")
flags.DEFINE_integer("smcc_epochs", 1, "SMCC self-update epochs W.")
flags.DEFINE_integer("step_repeats", 5, "Timed SMCC self-update steps per convolution path.")
flags.DEFINE_list("step_conv_methods", ["unrolled", "native"], "Convolution paths of the step timing.")

_LAYERS = ("stride8", "stride16")


def patchcore_config() -> smcc.Config:
  return smcc.Config(image_size=FLAGS.image_size, backbone="mobilenet_v2", layers=_LAYERS, knn_k=1)


def fit_jaxad(train: data.ArraySplit) -> tuple[smcc.SMCCState, dict]:
  """jaxad's PatchCore-style fit: weights, features of every training patch, greedy coreset."""
  config, mesh, bs = patchcore_config(), make_mesh(), 16
  t0 = time.perf_counter()
  run = Run(total_steps=0, steps_per_epoch=len(train) // bs, batch_size=bs)
  state = replicate(smcc.init(config, run, rng.stream(FLAGS.seed, rng.INIT),
                              {"image": train.images[:bs]}), mesh)
  x = smcc.extract_patches(config, state, data.batches(train, bs, seed=FLAGS.seed, shuffle=False,
                                                       drop_remainder=False))
  t1 = time.perf_counter()
  m = int(round(FLAGS.coreset_ratio * x.shape[0]))
  cs = cluster.greedy_coreset(rng.stream(FLAGS.seed, rng.PREPARE), x, m, projection_dim=128)
  state = replicate(smcc.with_bank(config, state, x[np.asarray(cs.indices)]), mesh)
  jax.block_until_ready(state.best_bank)
  t2 = time.perf_counter()
  return state, {"fit_s": t2 - t0, "features_s": t1 - t0, "coreset_s": t2 - t1}


def fit_torch(tp, train: data.ArraySplit):
  t0 = time.perf_counter()
  model = tp.PatchCore(coreset_ratio=FLAGS.coreset_ratio, seed=FLAGS.seed).fit(train.images)
  return model, {"fit_s": time.perf_counter() - t0, "features_s": model.timings["features_s"],
                 "coreset_s": model.timings["coreset_s"]}


def torch_predict(model, images: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
  import torch
  torch.set_num_threads(threads)
  bs = FLAGS.torch_batch_size
  out = [model.predict(images[i:i + bs]) for i in range(0, len(images), bs)]
  return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def timed_passes(fns: dict, repeats: int, n_images: int) -> dict:
  """Warm-up pass each, then ``repeats`` ABBA rounds; ``{name: (outputs, [s/image ...])}``."""
  outs = {k: fn() for k, fn in fns.items()}
  times = {k: [] for k in fns}
  names = list(fns)
  for i in range(repeats):
    for name in (names if i % 2 == 0 else names[::-1]):
      t0 = time.perf_counter()
      fns[name]()
      times[name].append((time.perf_counter() - t0) / n_images)
  return {k: (outs[k], times[k]) for k in fns}


def smcc_step_times(state: smcc.SMCCState, base: smcc.Config, train: data.ArraySplit) -> dict:
  """Median seconds of the self-update step (batch 16) per convolution path."""
  mesh, bs = make_mesh(), 16
  run = Run(total_steps=1, steps_per_epoch=len(train) // bs, batch_size=bs)
  step = loop.make_train_step(smcc, mesh)
  batch = jax.device_put({"image": train.images[:bs], "valid": np.ones(bs, bool)},
                         data_sharding(mesh))
  out = {}
  for method in FLAGS.step_conv_methods:
    config = smcc.Config(**{**base.__dict__, "conv_method": method})
    t0 = time.perf_counter()
    s, _ = step(config, run, state, batch)
    jax.block_until_ready(s.params)
    first = time.perf_counter() - t0
    times = []
    for _ in range(FLAGS.step_repeats):
      t0 = time.perf_counter()
      s, m = step(config, run, s, batch)
      jax.block_until_ready((s.params, m))
      times.append(time.perf_counter() - t0)
    out[method] = {"first_s": first, "median_s": float(np.median(times)), "all_s": times}
  return out


def _pixel(test: data.ArraySplit, maps: np.ndarray) -> tuple:
  return test.masks, maps


def main(argv):
  del argv
  import torch  # reference only
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import torch_patchcore as tp
  threads = [int(t) for t in FLAGS.torch_threads]
  torch.set_num_threads(threads[0])
  kw = dict(image_size=FLAGS.resize, crop_size=FLAGS.image_size, cache_dir=FLAGS.cache_dir)
  train = data.load_mvtec(FLAGS.data_dir, FLAGS.category, "train", **kw)
  test = data.load_mvtec(FLAGS.data_dir, FLAGS.category, "test", **kw)
  if FLAGS.max_train:
    k = FLAGS.max_train
    train = dataclasses.replace(train, images=train.images[:k], masks=train.masks[:k],
                                labels=train.labels[:k], names=train.names[:k],
                                defect_types=train.defect_types[:k])
  n = len(test.images)

  fits = {"jaxad": [], "torch": []}
  state = model = None
  for i in range(FLAGS.fit_repeats):
    for name in (("jaxad", "torch") if i % 2 == 0 else ("torch", "jaxad")):
      if name == "jaxad":
        state, rec = fit_jaxad(train)
      else:
        model, rec = fit_torch(tp, train)
      fits[name].append(rec)
      print(f"fit {name}: {rec}", flush=True)
  fit = {k: {f: float(np.median([r[f] for r in v])) for f in v[0]} for k, v in fits.items()}

  config, mesh = patchcore_config(), make_mesh()
  fns = {f"jaxad PatchCore-style (batch {b})":
         (lambda b=int(b): predict_dataset(smcc, config, state, test.images, batch_size=b,
                                           mesh=mesh, desc="predict"))
         for b in FLAGS.batch_sizes}
  for t in threads:
    fns[f"PyTorch PatchCore (batch {FLAGS.torch_batch_size}, {t} thread{'s' if t > 1 else ''})"] = (
        lambda t=t: torch_predict(model, test.images, t))

  smcc_rec = None
  if FLAGS.smcc:
    sconfig = smcc.Config(image_size=FLAGS.image_size, backbone="mobilenet_v2", layers=_LAYERS)
    t0 = time.perf_counter()
    result = loop.fit(smcc, sconfig, train, seed=FLAGS.seed, epochs=FLAGS.smcc_epochs,
                      batch_size=16, mesh=mesh)
    jax.block_until_ready(result.state.best_bank)
    smcc_rec = {"fit_s": time.perf_counter() - t0, "steps": len(result.history)}
    sstate = result.state
    for b in FLAGS.batch_sizes:
      fns[f"jaxad SMCC (batch {b})"] = (
          lambda b=int(b): predict_dataset(smcc, sconfig, sstate, test.images, batch_size=b,
                                           mesh=mesh, desc="predict"))

  res = timed_passes(fns, FLAGS.repeats, n)
  print(f"\n{FLAGS.category}: {len(train.images)} training / {n} test images at "
        f"{FLAGS.image_size} px, MobileNetV2 stride 8 + 16, coreset {FLAGS.coreset_ratio:g}, "
        f"jax {jax.__version__} ({jax.device_count()} device), torch {torch.__version__} "
        f"(fit with {threads[0]} threads)\n")
  torch_key = [k for k in fns if k.startswith("PyTorch")][0]
  t_ref = float(np.median(res[torch_key][1]))
  print("| implementation | fit s | features s | coreset s | infer s/img | vs PyTorch | "
        "image AUROC | pixel AUROC |")
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  for name, ((scores, maps), times) in res.items():
    ev = metrics.evaluate(test.labels, scores, *_pixel(test, maps))
    t = float(np.median(times))
    kind = "jaxad" if name.startswith("jaxad PatchCore") else "torch" if name.startswith("PyTorch") else None
    f = fit.get(kind) if kind else ({"fit_s": smcc_rec["fit_s"]} if smcc_rec else None)
    cols = ([f"{f['fit_s']:.1f}", f"{f.get('features_s', float('nan')):.1f}",
             f"{f.get('coreset_s', float('nan')):.1f}"] if f else ["", "", ""])
    print(f"| {name} | {' | '.join(cols)} | {t:.4f} | {t_ref / t:.2f}x | "
          f"{100 * ev['image_auroc']:.1f} | {100 * ev['pixel_auroc']:.1f} |")
  print(f"\nfit jaxad / PyTorch: {fit['torch']['fit_s'] / fit['jaxad']['fit_s']:.2f}x faster; "
        f"inference times per pass (s/img): " +
        "; ".join(f"{k}: {', '.join(f'{t:.4f}' for t in v[1])}" for k, v in res.items()))
  if smcc_rec is not None:
    steps = smcc_step_times(sstate, sconfig, train)
    print(f"\nSMCC fit (engine, W = {FLAGS.smcc_epochs}, {smcc_rec['steps']} steps, compilation "
          f"included): {smcc_rec['fit_s']:.1f} s")
    print("| SMCC self-update step, 16 images at 224 px | median s | steps timed | first step s "
          "(compilation) |")
    print("| --- | ---: | ---: | ---: |")
    for method, r in steps.items():
      print(f"| conv_method={method} | {r['median_s']:.2f} | {len(r['all_s'])} | {r['first_s']:.1f} |")
  if FLAGS.check:
    model.set_bank(np.asarray(state.best_bank)[np.asarray(state.best_bank_valid)])
    ts, tm = torch_predict(model, test.images, threads[0])
    (js, jm), _ = res[f"jaxad PatchCore-style (batch {FLAGS.batch_sizes[0]})"]
    print(f"\ncheck, PyTorch on jaxad's bank: max |score diff| {np.abs(ts - js).max():.2e}, "
          f"max |map diff| {np.abs(tm - jm).max():.2e} (largest map value {np.abs(jm).max():.2f})")


if __name__ == "__main__":
  app.run(main)
