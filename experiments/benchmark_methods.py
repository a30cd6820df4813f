"""Compares methods on one data set: accuracy, speed, memory and heatmap panels, per seed.

Example (the ``cpu`` preset: bottle, 64 px for the reconstruction / GAN methods, 224 px for the
feature methods, three seeds)::

  python experiments/benchmark_methods.py --config=experiments/configs/benchmark_cpu.py \\
      --config.data_dir=path/to/mvtec_ad --out=runs/compare_bottle

``--config`` is a preset (``experiments/configs/benchmark_<preset>.py``: ``cpu``, ``paper``,
``demo``); ``--config.<field>=<value>`` overrides any of its fields, e.g. ``--config.methods=
ramfae,smcc``, ``--config.seeds=0,1``, ``--config.dataset=folder --config.data_dir=path/to/my_parts``,
``--config.categories=bottle,cable`` (MVTec categories / BTAD products; empty when ``data_dir`` is
one category or a folder data set), ``--config.image_size=128`` (every method), ``--config.epochs=5``
or ``--config.minutes=10`` (every method's budget), ``--config.specs.scgan.epochs=200`` (one method).

Every selected (method, category, seed) is one *record*, trained and evaluated in its own child
process (this script with ``--job``): the engine (``jaxad.train.loop.fit``) trains the method on
the category's training images minus ``val_fraction`` held out (the same images for every method
and seed), ``predict_dataset`` scores the test set, ``jaxad.metrics.evaluate`` computes the metrics.
A record that has finished is skipped when the command is run again, so a killed run loses at most
the record in progress; a record of the same (method, category, seed) made with other settings is
an error (use another ``--out``). The children share an XLA compilation cache (``<out>/xla_cache``,
``compile_cache``): records after the first of a method reuse its compiled steps.

Writes below ``--out``:

* ``records/<name>/<method>/seed<k>.json``: one record per (method, category, seed): the metrics
  (image AUROC / AP / F1-max; with masks pixel AUROC pooled and as RAMFAE's mean per-image AUROC,
  AUPRO@0.3, pixel AP / F1-max; SCGAN / AFF-GAN also the residual-map-maximum image AUROC), the
  threshold and how it was chosen, training wall time (including compilation, feature extraction
  and clustering), steps, inference images/s (after compilation), peak host memory of the record's
  process, bank or parameter bytes, the data sizes and the exact method config;
* ``panels/<name>/<method>_seed<k>.png``: test images of both classes, each row labelled with its file,
  ground truth, score and the decision at the threshold named in the title: the 0.99 quantile of the
  held-out normal training images' scores, or for methods that normalise scores over the whole test
  set (SCGAN, AFF-GAN) and runs without held-out images the image F1-max of the test set;
* ``tables/<metric>.md`` and ``results.md``: per metric a table of categories x methods, mean ± sd
  over the seeds, the papers' numbers (MVTec AD) in a column beside the method;
* ``summary.png``: accuracy against inference speed (and training time) per method;
* ``logs/<name>/<method>_seed<k>.log``: each child's output.

``<name>`` is the category / product given, else ``--config.name``, else the data folder's name
(``jaxad.results.dataset_name``): never the reader's name (``folder``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import importlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

from absl import app, flags
from ml_collections import config_flags

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Preset, e.g. experiments/configs/benchmark_cpu.py; override its fields with "
    "--config.<field>=<value>.")
flags.DEFINE_string("out", None, "Output folder (records, panels, tables, summary, logs).")
flags.DEFINE_string("job", None, "Run one record described by this job file (written by the parent "
                    "run into <out>/jobs/); used by the parent, not by hand.")

DATASETS = ("mvtec", "btad", "folder", "elpv")
# The papers' MVTec AD numbers (fractions) beside our runs, from BUILD_NOTES.md's Papers table and
# method sections. PatchCore-style: the PatchCore column of the DFDA-AD paper (Tables 3-6).
PAPER = {
    "mvtec": {
        ("ramfae", "bottle"): {"pixel_auroc_per_image": 0.952},
        ("smcc", "bottle"): {"image_auroc": 1.0, "pixel_auroc": 0.988, "aupro": 0.956},
        ("dfdaad", "bottle"): {"image_auroc": 0.996, "pixel_auroc": 1.0, "aupro": 0.980,
                               "pixel_ap": 0.936},
        ("patchcore", "bottle"): {"pixel_auroc": 0.986, "aupro": 0.954, "pixel_ap": 0.768},
        ("scgan", "bottle"): {"image_auroc": 0.983},
        ("affgan", "bottle"): {"image_auroc": 1.0},
    },
}
# (key, title, scale, decimals) of the tables, in order; fractions are shown in percent.
METRIC_TABLES = (
    ("image_auroc", "Image AUROC (%)", 100.0, 1),
    ("image_auroc_map_max", "Image AUROC (%), image score = maximum of the residual map "
     "(SCGAN / AFF-GAN; their paper score is the table above)", 100.0, 1),
    ("pixel_auroc", "Pixel AUROC (%), all test pixels pooled (MVTec AD protocol)", 100.0, 1),
    ("pixel_auroc_per_image", "Pixel AUROC (%), mean of the per-image AUROCs of the defective "
     "test images (RAMFAE's protocol)", 100.0, 1),
    ("aupro", "AUPRO (%), FPR <= 0.3 (the papers' PRO)", 100.0, 1),
    ("image_ap", "Image AP (%)", 100.0, 1),
    ("pixel_ap", "Pixel AP (%)", 100.0, 1),
    ("image_f1_max", "Image F1-max (%)", 100.0, 1),
    ("pixel_f1_max", "Pixel F1-max (%)", 100.0, 1),
    ("train_s", "Training wall time (s): compilation, feature extraction, clustering and steps",
     1.0, 0),
    ("infer_images_per_s", "Inference images/s (batch of `infer_batch_size`, after compilation)",
     1.0, 1),
    ("peak_rss_mib", "Peak host memory (MiB): maximum resident set of the record's process "
     "(data, JAX runtime, model, evaluation)", 1.0, 0),
    ("model_mib", "Memory bank (SMCC, DFDA-AD, PatchCore-style) or parameters (the others), MiB",
     1.0, 2),
)
# Fields of a preset that change what a record computes (compared when a record is resumed).
_JOB_FIELDS = ("dataset", "data_dir", "data_kwargs", "max_train_images", "max_test_images",
               "data_seed", "val_fraction", "threshold_quantile", "num_panels", "panel_size",
               "timing_images", "infer_batch_size")


# ============================================================================= parent


def _split_list(value: Any) -> list[str]:
  """A comma-separated string (or a list / tuple) as a list of non-empty stripped strings."""
  if isinstance(value, (list, tuple)):
    return [str(v).strip() for v in value if str(v).strip()]
  return [v.strip() for v in str(value or "").split(",") if v.strip()]


def record_name(cfg: Any, category: str | None) -> str:
  """The results name of a category: the category / product, else ``cfg.name``, else the folder's."""
  from jaxad import results
  if category:
    return results.dataset_name(cfg.dataset, cfg.data_dir, category=category)
  if cfg.name:
    return results.dataset_name(cfg.dataset, None, category=cfg.name)
  return results.dataset_name(cfg.dataset, cfg.data_dir)


