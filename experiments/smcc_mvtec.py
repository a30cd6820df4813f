"""SMCC and DFDA-AD on one MVTec AD category: both methods, their ablations and a PatchCore-style
baseline, measured in one run.

Every row uses the same test images and the same evaluation (``jaxad.metrics.evaluate``: image
AUROC, pixel AUROC, AUPRO@0.3, AP); the SMCC and PatchCore-style rows share their patch features
(``--backbone`` layers fused on the stride-8 grid, 3x3 local average). Rows (``--rows``,
comma-separated):

* ``smcc``       : sensitivity coreset + GMM centres + W epochs of L_c + L_o (the method);
* ``lc_only``    : as ``smcc`` with L_c only (Table IV);
* ``no_update``  : W = 0, pretrained backbone, bank = one batch of patches (SPADE-like, Table IV);
* ``k<n>``       : ``smcc`` with ``gmm_k = n`` (Fig. 6), e.g. ``k4``;
* ``rate<r>``    : ``smcc`` with coreset rate ``r`` (Fig. 5b), e.g. ``rate0.05``;
* ``layer<names>``: ``smcc`` with other backbone layers (Fig. 4), ``+``-separated, e.g.
  ``layerstride8`` or ``layerstride16+stride32`` (same stride-8 grid: only the features change);
* ``knn<n>``     : ``smcc`` with ``knn_k = n`` (Eq. 8's K); only the scoring changes, so a row whose
  config differs from an earlier row's only in ``knn_k`` reuses that row's fitted state;
* ``margin<m>``  : ``smcc`` with the hinge ``relu(d1 - d2 + m)`` instead of Eq. 5;
* ``lr<x>``      : ``smcc`` with Adam step size ``x`` (paper 1e-3), e.g. ``lr1e-4``;
* ``patchcore``  : all training patches, greedy k-center coreset (10 %, 128-d projection), 1-NN,
  no GMM, no self-update;
* the readings of the paper's gaps (``smcc.Config`` switches): ``gmm_means`` / ``center_set``
  (centres), ``conv`` / ``all`` (trainable), ``mean`` / ``sum`` (loss reduction),
  ``batch_loss`` / ``heldout`` (which pair is kept).

DFDA-AD rows (:mod:`jaxad.models.dfdaad`; MobileNetV2 ``stride8`` with the CBAM variant +
EfficientNet-Lite0 ``stride16`` with the query-key attention, or the paper's DenseNet121 + ResNet50
with ``--dfdaad_paper``; k-means bank of ``--dfdaad_bank_size``; attention trained for
``--dfdaad_epochs`` at batch ``--dfdaad_batch_size``, Adam ``--dfdaad_lr``):

* ``dfdaad``               : the method (both backbones, both attentions, trained);
* ``dfdaad_untrained``     : identity-initialised attention, no training (plain k-means bank);
* ``dfdaad_no_cbam`` / ``dfdaad_no_qk``: one attention switched off (still trained);
* ``dfdaad_one_backbone``  : both branches from branch A's backbone (``--dfdaad_one_layer_b``,
  default MobileNetV2 ``stride16``: the SMCC / PatchCore-style features);
* ``dfdaad_branch_a``      : branch A only (CBAM branch, one backbone, one layer);
* ``dfdaad_bank<n>``       : bank of ``n`` centres (``n >= 1``) or the fraction ``n`` (< 1);
* ``dfdaad_compactness``   : the plain (not scale-free) compactness objective;
* ``dfdaad_unbalanced``    : the branches concatenated as they come (no per-branch scaling);
* ``dfdaad_epochs<n>`` / ``dfdaad_lr<x>``: other training lengths / step sizes.

DFDA-AD entries combine with ``:`` too (``dfdaad_one_backbone:untrained``). Rows whose features are
equal before training (the attention starts as the identity) share one k-means bank: it is computed
once and its time is added to the fit time of every row that uses it.

Entries combine with ``:``, applied left to right on ``smcc``, e.g. ``center_set:heldout:sum`` or
``lc_only:heldout``. Every self-updated row also reports the last step's state (``<row> (last)``:
the final backbone with the last training batch's patches re-extracted by it) beside the kept one.

Per row it reports the metrics, the fit time, the inference time per image (after compilation,
``--infer_batch_sizes``) and the memory-bank bytes (the paper's Table VII columns), and writes
``<out>/results.json``, ``<out>/table.md``, ``<out>/<row>_history.json`` (loss curves) and
heatmap panels ``<out>/<row>_panels.png``. ``--save_states`` also writes ``<out>/<row>_state.npz``
(backbone, centres, bank) and ``--load_states=<dir>`` skips the fit of every row whose state file is
in ``<dir>``: use it to time inference alone with ``--timing_repeats=3`` (median of the repeats
is reported).

Every SMCC row trains through the engine (``jaxad.train.loop.fit``: the ``prepare`` stage, then W
epochs of self-update steps at batch ``--batch_size``, data order from ``--seed``).

Usage::

  .venv/bin/python experiments/smcc_mvtec.py --data_dir=path/to/mvtec_ad --category=bottle \\
      --rows=smcc,patchcore
  .venv/bin/python experiments/smcc_mvtec.py --data_dir=path/to/mvtec_ad --category=bottle \\
      --rows=dfdaad,dfdaad_untrained,dfdaad_no_cbam,dfdaad_no_qk,smcc,patchcore
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import types
from pathlib import Path

from absl import app, flags

import jax
import numpy as np

from jaxad import cluster, data, metrics, viz
from jaxad.models import dfdaad, smcc
from jaxad.models.protocol import Run
from jaxad.progress import log
from jaxad.train import loop, rng
from jaxad.train.mesh import make_mesh, replicate
from jaxad.train.predict import predict_dataset

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "MVTec AD root (category folders); unused with --dataset=elpv.")
flags.DEFINE_enum("dataset", "mvtec", ["mvtec", "elpv"], "mvtec (--category) or ELPV (the installed "
                  "package's cells, image metrics only; demo.py's split: --elpv_train normal "
                  "training cells, --elpv_test balanced test cells, one cell type).")
flags.DEFINE_integer("elpv_train", 256, "ELPV: normal training cells (multiple of --batch_size).")
flags.DEFINE_integer("elpv_test", 360, "ELPV: test cells, half normal and half defective.")
flags.DEFINE_string("elpv_cell_type", "poly", "ELPV cell type (poly, mono).")
flags.DEFINE_string("category", "bottle", "MVTec AD category.")
flags.DEFINE_string("backbone", "mobilenet_v2", "Backbone name (jaxad.backbones.NAMES).")
flags.DEFINE_list("layers", ["stride8", "stride16"], "Backbone layers fused.")
flags.DEFINE_string("weights_path", None, "Backbone .pth (default: installed package).")
flags.DEFINE_integer("resize", 256, "Resize before the centre crop.")
flags.DEFINE_integer("image_size", 224, "Centre crop = model input size.")
flags.DEFINE_integer("epochs", 1, "Self-update epochs W for the SMCC rows.")
flags.DEFINE_integer("batch_size", 16, "Images per self-update step = images in the bank (paper: 16).")
flags.DEFINE_integer("knn_k", 3, "K nearest bank entries for the SMCC rows.")
flags.DEFINE_list("rows", ["smcc", "lc_only", "no_update", "patchcore"], "Rows to run (see doc).")
flags.DEFINE_integer("seed", 0, "Seed (coreset, GMM, data order).")
flags.DEFINE_string("out", "runs/smcc_mvtec", "Output folder.")
flags.DEFINE_string("cache_dir", None, "Decoded-image cache folder (default: <out>/cache; '' = none).")
flags.DEFINE_bool("save_states", False, "Write <out>/<row>_state.npz (backbone, centres, bank).")
flags.DEFINE_string("load_states", None, "Folder of <row>_state.npz written by a run with the "
                    "same flags: skip those rows' fits (only shapes are checked).")
flags.DEFINE_integer("timing_repeats", 1, "Timed passes over the test set (median reported).")
flags.DEFINE_list("infer_batch_sizes", ["8"], "Batch sizes timed; the first one gives the metrics "
                  "(8: the fastest per image on M1, benchmark_memory_bank.py).")
flags.DEFINE_integer("dfdaad_epochs", 1, "Attention training epochs of the trained DFDA-AD rows.")
flags.DEFINE_integer("dfdaad_batch_size", 10, "DFDA-AD training batch (paper: 10).")
flags.DEFINE_float("dfdaad_lr", 2e-4, "DFDA-AD Adam step size (paper: 2e-4).")
flags.DEFINE_float("dfdaad_bank_size", 0.01, "DFDA-AD k-means centres: fraction (< 1) or count.")
flags.DEFINE_string("dfdaad_one_layer_b", "stride16", "Branch B layer of dfdaad_one_backbone.")
flags.DEFINE_bool("dfdaad_paper", False, "DFDA-AD with the paper's DenseNet121 + ResNet50 "
                  "(--dfdaad_weights_a/_b or $JAXAD_WEIGHTS_DIR).")
flags.DEFINE_string("dfdaad_weights_a", None, "densenet121-a639ec97.pth (with --dfdaad_paper).")
flags.DEFINE_string("dfdaad_weights_b", None, "resnet50-0676ba61.pth (with --dfdaad_paper).")


SWITCHES = {"gmm_means": ("centres", "gmm_means"), "center_set": ("centres", "center_set"),
            "conv": ("trainable", "conv"), "all": ("trainable", "all"),
            "mean": ("loss_reduction", "mean"), "sum": ("loss_reduction", "sum"),
            "batch_loss": ("selection", "batch_loss"), "heldout": ("selection", "heldout")}


def row_config(row: str, base: smcc.Config, epochs: int) -> tuple[smcc.Config, int]:
  """The config and the self-update epochs W of one ``--rows`` entry (``:`` combines entries)."""
  if ":" in row:
    config, w = base, epochs
    for part in row.split(":"):
      c, pw = row_config(part, config, w)
      config, w = c, min(w, pw)
    return config, w
  rep = dataclasses.replace
  if row in SWITCHES:
    field, value = SWITCHES[row]
    return rep(base, **{field: value}), epochs
  if row == "smcc":
    return base, epochs
  if row == "lc_only":
    return rep(base, use_lo=False), epochs
  if row == "no_update":
    return base, 0
  if row == "patchcore":
    return rep(base, knn_k=1), 0
  if row.startswith("lr"):
    return rep(base, learning_rate=float(row[2:])), epochs
  for prefix, field, kind in (("knn", "knn_k", int), ("k", "gmm_k", int),
                              ("rate", "coreset_rate", float), ("margin", "lo_margin", float)):
    if row.startswith(prefix) and row[len(prefix):].replace(".", "", 1).isdigit():
      return rep(base, **{field: kind(row[len(prefix):])}), epochs
  if row.startswith("layer"):
    return rep(base, layers=tuple(row[len("layer"):].split("+"))), epochs
  raise ValueError(f"--rows: unknown row {row!r}")


def _saved_trees(state: smcc.SMCCState) -> tuple:
  """The parts of a fitted state that a saved state file holds (what ``predict`` uses)."""
  return (state.best_params, state.batch_stats, state.centres, state.best_bank,
          state.best_bank_valid)


def save_state(path: Path, state: smcc.SMCCState) -> None:
  """Writes the fitted backbone, centres and bank of ``state`` to ``path`` (.npz)."""
  leaves = jax.device_get(jax.tree.leaves(_saved_trees(state)))
  np.savez(path, **{f"a{i}": np.asarray(x) for i, x in enumerate(leaves)})


def load_state(path: Path, template: smcc.SMCCState) -> smcc.SMCCState:
  """Restores :func:`save_state`'s file into ``template`` (same config: same shapes)."""
  treedef = jax.tree.structure(_saved_trees(template))
  want = jax.tree.leaves(_saved_trees(template))
  with np.load(path) as f:
    leaves = [f[f"a{i}"] for i in range(len(f.files))]
  if len(leaves) != len(want) or any(a.shape != b.shape for a, b in zip(leaves, want)):
    raise ValueError(f"{path}: saved arrays do not match the row's config (shapes differ)")
  params, batch_stats, centres, bank, valid = jax.tree.unflatten(
      treedef, [jax.numpy.asarray(x) for x in leaves])
  return template.replace(params=params, best_params=params, batch_stats=batch_stats,
                          centres=centres, bank=bank, bank_valid=valid, best_bank=bank,
                          best_bank_valid=valid)


