"""The generic training loop: any registered method, any number of devices/hosts.

:func:`fit` runs ``method.train_step`` over epochs of a data set with the state
replicated and the batch sharded over a 1-D ``"data"`` mesh (``jax.jit`` with
``NamedSharding``; see :mod:`jaxad.train.mesh`), checkpoints with Orbax,
resumes bit-for-bit, logs metrics as JSON lines and reports progress.

Determinism: everything derives from ``seed`` (see :mod:`jaxad.train.rng`):
``init`` gets ``fold_in(key(seed), INIT)``; step ``s`` gets
``step_key(state)`` = ``fold_in(fold_in(state.key, s), 0)``; the order of
epoch ``e`` is a permutation seeded by (``data_seed(seed)``, ``e``). Batches are
the permutation cut into consecutive global batches (remainder dropped); each
process takes its contiguous slice of every global batch. A run resumed from a
checkpoint at step ``s`` skips the first ``s mod steps_per_epoch`` batches of
its epoch and therefore sees exactly the batches and keys of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import numpy as np

from jaxad.progress import Progress, log
from jaxad.train import compile as xla_compile
from jaxad.train import rng
from jaxad.train.checkpoint import Checkpointer, CheckpointMismatchError
from jaxad.train.mesh import (check_batch_size, data_sharding, make_mesh, replicate,
                              replicated_sharding, shard_batch, to_host)
from jaxad.train.state import step_key

__all__ = ["FitResult", "fit", "make_train_step", "make_predict", "predict_dataset",
           "epoch_batches", "as_arrays", "resolve_method", "method_name", "config_to_dict",
           "init_state", "restore_state", "config_from_dict", "with_run_length", "RUN_FILE",
           "METRICS_FILE"]

PyTree = Any
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


@dataclasses.dataclass
class FitResult:
  """What :func:`fit` returns.

  Attributes:
    state: the final train state (replicated over the mesh).
    history: one dict per step run in this call: ``step`` (after the update),
      ``epoch`` and the method's metrics as Python floats.
    steps_per_epoch: number of global batches per epoch.
    start_step: the step the run started (or resumed) from.
  """
  state: PyTree
  history: list[dict[str, float]]
  steps_per_epoch: int
  start_step: int


# ----------------------------------------------------------------------------- methods


def resolve_method(method: str | ModuleType) -> ModuleType:
  """Returns the method module for a registry name or a module."""
  if isinstance(method, str):
    models = importlib.import_module("jaxad.models")
    return models.get(method)
  for attr in ("Config", "init", "train_step", "predict"):
    if not hasattr(method, attr):
      raise TypeError(f"method {getattr(method, '__name__', method)!r} lacks `{attr}`; a method "
                      "module must define Config, init, train_step and predict")
  return method


def method_name(method: ModuleType) -> str:
  """The registry name of a method module (last component of its module name)."""
  return getattr(method, "NAME", method.__name__.rsplit(".", 1)[-1])


def config_to_dict(config: Any) -> dict[str, Any]:
  """A JSON-compatible dict of a (frozen dataclass) config."""
  if dataclasses.is_dataclass(config):
    raw = dataclasses.asdict(config)
  elif isinstance(config, dict):
    raw = dict(config)
  else:
    raise TypeError(f"config must be a dataclass instance or dict, got {type(config).__name__}")
  return json.loads(json.dumps(raw, default=str))


# ----------------------------------------------------------------------------- data


def as_arrays(data: Any) -> dict[str, np.ndarray]:
  """Normalises training data to a dict with ``image`` (and ``label``) numpy arrays.

  Args:
    data: an ``ArraySplit``-like object (``.images``, optional ``.labels``), a
      dict with ``image``/``images``, or an array ``[N, H, W, C]``.
  Returns:
    ``{"image": float32 [N,H,W,C], "label": int32 [N]}``.
  """
  if isinstance(data, dict):
    images = data.get("image", data.get("images"))
    labels = data.get("label", data.get("labels"))
  elif hasattr(data, "images"):
    images, labels = data.images, getattr(data, "labels", None)
  else:
    images, labels = data, None
  if images is None:
    raise ValueError("train data has no images (expected .images, ['image'] or an array)")
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"train images must be [N, H, W, C], got shape {images.shape}")
  if images.dtype != np.float32:
    raise TypeError(f"train images must be float32 in [0, 1], got dtype {images.dtype}")
  n = images.shape[0]
  labels = np.zeros((n,), np.int32) if labels is None else np.asarray(labels, np.int32)
  if labels.shape != (n,):
    raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
  return {"image": images, "label": labels}


def epoch_batches(data: dict[str, np.ndarray], batch_size: int, *, seed: int, epoch: int,
                  start: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of every global batch of one epoch (remainder dropped).

  Args:
    data: from :func:`as_arrays`.
    batch_size: global batch size (divisible by ``process_count``).
    seed: data-order seed (:func:`jaxad.train.rng.data_seed`).
    epoch: epoch index; the order depends on (seed, epoch) only.
    start: index of the first global batch to yield (for resuming).
    process_index, process_count: this process and the number of processes.
  Yields:
    Batch dicts (``image``, ``mask`` zeros, ``label``, ``valid`` True) of
    ``batch_size // process_count`` rows.
  """
  if batch_size % process_count:
    raise ValueError(f"batch_size={batch_size} must be divisible by process_count={process_count}")
  n = data["image"].shape[0]
  perm = rng.epoch_permutation(n, seed, epoch)
  local = batch_size // process_count
  for b in range(start, n // batch_size):
    idx = perm[b * batch_size + process_index * local: b * batch_size + (process_index + 1) * local]
    images = data["image"][idx]
    yield {"image": images,
           "mask": np.zeros(images.shape[:3], np.float32),
           "label": data["label"][idx],
           "valid": np.ones((local,), bool)}


# ----------------------------------------------------------------------------- steps


@functools.lru_cache(maxsize=32)
def make_train_step(method: ModuleType, mesh: jax.sharding.Mesh) -> Callable[..., Any]:
  """``method.train_step`` jitted for ``mesh``: state replicated, batch sharded.

  The returned function maps ``(state, batch) -> (state, metrics)`` and passes
  ``key = step_key(state)`` to the method. Cached per (method, mesh), so
  repeated :func:`fit` calls reuse compiled steps. Compiled with
  :func:`jaxad.train.compile.step_options` (XLA:CPU convolution tuning on CPU).
  """
  repl, data = replicated_sharding(mesh), data_sharding(mesh)

  def step(state: PyTree, batch: dict[str, jax.Array]) -> tuple[PyTree, dict[str, jax.Array]]:
    return method.train_step(state, batch, step_key(state))

  donate = (0,) if jax.default_backend() != "cpu" else ()
  return xla_compile.jit(step, in_shardings=(repl, data), out_shardings=(repl, repl),
                         donate_argnums=donate)


@functools.lru_cache(maxsize=32)
def make_predict(method: ModuleType, mesh: jax.sharding.Mesh) -> Callable[..., Any]:
  """``method.predict`` jitted for ``mesh``: images sharded, outputs sharded."""
  repl, data = replicated_sharding(mesh), data_sharding(mesh)
  return xla_compile.jit(method.predict, in_shardings=(repl, data), out_shardings=(data, data))


def predict_dataset(method: str | ModuleType, state: PyTree, images: np.ndarray, *,
                    batch_size: int = 32, mesh: jax.sharding.Mesh | None = None,
                    desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
  """Scores and maps for all ``images`` (single-process), padding the last batch.

  Args:
    method: registry name or module.
    state: a train state replicated on ``mesh``.
    images: float32 ``[N, H, W, C]`` in [0, 1].
    batch_size: images per call (rounded up to a multiple of the device count).
    mesh: 1-D data mesh (all local devices when ``None``).
  Returns:
    ``scores [N]`` and ``maps [N, H, W]`` as numpy float32.
  """
  method = resolve_method(method)
  mesh = make_mesh() if mesh is None else mesh
  if jax.process_count() > 1:
    raise NotImplementedError("predict_dataset runs in a single process; evaluate on one host")
  images = np.asarray(images, np.float32)
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
  n_dev = mesh.devices.size
  batch_size = -(-batch_size // n_dev) * n_dev
  fn = make_predict(method, mesh)
  scores, maps = [], []
  starts = range(0, images.shape[0], batch_size)
  with Progress(total=len(starts), desc=desc, unit="batch") as bar:
    for s in starts:
      chunk = images[s:s + batch_size]
      pad = batch_size - chunk.shape[0]
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      sc, mp = fn(state, jax.device_put(chunk, data_sharding(mesh)))
      scores.append(np.asarray(sc)[:batch_size - pad])
      maps.append(np.asarray(mp)[:batch_size - pad])
      bar.update(1)
  return np.concatenate(scores).astype(np.float32), np.concatenate(maps).astype(np.float32)


# ----------------------------------------------------------------------------- state


def init_state(method: ModuleType, config: Any, example_batch: dict[str, np.ndarray], *,
               seed: int, mesh: jax.sharding.Mesh) -> PyTree:
  """``method.init`` with the seed's INIT stream, replicated on ``mesh``."""
  example = {k: np.asarray(v) for k, v in example_batch.items()}
  state = method.init(rng.stream(seed, rng.INIT), config, example)
  for attr in ("step", "key"):
    if not hasattr(state, attr):
      raise TypeError(f"{method_name(method)}.init must return a state with `{attr}`, got "
                      f"{type(state).__name__}")
  return replicate(state, mesh)


def restore_state(method: str | ModuleType, workdir: str | Path, *,
                  mesh: jax.sharding.Mesh | None = None, step: int | None = None) -> tuple[PyTree, dict]:
  """Rebuilds a run's state from ``workdir`` (its ``run.json`` and latest checkpoint).

  Returns:
    ``(state, run_info)``; ``run_info`` is the content of ``run.json``
    (``config`` holds the method's config as a dict).
  """
  method = resolve_method(method)
  workdir = Path(workdir)
  run_file = workdir / RUN_FILE
  if not run_file.is_file():
    raise FileNotFoundError(f"{run_file} not found: {workdir} is not a jaxad training workdir "
                            "(train with experiments/train.py --workdir=... first)")
  info = json.loads(run_file.read_text())
  if info["method"] != method_name(method):
    raise CheckpointMismatchError(f"workdir {workdir} was trained with method "
                                  f"{info['method']!r}, not {method_name(method)!r}")
  config = config_from_dict(method, info["config"])
  mesh = make_mesh() if mesh is None else mesh
  shape = tuple(info["image_shape"])
  example = {"image": np.zeros((1,) + shape, np.float32), "mask": np.zeros((1,) + shape[:2], np.float32),
             "label": np.zeros((1,), np.int32), "valid": np.ones((1,), bool)}
  template = init_state(method, config, example, seed=info["seed"], mesh=mesh)
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    state = ckpt.restore(template, step=step)
  finally:
    ckpt.close()
  return state, info


def config_from_dict(method: ModuleType, values: dict[str, Any]) -> Any:
  """Builds ``method.Config`` from a dict (JSON lists become tuples where the default is a tuple)."""
  fields = {f.name: f for f in dataclasses.fields(method.Config)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"{method_name(method)}.Config has no field(s) {unknown}")
  defaults = method.Config()
  kwargs = {}
  for name, value in values.items():
    if isinstance(getattr(defaults, name), tuple) and isinstance(value, list):
      value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    kwargs[name] = value
  return method.Config(**kwargs)


def _check_config_fits(config: Any, image_shape: tuple[int, ...]) -> None:
  size = getattr(config, "image_size", None)
  channels = getattr(config, "channels", None)
  if size is not None and tuple(image_shape[:2]) != (size, size):
    raise ValueError(f"config.image_size={size} but the training images are "
                     f"{image_shape[0]}x{image_shape[1]}; resize the data or change image_size")
  if channels is not None and image_shape[2] != channels:
    raise ValueError(f"config.channels={channels} but the training images have "
                     f"{image_shape[2]} channels")


def _check_run_info(workdir: Path, new: dict[str, Any]) -> None:
  path = workdir / RUN_FILE
  if not path.is_file():
    return
  old = json.loads(path.read_text())
  diffs = [k for k in ("method", "config", "seed", "batch_size", "image_shape")
           if old.get(k) != new.get(k)]
  if diffs:
    detail = "; ".join(f"{k}: saved {old.get(k)!r}, now {new.get(k)!r}" for k in diffs)
    raise CheckpointMismatchError(
        f"workdir {workdir} holds a run that is incompatible with this one ({detail}). "
        "Use a fresh --workdir, or resume with the saved settings.")


def _write_atomic(path: Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)  # other processes never read a half-written file


def _truncate_metrics(path: Path, start_step: int) -> None:
  """Drops metric lines after ``start_step`` (logged after the checkpoint a run resumes from)."""
  if not path.is_file():
    return
  lines = path.read_text().splitlines()
  keep = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= start_step]
  if len(keep) != len(lines):
    _write_atomic(path, "".join(line + "\n" for line in keep))


# ----------------------------------------------------------------------------- fit


def fit(method: str | ModuleType, config: Any, train_data: Any, *, seed: int = 0,
        epochs: int = 1, batch_size: int = 16, workdir: str | Path | None = None,
        mesh: jax.sharding.Mesh | None = None, save_every: int | None = None, keep: int = 3,
        resume: bool = True, max_steps: int | None = None, log_every: int = 10,
        show_progress: bool | None = None,
        extra_info: dict[str, Any] | None = None) -> FitResult:
  """Trains ``method`` on ``train_data`` with data parallelism over ``mesh``.

  Gradient methods: ``epochs * (N // batch_size)`` calls of ``method.train_step``.
  Memory-bank methods (modules that define ``fit``, e.g. SMCC): one call of
  ``method.fit(key, state, batches, mesh=mesh, history=history)`` with the ``FIT``
  key stream and ``batches(epoch)`` in the engine's seeded order; the method's
  config sets its own passes over the data, the fitted state is checkpointed once
  and a resumed run restores it without refitting. A config field ``decay_steps``
  left at ``None`` is set to the run length (:func:`with_run_length`).

  Args:
    method: registry name (``"conv_ae"``) or method module.
    config: the method's ``Config``.
    train_data: ``ArraySplit``-like, dict or array of float32 images
      ``[N, H, W, C]`` in [0, 1]; in a multi-process job every process passes
      the same (full) data and reads only its rows of each batch.
    seed: the one seed of the run (init, data order, per-step keys).
    epochs: passes over the data (>= 1); steps = epochs * (N // batch_size).
      Must be 1 for methods with ``fit`` (their config sets the passes).
    batch_size: global batch size, divisible by the number of devices.
    workdir: where ``run.json``, ``metrics.jsonl`` and ``checkpoints/`` go;
      ``None`` trains without writing anything.
    mesh: 1-D ``"data"`` mesh; all devices (of all processes) when ``None``.
    save_every: checkpoint every this many steps (plus always at the end).
    keep: number of checkpoints kept.
    resume: continue from the latest checkpoint in ``workdir`` if there is one.
    max_steps: stop after this global step (e.g. a time-boxed or interrupted run);
      not supported for methods with ``fit``.
    log_every: steps between metric flushes (JSON lines, progress postfix).
    show_progress: ``None`` auto (bar on a TTY), ``False`` quiet.
    extra_info: more JSON-able fields to store in ``run.json``.
  Returns:
    :class:`FitResult` with the final state and the per-step metric history.
  Raises:
    ValueError: bad arguments (batch size not divisible by the devices, too
      few images, config not matching the images ...).
    CheckpointMismatchError: ``workdir`` holds an incompatible run.
  """
  method = resolve_method(method)
  if not isinstance(config, method.Config):
    raise TypeError(f"config must be {method.__name__}.Config, got {type(config).__name__}")
  if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
    raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
  if log_every < 1:
    raise ValueError(f"log_every must be >= 1, got {log_every}")
  if max_steps is not None and max_steps < 0:
    raise ValueError(f"max_steps must be >= 0 or None, got {max_steps}")
  mesh = make_mesh() if mesh is None else mesh
  local_bs = check_batch_size(batch_size, mesh)
  data = as_arrays(train_data)
  n = data["image"].shape[0]
  steps_per_epoch = n // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"batch_size={batch_size} is larger than the number of training images ({n})")
  _check_config_fits(config, data["image"].shape[1:])
  uses_fit = hasattr(method, "fit")
  if uses_fit and epochs != 1:
    raise ValueError(f"{method_name(method)} trains with its own `fit` (memory bank); its passes "
                     f"over the data are set by its config (e.g. `epochs` in the config: "
                     f"--set epochs=W), not by fit(epochs={epochs})")
  if uses_fit and max_steps is not None:
    raise ValueError(f"max_steps is not supported for {method_name(method)}, which trains with "
                     "its own `fit` in one call")
  total_steps = epochs * steps_per_epoch
  config = with_run_length(config, total_steps)
  if max_steps is not None:
    total_steps = min(total_steps, max_steps)
  pid, pcount = jax.process_index(), jax.process_count()
  dseed = rng.data_seed(seed)
  is_chief = pid == 0

  info = {"method": method_name(method), "config": config_to_dict(config), "seed": int(seed),
          "batch_size": int(batch_size), "image_shape": list(data["image"].shape[1:]),
          "epochs": int(epochs), "steps_per_epoch": steps_per_epoch, "num_devices": mesh.devices.size,
          "process_count": pcount, "jax_version": jax.__version__, **(extra_info or {})}

  if workdir is not None:
    workdir = Path(workdir).resolve()
    if workdir.exists() and not workdir.is_dir():
      raise ValueError(f"workdir {workdir} exists and is not a directory")
    _check_run_info(workdir, info)  # Before init: an incompatible workdir fails fast.

  example = next(epoch_batches(data, batch_size, seed=dseed, epoch=0, process_index=pid,
                               process_count=pcount))
  state = init_state(method, config, example, seed=seed, mesh=mesh)

  ckpt = None
  if workdir is not None:
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(workdir, save_every=save_every, keep=keep)
    if is_chief:
      _write_atomic(workdir / RUN_FILE, json.dumps(info, indent=2) + "\n")
    latest = ckpt.latest_step()
    if not resume and latest is not None:
      ckpt.close()
      raise CheckpointMismatchError(
          f"workdir {workdir} already holds checkpoints (latest step {latest}) and "
          "resume=False; use a fresh workdir or resume")
    if resume and ckpt.latest_step() is not None:
      state = ckpt.restore(state)
      log("resumed %s from step %d", workdir, ckpt.latest_step())
      if uses_fit:
        ckpt.close()
        log("%s: the checkpoint holds the fitted state; nothing to train", method_name(method))
        return FitResult(state=state, history=[], steps_per_epoch=steps_per_epoch,
                         start_step=int(to_host(state.step)))
  start_step = int(to_host(state.step))
  if workdir is not None and is_chief:
    _truncate_metrics(workdir / METRICS_FILE, start_step)

  if uses_fit:
    return _fit_memory_bank(method, state, data, seed=seed, batch_size=batch_size, mesh=mesh,
                            ckpt=ckpt, workdir=workdir if is_chief else None,
                            steps_per_epoch=steps_per_epoch, start_step=start_step)

  train_step = make_train_step(method, mesh)
  history: list[dict[str, float]] = []
  pending: list[tuple[int, int, dict[str, jax.Array]]] = []
  metrics_file = (workdir / METRICS_FILE).open("a") if (workdir is not None and is_chief) else None
  bar = Progress(total=max(total_steps - start_step, 0), desc=f"train {method_name(method)}",
                 unit="step", enabled=show_progress)
  last_time, last_count = time.perf_counter(), 0

  def flush() -> None:
    nonlocal last_time, last_count
    if not pending:
      return
    host = to_host([m for _, _, m in pending])
    now = time.perf_counter()
    ips = len(pending) * batch_size / max(now - last_time, 1e-9)
    last_time = now
    rows = []
    for (s, e, _), m in zip(pending, host):
      row = {"step": s, "epoch": e, **{k: float(v) for k, v in m.items()}}
      rows.append(row)
    history.extend(rows)
    if metrics_file is not None:
      for row in rows:
        metrics_file.write(json.dumps(row) + "\n")
      metrics_file.flush()
    postfix = {k: v for k, v in rows[-1].items() if k not in ("step", "epoch")}
    bar.update(len(pending), **postfix, img_s=round(ips, 1))
    pending.clear()

  try:
    step = start_step
    while step < total_steps:
      epoch, first = divmod(step, steps_per_epoch)
      for batch in epoch_batches(data, batch_size, seed=dseed, epoch=epoch, start=first,
                                 process_index=pid, process_count=pcount):
        if step >= total_steps:
          break
        state, metrics = train_step(state, shard_batch(batch, mesh))
        step += 1
        pending.append((step, epoch, metrics))
        if len(pending) >= log_every:
          flush()
        if ckpt is not None:
          ckpt.save(step, state)
    flush()
    final = int(to_host(state.step))
    if final != max(total_steps, start_step):
      raise RuntimeError(f"{method_name(method)}.train_step must increment state.step by 1 "
                         f"(expected {total_steps}, got {final})")
    if ckpt is not None:
      ckpt.save(final, state, force=True)
      ckpt.wait()
  finally:
    bar.close()
    if metrics_file is not None:
      metrics_file.close()
    if ckpt is not None:
      ckpt.close()
  return FitResult(state=state, history=history, steps_per_epoch=steps_per_epoch,
                   start_step=start_step)


def with_run_length(config: Any, total_steps: int) -> Any:
  """Fills a ``decay_steps`` config field left at ``None`` with the run's step count.

  Learning-rate schedules (e.g. RAMFAE's cosine annealing) need the length of the
  run, which only the engine knows (``epochs * (N // batch_size)``). A config whose
  ``decay_steps`` is ``None`` gets ``total_steps``; an explicit value is kept.
  The resolved config is what ``run.json`` records, so a resumed run uses the
  same schedule.

  Args:
    config: a method's ``Config`` (frozen dataclass).
    total_steps: global steps of the whole run (``>= 1``).
  Returns:
    ``config``, or a copy with ``decay_steps = total_steps``.
  """
  if getattr(config, "decay_steps", 0) is None and any(
      f.name == "decay_steps" for f in dataclasses.fields(config)):
    log("decay_steps=None: using the run length, %d steps", total_steps)
    return dataclasses.replace(config, decay_steps=int(total_steps))
  return config


def _fit_memory_bank(method: ModuleType, state: PyTree, data: dict[str, np.ndarray], *,
                     seed: int, batch_size: int, mesh: jax.sharding.Mesh,
                     ckpt: Checkpointer | None, workdir: Path | None, steps_per_epoch: int,
                     start_step: int) -> FitResult:
  """Runs ``method.fit`` (memory-bank methods) once and checkpoints the fitted state.

  The method gets the ``FIT`` key stream and a callable ``epoch -> batches`` with
  the engine's seeded epoch order, so its own passes (e.g. SMCC's ``epochs`` W of
  self-update) see the same batches as a gradient method would.
  """
  if jax.process_count() > 1:
    raise NotImplementedError(f"{method_name(method)}.fit runs in one process (its batches are "
                              "host arrays); multi-process fitting is not implemented")
  dseed = rng.data_seed(seed)

  def batches(epoch: int) -> Iterator[dict[str, np.ndarray]]:
    return epoch_batches(data, batch_size, seed=dseed, epoch=epoch)

  history: list[dict[str, float]] = []
  try:
    state = method.fit(rng.stream(seed, rng.FIT), state, batches, mesh=mesh, history=history)
    if workdir is not None and history:
      with (workdir / METRICS_FILE).open("a") as f:
        for row in history:
          f.write(json.dumps(row) + "\n")
    if ckpt is not None:
      ckpt.save(int(to_host(state.step)), state, force=True)
      ckpt.wait()
  finally:
    if ckpt is not None:
      ckpt.close()
  return FitResult(state=state, history=history, steps_per_epoch=steps_per_epoch,
                   start_step=start_step)