def make_jobs(cfg: Any, out: Path) -> list[dict[str, Any]]:
  """One job (a JSON-able dict) per selected (seed, category, method), seeds outermost.

  Raises:
    ValueError: unknown method, data set or bad settings.
  """
  if cfg.dataset not in DATASETS:
    raise ValueError(f"config.dataset must be one of {DATASETS}, got {cfg.dataset!r}")
  if cfg.dataset != "elpv" and not cfg.data_dir:
    raise ValueError(f"config.data_dir is required for dataset={cfg.dataset!r} "
                     "(--config.data_dir=path/to/data)")
  if cfg.data_dir and not Path(cfg.data_dir).is_dir():
    raise ValueError(f"config.data_dir={cfg.data_dir} is not a folder")
  methods = _split_list(cfg.methods)
  unknown = [m for m in methods if m not in cfg.specs]
  if not methods or unknown:
    raise ValueError(f"config.methods: unknown {unknown or 'none given'}; the preset defines "
                     f"{sorted(cfg.specs.keys())}")
  seeds = [int(s) for s in _split_list(cfg.seeds)]
  if not seeds or any(s < 0 for s in seeds):
    raise ValueError(f"config.seeds must be non-negative integers, got {cfg.seeds!r}")
  categories = _split_list(cfg.categories) or [None]
  if categories != [None] and cfg.dataset not in ("mvtec", "btad"):
    raise ValueError(f"config.categories applies to mvtec / btad, not {cfg.dataset!r}")
  if not 0.0 <= cfg.val_fraction < 1.0:
    raise ValueError(f"config.val_fraction must be in [0, 1), got {cfg.val_fraction}")
  if cfg.workers < 1:
    raise ValueError(f"config.workers must be >= 1, got {cfg.workers}")
  common = {k: (cfg[k].to_dict() if hasattr(cfg[k], "to_dict") else cfg[k]) for k in _JOB_FIELDS}
  if common["data_dir"]:
    common["data_dir"] = str(Path(common["data_dir"]).resolve())
  jobs = []
  for seed in seeds:
    for category in categories:
      name = record_name(cfg, category)
      for method in methods:
        spec = cfg.specs[method].to_dict()
        for key in ("image_size", "epochs", "minutes", "batch_size"):
          # A global override of every method's value; a method without training (epochs = 0 in
          # its spec: PatchCore-style) keeps its 0 epochs.
          if cfg[key] is not None and not (key == "epochs" and spec["epochs"] == 0):
            spec[key] = cfg[key]
        if cfg.image_size is not None:
          spec["crop_size"] = 0
        if spec["epochs"] < 0 or spec["minutes"] < 0 or spec["batch_size"] < 1:
          raise ValueError(f"config.specs.{method}: epochs, minutes must be >= 0 and batch_size "
                           f">= 1, got {spec}")
        jobs.append({"method": method, "category": category, "name": name, "seed": seed,
                     "spec": spec, **common,
                     "record": str(out / "records" / name / method / f"seed{seed}.json"),
                     "panels": str(out / "panels" / name / f"{method}_seed{seed}.png"),
                     "log": str(out / "logs" / name / f"{method}_seed{seed}.log"),
                     "workdir": str(out / "work" / name / method / f"seed{seed}"),
                     "cache_dir": str(out / "cache") if cfg.cache_dir is None else cfg.cache_dir})
  return jobs