def run_row(row: str, base: smcc.Config, train: data.ArraySplit, test: data.ArraySplit,
            out: Path, fitted: dict | None = None) -> dict:
  """Fits (or reuses / loads a fit) and evaluates one row; returns its record."""
  config, epochs = row_config(row, base, FLAGS.epochs)
  fitted = {} if fitted is None else fitted
  fit_key = (dataclasses.replace(config, knn_k=1), epochs) if row != "patchcore" else None
  mesh = make_mesh()
  bs = FLAGS.batch_size
  run = Run(total_steps=epochs * (len(train) // bs), steps_per_epoch=len(train) // bs, batch_size=bs)
  t0 = time.perf_counter()
  state = smcc.init(config, run, rng.stream(FLAGS.seed, rng.INIT), {"image": train.images[:bs]})
  history: list[dict] = []
  source = "fit"
  saved = Path(FLAGS.load_states) / f"{row}_state.npz" if FLAGS.load_states else None
  if saved is not None and saved.exists():
    state = replicate(load_state(saved, state), mesh)
    source = f"loaded {saved}"
  elif fit_key is not None and fit_key in fitted:
    prev_row, state, history, fit_s0 = fitted[fit_key]
    source = f"reused {prev_row}'s fit ({fit_s0:.0f} s)"
  elif row == "patchcore":
    state = replicate(state, mesh)
    x = smcc.extract_patches(config, state, data.batches(train, bs, seed=FLAGS.seed, shuffle=False,
                                                         drop_remainder=False))
    m = int(round(0.1 * x.shape[0]))
    cs = cluster.greedy_coreset(rng.stream(FLAGS.seed, rng.PREPARE), x, m, projection_dim=128)
    state = replicate(smcc.with_bank(config, state, x[np.asarray(cs.indices)]), mesh)
  else:
    result = loop.fit(smcc, config, train, seed=FLAGS.seed, epochs=epochs, batch_size=bs,
                      mesh=mesh)
    state, history = result.state, result.history
  jax.block_until_ready(state.best_bank)
  fit_s = time.perf_counter() - t0
  if source.startswith("reused"):
    fit_s = fit_s0  # the fit this row shares
  elif source.startswith("loaded"):
    fit_s = float("nan")
  if source == "fit" and fit_key is not None:
    fitted.clear()  # keep one fitted state alive at a time
    fitted[fit_key] = (row, state, history, fit_s)
  if FLAGS.save_states and source == "fit":
    save_state(out / f"{row}_state.npz", state)
  scores, maps, infer = _infer(smcc, config, state, test, mesh)
  infer_s = float(np.median(infer[int(FLAGS.infer_batch_sizes[0])]))
  res = metrics.evaluate(test.labels, scores, *_pixel(test, maps))
  mem = smcc.memory_bytes(state)
  last = None
  if history and source != "loaded":
    last = _last_step_metrics(config, state, train, test, history, mesh)
  kept = [h["step"] for h in history if h["best_loss"] == history[-1]["best_loss"]]
  nan = float("nan")
  rec = {"row": row, "image_auroc": res["image_auroc"], "pixel_auroc": res.get("pixel_auroc", nan),
         "aupro": res.get("aupro", nan), "image_ap": res["image_ap"],
         "pixel_ap": res.get("pixel_ap", nan),
         "pixel_auroc_per_image": res.get("pixel_auroc_per_image"),
         "kept_step": kept[0] if kept else 0, "last": last,
         "fit_s": fit_s, "fit_source": source, "infer_s_per_image": infer_s,
         "infer_s_per_image_all": {str(b): t for b, t in infer.items()}, "bank_bytes": mem["bank"],
         "bank_entries": int(np.asarray(jax.device_get(state.best_bank_valid)).sum()),
         "total_bytes": mem["total"], "epochs": epochs, "steps": len(history),
         "first_loss": history[0]["loss"] if history else None,
         "best_loss": history[-1]["best_loss"] if history else None,
         "config": {k: v for k, v in dataclasses.asdict(config).items()}}
  _write_row(out, row, rec, history, test, maps)
  return rec


def _infer(method, config, state, test: data.ArraySplit, mesh) -> tuple:
  """``(scores, maps, {batch size: [s/image per timed pass]})``: compiled on one batch per batch
  size first, then whole passes over the test set are timed."""
  infer = {}
  scores = maps = None
  for ibs in [int(b) for b in FLAGS.infer_batch_sizes]:
    predict_dataset(method, config, state, test.images[:ibs], batch_size=ibs, mesh=mesh,
                    desc="warm-up")
    times = []
    for _ in range(max(1, FLAGS.timing_repeats)):
      t1 = time.perf_counter()
      sc, mp = predict_dataset(method, config, state, test.images, batch_size=ibs, mesh=mesh)
      times.append((time.perf_counter() - t1) / len(test.images))
      if scores is None:
        scores, maps = sc, mp
    infer[ibs] = times
  return scores, maps, infer


def _write_row(out: Path, row: str, rec: dict, history: list[dict], test: data.ArraySplit,
               maps: np.ndarray) -> None:
  """The row's loss history, heatmap panels and one log line."""
  (out / f"{row}_history.json").write_text(json.dumps(history, indent=1) + "\n")
  sel = np.r_[np.flatnonzero(test.labels == 1)[::8][:6], np.flatnonzero(test.labels == 0)[:2]]
  viz.save_panels(out / f"{row}_panels.png", test.images[sel], maps[sel],
                  masks=test.masks[sel] if _pixel(test, maps)[0] is not None else None,
                  vmin=float(maps.min()), vmax=float(maps.max()))
  log("%s", json.dumps({k: v for k, v in rec.items() if k != "config"}))


# ----------------------------------------------------------------------------- DFDA-AD rows


def dfdaad_base() -> dfdaad.Config:
  """The DFDA-AD config of the plain ``dfdaad`` row (offline pair, or the paper's with
  ``--dfdaad_paper``)."""
  kw = dict(image_size=FLAGS.image_size, bank_size=FLAGS.dfdaad_bank_size,
            learning_rate=FLAGS.dfdaad_lr)
  if FLAGS.dfdaad_paper:
    return dfdaad.paper_config(FLAGS.dfdaad_weights_a, FLAGS.dfdaad_weights_b, **kw)
  return dfdaad.Config(**kw)


def dfdaad_row_config(row: str, base: dfdaad.Config, epochs: int) -> tuple[dfdaad.Config, int]:
  """The config and training epochs of one DFDA-AD ``--rows`` entry (``:`` combines entries)."""
  config = base
  for i, part in enumerate(row.split(":")):
    name = part[len("dfdaad"):].lstrip("_") if part.startswith("dfdaad") else part
    if i == 0 and not part.startswith("dfdaad"):
      raise ValueError(f"--rows: a DFDA-AD row starts with 'dfdaad', got {row!r}")
    rep = functools.partial(dataclasses.replace, config)
    if name == "":
      continue
    elif name == "untrained":
      epochs = 0
    elif name == "no_cbam":
      config = rep(use_cbam=False)
    elif name == "no_qk":
      config = rep(use_qk=False)
    elif name == "one_backbone":
      config = rep(backbone_b=config.backbone_a, weights_b=config.weights_a,
                   layer_b=FLAGS.dfdaad_one_layer_b)
    elif name == "branch_a":
      config = rep(backbone_b=None)
    elif name == "compactness":
      config = rep(objective="compactness")
    elif name == "unbalanced":
      config = rep(balance_branches=False)
    elif name.startswith("bank") and name[4:].replace(".", "", 1).isdigit():
      config = rep(bank_size=float(name[4:]) if "." in name[4:] else int(name[4:]))
    elif name.startswith("epochs") and name[6:].isdigit():
      epochs = int(name[6:])
    elif name.startswith("lr"):
      config = rep(learning_rate=float(name[2:]))
    else:
      raise ValueError(f"--rows: unknown DFDA-AD entry {part!r} in {row!r}")
  return config, epochs


_BANKS: dict = {}  # features-before-training key -> (prepared arrays, k-means seconds)


def _bank_key(config: dfdaad.Config, run: Run) -> tuple:
  """Rows with equal keys have equal patch features before training, hence one k-means bank: the
  identity-initialised blocks (``gate_scale=2``) do not change the features, on or off."""
  slots = (run.steps_per_epoch, run.batch_size)  # what sizes the bank (not the run length)
  if config.gate_scale != 2.0:
    return (config, slots)
  return (dataclasses.replace(config, use_cbam=True, use_qk=True, learning_rate=2e-4,
                              objective="relative_compactness"), slots)


def _shared_bank_prepare(config, run, key, state, batches):
  """``dfdaad.prepare``, computed once per :func:`_bank_key`."""
  k = _bank_key(config, run)
  if k not in _BANKS:
    t0 = time.perf_counter()
    s = dfdaad.prepare(config, run, key, state, batches)
    jax.block_until_ready(s.bank)
    arrays = dict(bank=s.bank, bank_valid=s.bank_valid, counts=s.counts,
                  branch_scale=s.branch_scale)
    _BANKS[k] = (arrays, time.perf_counter() - t0)
  return state.replace(**_BANKS[k][0])


SHARED_BANK_DFDAAD = types.ModuleType("dfdaad_shared_bank", "dfdaad with a memoised prepare")
SHARED_BANK_DFDAAD.__dict__.update({a: getattr(dfdaad, a) for a in ("NAME", "Config", "init",
                                                                     "train_step", "predict")})
SHARED_BANK_DFDAAD.prepare = _shared_bank_prepare


def run_dfdaad_row(row: str, train: data.ArraySplit, test: data.ArraySplit, out: Path) -> dict:
  """Fits (engine: init, k-means bank, attention epochs) and evaluates one DFDA-AD row."""
  config, epochs = dfdaad_row_config(row, dfdaad_base(), FLAGS.dfdaad_epochs)
  mesh = make_mesh()
  bs = FLAGS.dfdaad_batch_size
  run = Run(total_steps=epochs * (len(train) // bs), steps_per_epoch=len(train) // bs, batch_size=bs)
  shared = _bank_key(config, run) in _BANKS
  t0 = time.perf_counter()
  result = loop.fit(SHARED_BANK_DFDAAD, config, train, seed=FLAGS.seed, epochs=epochs,
                    batch_size=bs, mesh=mesh)
  state, history = result.state, result.history
  jax.block_until_ready(state.bank)
  fit_s = time.perf_counter() - t0
  kmeans_s = _BANKS[_bank_key(config, run)][1]
  if shared:
    fit_s += kmeans_s  # the shared bank's time: each row's fit stands alone
  scores, maps, infer = _infer(SHARED_BANK_DFDAAD, config, state, test, mesh)
  res = metrics.evaluate(test.labels, scores, *_pixel(test, maps))
  mem = dfdaad.memory_bytes(state)
  nan = float("nan")
  rec = {"row": row, "method": "dfdaad", "image_auroc": res["image_auroc"],
         "pixel_auroc": res.get("pixel_auroc", nan), "aupro": res.get("aupro", nan),
         "image_ap": res["image_ap"], "pixel_ap": res.get("pixel_ap", nan),
         "pixel_auroc_per_image": res.get("pixel_auroc_per_image"), "kept_step": len(history),
         "last": None, "fit_s": fit_s, "kmeans_s": kmeans_s,
         "fit_source": "fit (k-means bank shared with an earlier row)" if shared else "fit",
         "infer_s_per_image": float(np.median(infer[int(FLAGS.infer_batch_sizes[0])])),
         "infer_s_per_image_all": {str(b): t for b, t in infer.items()}, "bank_bytes": mem["bank"],
         "bank_entries": int(np.asarray(jax.device_get(state.bank_valid)).sum()),
         "total_bytes": mem["total"], "epochs": epochs, "steps": len(history),
         "first_loss": history[0]["loss"] if history else None,
         "last_loss": history[-1]["loss"] if history else None,
         "config": dataclasses.asdict(config)}
  _write_row(out, row, rec, history, test, maps)
  return rec


def _pixel(test: data.ArraySplit, maps) -> tuple:
  """``(masks, maps)`` for ``metrics.evaluate``, or ``(None, None)`` when the data has no masks."""
  return (test.masks, maps) if getattr(test, "has_masks", True) else (None, None)


def _subset(split: data.ArraySplit, idx: np.ndarray) -> data.ArraySplit:
  idx = np.sort(idx)
  return dataclasses.replace(split, images=split.images[idx], masks=split.masks[idx],
                             labels=split.labels[idx], names=tuple(split.names[i] for i in idx),
                             defect_types=tuple(split.defect_types[i] for i in idx))


def load_elpv(cache: str | None) -> tuple[data.ArraySplit, data.ArraySplit]:
  """demo.py's ELPV split: seeded subsets of normal training cells and balanced test cells."""
  rng_np = np.random.default_rng(FLAGS.seed)
  kw = dict(image_size=FLAGS.image_size, channels=3, seed=FLAGS.seed, cache_dir=cache,
            cell_type=FLAGS.elpv_cell_type)
  train, test = data.load_elpv("train", **kw), data.load_elpv("test", **kw)
  n = min(FLAGS.elpv_train, len(train.images)) // FLAGS.batch_size * FLAGS.batch_size
  train = _subset(train, rng_np.permutation(len(train.images))[:n])
  half = FLAGS.elpv_test // 2
  normal, anomalous = np.flatnonzero(test.labels == 0), np.flatnonzero(test.labels == 1)
  test = _subset(test, np.r_[rng_np.permutation(normal)[:half], rng_np.permutation(anomalous)[:half]])
  return train, test


def _last_step_metrics(config: smcc.Config, state: smcc.SMCCState, train: data.ArraySplit,
                       test: data.ArraySplit, history: list[dict], mesh) -> dict:
  """Metrics of the last step's state: final backbone + last batch's patches re-extracted by it."""
  h = history[-1]
  batches = list(data.batches(train, FLAGS.batch_size, seed=FLAGS.seed, epoch=h["epoch"]))
  batch = batches[(h["step"] - 1) % len(batches)]
  x = smcc.extract_patches(config, state, [batch], desc="last-step bank")
  last = replicate(smcc.with_bank(config, state.replace(best_params=state.params), x), mesh)
  sc, mp = predict_dataset(smcc, config, last, test.images, batch_size=FLAGS.batch_size, mesh=mesh)
  res = metrics.evaluate(test.labels, sc, *_pixel(test, mp))
  return {k: res.get(k, float("nan")) for k in ("image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap",
                                  "pixel_auroc_per_image")}


def table(records: list[dict]) -> str:
  """Markdown table of the records (percent, seconds, MiB)."""
  lines = ["| row | image AUROC | pixel AUROC | AUPRO@0.3 | image AP | pixel AP | fit s | "
           "infer s/img | bank entries | bank MiB | total MiB |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in records:
    lines.append(f"| {r['row']} | {100 * r['image_auroc']:.1f} | {100 * r['pixel_auroc']:.1f} | "
                 f"{100 * r['aupro']:.1f} | {100 * r['image_ap']:.1f} | {100 * r['pixel_ap']:.1f} | "
                 f"{r['fit_s']:.0f} | {r['infer_s_per_image']:.3f} | {r['bank_entries']} | "
                 f"{r['bank_bytes'] / 2**20:.2f} | {r['total_bytes'] / 2**20:.1f} |")
    if r.get("last"):
      m = r["last"]
      lines.append(f"| {r['row']} (last; kept step {r['kept_step']}/{r['steps']}) | "
                   f"{100 * m['image_auroc']:.1f} | {100 * m['pixel_auroc']:.1f} | "
                   f"{100 * m['aupro']:.1f} | {100 * m['image_ap']:.1f} | {100 * m['pixel_ap']:.1f} "
                   "| | | | | |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  out = Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  cache = str(out / "cache") if FLAGS.cache_dir is None else (FLAGS.cache_dir or None)
  kw = dict(image_size=FLAGS.resize, crop_size=FLAGS.image_size, cache_dir=cache)
  if FLAGS.dataset == "elpv":
    train, test = load_elpv(cache)
  else:
    if not FLAGS.data_dir:
      raise app.UsageError("--data_dir is required with --dataset=mvtec")
    train = data.load_mvtec(FLAGS.data_dir, FLAGS.category, "train", **kw)
    test = data.load_mvtec(FLAGS.data_dir, FLAGS.category, "test", **kw)
  base = smcc.Config(image_size=FLAGS.image_size, backbone=FLAGS.backbone,
                     layers=tuple(FLAGS.layers), weights_path=FLAGS.weights_path,
                     knn_k=FLAGS.knn_k)
  records = []
  fitted: dict = {}
  path = out / "results.json"
  for row in FLAGS.rows:
    if row.startswith("dfdaad"):
      records.append(run_dfdaad_row(row, train, test, out))
    else:
      records.append(run_row(row, base, train, test, out, fitted))
    path.write_text(json.dumps(records, indent=1, default=str) + "\n")
  md = table(records)
  (out / "table.md").write_text(md + "\n")
  name = FLAGS.category if FLAGS.dataset == "mvtec" else f"ELPV {FLAGS.elpv_cell_type}"
  print(f"{name} ({FLAGS.backbone} {'+'.join(FLAGS.layers)}, {FLAGS.image_size}px, "
        f"W={FLAGS.epochs}, seed {FLAGS.seed}, {jax.device_count()} device(s))")
  print(md)


if __name__ == "__main__":
  app.run(main)