def _job_key(job: dict[str, Any]) -> dict[str, Any]:
  """What must match for a finished record to stand for ``job``."""
  return {k: v for k, v in job.items() if k not in ("record", "panels", "log", "workdir", "cache_dir")}


def finished(job: dict[str, Any]) -> dict[str, Any] | None:
  """The record of ``job`` if it has finished with the same settings, else ``None``.

  Raises:
    ValueError: the record exists but was made with other settings.
  """
  path = Path(job["record"])
  if not path.is_file():
    return None
  record = json.loads(path.read_text())
  old, new = json.loads(json.dumps(record["job"])), json.loads(json.dumps(_job_key(job)))
  if old != new:
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise ValueError(f"{path} was made with other settings ({', '.join(diff)} differ): use another "
                     "--out, or delete that record to run it again")
  return record


def run_child(job: dict[str, Any], out: Path, compile_cache: bool) -> tuple[dict | None, str]:
  """Runs one record in a child process; returns ``(record or None, log tail)``."""
  jobs_dir = out / "jobs"
  jobs_dir.mkdir(parents=True, exist_ok=True)
  job_file = jobs_dir / f"{job['name']}_{job['method']}_seed{job['seed']}.json"
  job_file.write_text(json.dumps(job, indent=1) + "\n")
  env = dict(os.environ)
  if compile_cache:
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(out / "xla_cache"))
  log = Path(job["log"])
  log.parent.mkdir(parents=True, exist_ok=True)
  with open(log, "w") as f:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), f"--job={job_file}"],
                          stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT))
  tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
  if proc.returncode != 0 or not Path(job["record"]).is_file():
    return None, tail
  return json.loads(Path(job["record"]).read_text()), tail


def _summary_line(record: dict[str, Any]) -> str:
  v = record["values"]
  parts = [f"image AUROC {v['image_auroc']:.3f}"]
  for key, label in (("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO")):
    if key in v:
      parts.append(f"{label} {v[key]:.3f}")
  parts += [f"train {v['train_s']:.0f} s", f"{v['infer_images_per_s']:.1f} images/s",
            f"peak {v['peak_rss_mib']:.0f} MiB"]
  return ", ".join(parts)


def _changed_fields(spec: dict[str, Any]) -> str:
  """The spec's config fields that differ from its config file's defaults, as ``k=v`` text."""
  file, _, variant = spec["config_file"].partition(":")
  module = importlib.import_module(f"experiments.configs.{file}")
  defaults = (module.get_config(variant) if variant else module.get_config()).to_dict()
  norm = lambda v: list(v) if isinstance(v, tuple) else v
  changed = [f"{k}={v}" for k, v in spec["fields"].items() if norm(defaults.get(k)) != norm(v)]
  if spec.get("bank"):
    changed.append(f"bank={spec['bank']}")
  return ", ".join(changed)


def write_report(cfg: Any, out: Path, jobs: list[dict[str, Any]], command: str) -> Path:
  """Tables (``tables/*.md``, ``results.md``) and ``summary.png`` from the finished records."""
  import numpy as np
  from jaxad import report
  records = [r for r in (json.loads(Path(j["record"]).read_text()) for j in jobs
                         if Path(j["record"]).is_file())]
  methods = list(dict.fromkeys(j["method"] for j in jobs))
  names = list(dict.fromkeys(j["name"] for j in jobs))
  seeds = sorted({j["seed"] for j in jobs})
  paper = {}
  for (m, c), values in PAPER.get(cfg.dataset, {}).items():
    for key, value in values.items():
      paper.setdefault(key, {})[(m, c)] = value
  (out / "tables").mkdir(parents=True, exist_ok=True)
  blocks = []
  for key, title, scale, decimals in METRIC_TABLES:
    if not any(key in r["values"] for r in records):
      continue
    cols = [m for m in methods if any(key in r["values"] for r in records if r["method"] == m)]
    table = report.seed_table(records, key, methods=cols, categories=names,
                              paper=paper.get(key), scale=scale, decimals=decimals,
                              title=f"**{title}**")
    (out / "tables" / f"{key}.md").write_text(table)
    blocks.append(table)
  machine = records[0]["machine"] if records else "–"
  done = len(records)
  head = [f"# Method comparison: {', '.join(names)} ({cfg.dataset})", "",
          f"{done} of {len(jobs)} records (methods x categories x seeds {seeds}); cells are mean ± sd "
          "over the seeds (one seed: the value); `(paper)` columns are the papers' numbers.", "",
          f"Command: `{command}`", "", f"Machine: {machine}", ""]
  rows = ["| method | config | data | budget |", "| --- | --- | --- | --- |"]
  for m in methods:
    r = next((r for r in records if r["method"] == m), None)
    if r is None:
      continue
    budget = f"{r['steps']} steps ({r['epochs']} epochs of batch {r['spec']['batch_size']})"
    if r["spec"]["minutes"]:
      budget += f", at most {r['spec']['minutes']} min"
    size = r["data"]["image_shape"]
    rows.append(f"| {m} | `{r['spec']['config_file']}` {_changed_fields(r['spec'])} | "
                f"{size[0]}x{size[1]}, {r['data']['train_images']} train / {r['data']['val_images']} "
                f"held out / {r['data']['test_images']} test | {budget} |")
  panels = [f"- {m}: " + ", ".join(f"[{n}](panels/{n}/{m}_seed{seeds[0]}.png)" for n in names)
            for m in methods]
  text = "\n".join(head + rows + [""] + blocks + ["Heatmap panels (first seed):", ""] + panels
                   + ["", "Summary: ![summary](summary.png)", ""])
  (out / "results.md").write_text(text)

  def mean_of(m: str, key: str) -> float:
    vals = [r["values"][key] for r in records if r["method"] == m and key in r["values"]]
    return float(np.mean(vals)) if vals else float("nan")

  plots = [{"points": [(m, mean_of(m, "infer_images_per_s"), mean_of(m, "image_auroc")) for m in methods],
            "xlabel": "inference images/s (log)", "ylabel": "image AUROC", "log_x": True}]
  if any("pixel_auroc" in r["values"] for r in records):
    plots.append({"points": [(m, mean_of(m, "infer_images_per_s"), mean_of(m, "pixel_auroc"))
                             for m in methods],
                  "xlabel": "inference images/s (log)", "ylabel": "pixel AUROC", "log_x": True})
  plots.append({"points": [(m, mean_of(m, "train_s"), mean_of(m, "image_auroc")) for m in methods],
                "xlabel": "training wall time s (log)", "ylabel": "image AUROC", "log_x": True})
  if records:
    report.save_scatter(out / "summary.png", plots,
                        title=f"{', '.join(names)}: mean over {len(seeds)} seed(s) and the categories")
  return out / "results.md"


def run_parent(cfg: Any, out: Path, command: str) -> int:
  """Runs every unfinished record, then writes the report; returns the number of failed records."""
  try:
    jobs = make_jobs(cfg, out)
    todo = [j for j in jobs if finished(j) is None]
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  out.mkdir(parents=True, exist_ok=True)
  print(f"{len(jobs)} records, {len(jobs) - len(todo)} finished earlier, {len(todo)} to run "
        f"({cfg.workers} at a time); logs in {out / 'logs'}", flush=True)
  failed = []
  t0 = time.perf_counter()

  def one(job: dict[str, Any]) -> tuple[dict[str, Any], dict | None, str, float]:
    t = time.perf_counter()
    record, tail = run_child(job, out, cfg.compile_cache)
    return job, record, tail, time.perf_counter() - t

  pool = concurrent.futures.ThreadPoolExecutor(cfg.workers)
  try:
    futures = [pool.submit(one, job) for job in todo]
    for k, future in enumerate(concurrent.futures.as_completed(futures), 1):
      job, record, tail, wall = future.result()
      what = f"[{k}/{len(todo)}] {job['method']} on {job['name']}, seed {job['seed']}"
      if record is None:
        failed.append(job)
        print(f"{what}: FAILED after {wall:.0f} s; log {job['log']}:\n{tail}", flush=True)
      else:
        print(f"{what}: {_summary_line(record)} ({wall:.0f} s)", flush=True)
  finally:  # interrupted: start no further record (a running child finishes or dies with it)
    pool.shutdown(wait=False, cancel_futures=True)
  path = write_report(cfg, out, jobs, command)
  print(f"wrote {path}, {out / 'tables'}, {out / 'summary.png'}, {out / 'panels'} "
        f"({time.perf_counter() - t0:.0f} s)")
  print((out / "tables" / "image_auroc.md").read_text() if (out / "tables" / "image_auroc.md").is_file() else "")
  return len(failed)


# ============================================================================= child (one record)


def _subset(split: Any, idx: Any) -> Any:
  """Rows ``idx`` (sorted) of an ArraySplit."""
  import numpy as np
  idx = np.sort(np.asarray(idx))
  return dataclasses.replace(split, images=split.images[idx], masks=split.masks[idx],
                             labels=split.labels[idx], names=tuple(split.names[i] for i in idx),
                             defect_types=tuple(split.defect_types[i] for i in idx))


def load_data(job: dict[str, Any], config: Any) -> tuple[Any, Any, Any]:
  """``(train, held-out normal images or None, test)`` of a job at its method's image size.

  The held-out images and the subsets (``max_train_images``, a class-balanced ``max_test_images``)
  depend on ``data_seed`` only, so every method and seed sees the same images.
  """
  import numpy as np
  from jaxad import data
  spec = job["spec"]
  kw: dict[str, Any] = dict(job["data_kwargs"] or {})
  kw["image_size"] = spec["image_size"]
  if spec.get("crop_size"):
    kw["crop_size"] = spec["crop_size"]
  kw["channels"] = getattr(config, "channels", 3)
  if job["cache_dir"]:
    kw["cache_dir"] = job["cache_dir"]
  root, category = job["data_dir"], job["category"]
  if category and root and not (Path(root) / category).is_dir() and Path(root).name == category:
    category = None  # data_dir is the category folder itself
  if category:
    kw["category" if job["dataset"] == "mvtec" else "product"] = category
  if job["dataset"] == "elpv":
    kw.setdefault("seed", job["data_seed"])
  train = data.load(job["dataset"], root, "train", **kw)
  test = data.load(job["dataset"], root, "test", **kw)
  rng = np.random.default_rng(job["data_seed"])
  if job["max_train_images"] and len(train) > job["max_train_images"]:
    train = _subset(train, rng.permutation(len(train))[:job["max_train_images"]])
  if job["max_test_images"] and len(test) > job["max_test_images"]:
    half = job["max_test_images"] // 2
    normal, anomalous = np.flatnonzero(test.labels == 0), np.flatnonzero(test.labels == 1)
    test = _subset(test, np.r_[rng.permutation(normal)[:half], rng.permutation(anomalous)[:half]])
  val = None
  if job["val_fraction"] > 0:
    train, val = data.train_val_split(train, job["val_fraction"], seed=job["data_seed"])
  return train, val, test


def method_config(job: dict[str, Any]) -> tuple[types.ModuleType, Any]:
  """The method module and its ``Config`` of a job: the method's config file
  (``experiments/configs/<file>.py[:variant]``), the spec's ``fields`` and the model image size."""
  from experiments import configs
  from jaxad import models
  spec = job["spec"]
  file, _, variant = spec["config_file"].partition(":")
  module = importlib.import_module(f"experiments.configs.{file}")
  cd = module.get_config(variant) if variant else module.get_config()
  for key, value in (spec.get("fields") or {}).items():
    if value is not None:
      cd[key] = tuple(value) if isinstance(value, list) else value
  cd.image_size = spec.get("crop_size") or spec["image_size"]
  method = models.get(cd.method)
  config = configs.to_method_config(method, cd)
  if spec.get("bank") == "greedy_coreset":
    method = patchcore_method()
  return method, config


def _patchcore_prepare(config: Any, run: Any, key: Any, state: Any, batches: Any) -> Any:
  """PatchCore-style bank: every training patch (SMCC's features), greedy k-center coreset of
  ``coreset_rate`` on a 128-d random projection; scored by ``knn_k``-NN (1 for PatchCore)."""
  import numpy as np
  from jaxad import cluster
  from jaxad.models import smcc
  x = smcc.extract_patches(config, state, batches(), desc="patchcore features")
  m = max(config.knn_k, int(round(config.coreset_rate * x.shape[0])))
  core = cluster.greedy_coreset(key, x, m, projection_dim=128)
  return smcc.with_bank(config, state, x[np.asarray(core.indices)])


_PATCHCORE: list[types.ModuleType] = []  # one module per process (jit caches key on it)


def patchcore_method() -> types.ModuleType:
  """The PatchCore-style baseline as a method module: SMCC's ``Config``, features and scoring,
  with :func:`_patchcore_prepare` as its ``prepare`` and no training steps (``epochs = 0``)."""
  if not _PATCHCORE:
    from jaxad.models import smcc
    module = types.ModuleType("patchcore", "SMCC's features and scoring with a PatchCore-style bank")
    module.__dict__.update({a: getattr(smcc, a) for a in ("Config", "init", "train_step", "predict",
                                                          "memory_bytes")})
    module.NAME = "patchcore"
    module.prepare = _patchcore_prepare
    _PATCHCORE.append(module)
  return _PATCHCORE[0]


def _without_normalize(method: types.ModuleType) -> types.ModuleType:
  """``method`` without its test-set ``normalize`` hook: ``predict_dataset`` returns raw outputs."""
  module = types.ModuleType(f"{method.__name__}_raw")
  module.__dict__.update({a: getattr(method, a) for a in ("NAME", "Config", "init", "train_step",
                                                          "predict") if hasattr(method, a)})
  return module


def fit(method: Any, config: Any, train: Any, job: dict[str, Any], mesh: Any) -> tuple[Any, int, int]:
  """Trains through the engine for the spec's epochs, or until its ``minutes`` run out.

  With ``minutes > 0`` the run length (schedules) stays ``epochs`` and training stops near the
  last step that fits in the time (the engine's time-boxed ``max_steps``): one step (with
  ``prepare`` and compilation), four steps to time one, then chunks of as many steps as the measured
  time per step leaves room for, each resuming from the checkpoint in the job's workdir (deleted
  afterwards).

  Returns:
    ``(state, steps run, steps per epoch)``.
  """
  from jaxad.train import loop
  spec = job["spec"]
  kw = dict(seed=job["seed"], epochs=spec["epochs"], batch_size=spec["batch_size"], mesh=mesh)
  if not spec["minutes"]:
    res = loop.fit(method, config, train, **kw)
    return res.state, len(res.history), res.run.steps_per_epoch
  t0, budget, wd = time.perf_counter(), 60.0 * spec["minutes"], Path(job["workdir"])
  shutil.rmtree(wd, ignore_errors=True)
  res = loop.fit(method, config, train, workdir=wd, max_steps=1, **kw)
  total, done, chunk = res.run.total_steps, min(1, res.run.total_steps), 4
  for _ in range(6):  # chunks sized by the measured time per step (restarts included)
    left = budget - (time.perf_counter() - t0)
    if done >= total or chunk < 1 or left <= 0:
      break
    t1, target = time.perf_counter(), min(total, done + chunk)
    res = loop.fit(method, config, train, workdir=wd, max_steps=target, **kw)
    per_step = (time.perf_counter() - t1) / (target - done)
    done = target
    chunk = int((budget - (time.perf_counter() - t0)) / per_step)
  shutil.rmtree(wd, ignore_errors=True)
  return res.state, done, res.run.steps_per_epoch


def model_bytes(method: Any, state: Any) -> tuple[int, int | None]:
  """``(bytes held at test time, bank bytes or None)``: ``memory_bytes`` of memory-bank methods,
  else the bytes of every network's parameters and batch statistics (no optimiser state)."""
  import jax
  import numpy as np
  if hasattr(method, "memory_bytes"):
    mb = method.memory_bytes(state)
    return int(mb["total"]), int(mb["bank"])
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    names = [getattr(k, "name", getattr(k, "key", None)) for k in path]
    if "opt_state" not in names and ("params" in names or "batch_stats" in names):
      total += int(np.prod(leaf.shape)) * leaf.dtype.itemsize
  return total, None


def machine_line() -> str:
  """One line: CPU, cores, RAM, jax version and backend of this machine."""
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  try:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  except (ValueError, OSError):
    ram = float("nan")
  return (f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM, jax {jax.__version__} "
          f"({jax.default_backend()} x {jax.device_count()})")


def run_job(job: dict[str, Any]) -> dict[str, Any]:
  """Trains and evaluates one record; writes its JSON and panels; returns the record."""
  from jaxad.progress import log
  from jaxad.train import host_memory
  log(host_memory.apply_host_buffers("auto"))  # as train.py; before JAX's first computation
  import jax
  import numpy as np
  import jaxad
  from jaxad import metrics, report
  from jaxad.train import calibrate, run_files
  from jaxad.train.mesh import make_mesh
  from jaxad.train.predict import predict_dataset

  method, config = method_config(job)
  train, val, test = load_data(job, config)
  log("%s on %s, seed %d: %d training images %s, %d held out, %d test", job["method"], job["name"],
      job["seed"], len(train), tuple(train.images.shape[1:]), 0 if val is None else len(val),
      len(test))
  mesh = make_mesh()
  t0 = time.perf_counter()
  state, steps, steps_per_epoch = fit(method, config, train, job, mesh)
  jax.block_until_ready(state)
  train_s = time.perf_counter() - t0

  ibs = job["infer_batch_size"]
  normalizes = hasattr(method, "normalize")
  raw_method = _without_normalize(method) if normalizes else method
  t0 = time.perf_counter()
  outputs, maps = predict_dataset(raw_method, config, state, test.images, batch_size=ibs, mesh=mesh)
  predict_s = time.perf_counter() - t0
  n_time = min(len(test), max(1, job["timing_images"]))
  t0 = time.perf_counter()
  predict_dataset(raw_method, config, state, test.images[:n_time], batch_size=ibs, mesh=mesh,
                  desc="timing")
  infer_ips = n_time / (time.perf_counter() - t0)
  extra = {}
  if normalizes:
    scores, maps = method.normalize(config, outputs, maps)
    if getattr(config, "image_score", "map_max") != "map_max":
      alt = dataclasses.replace(config, image_score="map_max")
      extra["image_auroc_map_max"] = metrics.auroc(test.labels, method.normalize(alt, outputs, maps)[0])
  else:
    scores = outputs
  scores, maps = np.asarray(scores, np.float32), np.asarray(maps, np.float32)
  has_masks = bool(getattr(test, "has_masks", True))
  values = metrics.evaluate(test.labels, scores, test.masks if has_masks else None,
                            maps if has_masks else None)
  values.update(extra)

  threshold, rule = None, report.TEST_F1_RULE
  if normalizes:
    threshold = report.f1_threshold(test.labels, scores)
    rule = f"{report.TEST_F1_RULE} (scores min-max normalised over the test set)"
  elif val is not None:
    q = job["threshold_quantile"]
    threshold = calibrate.calibrate_run(method, config, state, val.images, batch_size=ibs,
                                        quantile=q).threshold
    rule = f"{q:g} quantile of {len(val)} held-out normal training images' scores"
  if threshold is None:
    threshold = report.f1_threshold(test.labels, scores)
  if job["num_panels"]:
    report.save_test_panels(job["panels"], test.images, scores, maps, labels=test.labels,
                            names=test.names, masks=test.masks if has_masks else None,
                            title=f"{job['method']} on {job['name']}, seed {job['seed']}",
                            threshold=threshold, threshold_rule=rule, num_panels=job["num_panels"],
                            method=method, config=config, state=state,
                            display_size=job["panel_size"] or None)
  total_bytes, bank_bytes = model_bytes(method, state)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
  values.update({"train_s": train_s, "infer_images_per_s": infer_ips, "predict_s": predict_s,
                 "peak_rss_mib": peak / 2**20, "model_mib": (bank_bytes if bank_bytes is not None
                                                             else total_bytes) / 2**20})
  record = {"method": job["method"], "category": job["name"], "dataset": job["dataset"],
            "seed": job["seed"], "values": values,
            "threshold": {"value": threshold, "rule": rule},
            "steps": steps, "epochs": steps / steps_per_epoch if steps_per_epoch else 0,
            "peak_rss_bytes": peak, "model_bytes": total_bytes, "bank_bytes": bank_bytes,
            "data": {"train_images": len(train), "val_images": 0 if val is None else len(val),
                     "test_images": len(test), "image_shape": list(train.images.shape[1:])},
            "spec": job["spec"], "registry_method": getattr(method, "NAME", job["method"]),
            "config": run_files.config_to_dict(config), "job": _job_key(job),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_line(), "jaxad_version": jaxad.__version__}
  path = Path(job["record"])
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(record, indent=1, default=float) + "\n")
  tmp.replace(path)  # atomic: a killed child leaves no half record
  log("record %s", path)
  return record


# ============================================================================= entry


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; an override of a field the preset lacks is a one-line error."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"FATAL Flags parsing error: {e}")
  except (AttributeError, KeyError) as e:  # config_flags: a field the preset lacks
    sys.exit(f"FATAL Flags parsing error: --config has no field {e}; see the preset file")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.job:
    run_job(json.loads(Path(FLAGS.job).read_text()))
    return
  if _CONFIG.value is None or not FLAGS.out:
    raise app.UsageError("--config (a preset, e.g. experiments/configs/benchmark_cpu.py) and --out "
                         "are required")
  command = " ".join(["python", os.path.relpath(sys.argv[0], REPO_ROOT)] + sys.argv[1:])
  if run_parent(_CONFIG.value, Path(FLAGS.out), command):
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
