"""The engine: trains any registered method, on any number of devices and hosts.

:func:`fit` drives every step of every method (:mod:`jaxad.models.protocol`): it builds the
state, runs the method's non-gradient ``prepare`` stage once when the method has one, then
``epochs * steps_per_epoch`` calls of one jitted, sharded ``train_step`` (state replicated, batch
sharded over the ``"data"`` mesh axis), with one checkpoint/resume path, one metrics log and one
progress report for all methods.

Determinism: everything derives from ``seed``: ``init`` gets ``stream(seed, INIT)``, ``prepare``
gets ``stream(seed, PREPARE)``, step ``s`` gets ``step_key(state)``, and epoch ``e`` visits the
data in :func:`jaxad.data.epoch_order` ``(seed, e)`` (the order of ``jaxad.data.batches``). A run
resumed from a checkpoint at step ``s`` continues at batch ``s mod steps_per_epoch`` of its epoch
and therefore sees exactly the batches and keys of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import numpy as np

from jaxad import data as data_lib
from jaxad.models.protocol import Run, check_method
from jaxad.progress import Progress, log
from jaxad.train import compile as xla_compile
from jaxad.train import rng
from jaxad.train import run_files
from jaxad.train.checkpoint import Checkpointer
from jaxad.train.mesh import (check_batch_size, data_sharding, make_mesh, replicate,
                              replicated_sharding, to_host)
from jaxad.train.state import step_key

__all__ = ["FitResult", "Restored", "fit", "restore", "resolve_method", "method_name",
           "init_state", "make_train_step"]

PyTree = Any


@dataclasses.dataclass
class FitResult:
  """What :func:`fit` returns.

  Attributes:
    state: the final state (replicated over the mesh).
    run: the :class:`~jaxad.models.protocol.Run` the method was trained in.
    history: one dict per step run in this call: ``step`` (after the update), ``epoch`` and
      the method's metrics as Python floats.
    start_step: the step the run started (or resumed) from.
  """
  state: PyTree
  run: Run
  history: list[dict[str, float]]
  start_step: int


@dataclasses.dataclass
class Restored:
  """A trained run rebuilt from its workdir by :func:`restore`."""
  method: ModuleType
  config: Any
  state: PyTree
  info: dict[str, Any]


# ----------------------------------------------------------------------------- methods


def resolve_method(method: str | ModuleType) -> ModuleType:
  """The method module for a registry name, or ``method`` itself after checking the protocol."""
  if isinstance(method, str):
    from jaxad import models
    return models.get(method)
  return check_method(method)


def method_name(method: ModuleType) -> str:
  """The registry name of a method module (its ``NAME``, else the last part of its module name)."""
  return getattr(method, "NAME", method.__name__.rsplit(".", 1)[-1])


def init_state(method: ModuleType, config: Any, run: Run, example_batch: dict[str, Any], *,
               seed: int, mesh: jax.sharding.Mesh) -> PyTree:
  """``method.init`` with the seed's INIT stream, replicated on ``mesh``."""
  state = method.init(config, run, rng.stream(seed, rng.INIT), example_batch)
  for attr in ("step", "key"):
    if not hasattr(state, attr):
      raise TypeError(f"{method_name(method)}.init must return a state with `{attr}`, got "
                      f"{type(state).__name__}")
  return replicate(state, mesh)


@functools.lru_cache(maxsize=32)
def make_train_step(method: ModuleType, mesh: jax.sharding.Mesh) -> Callable[..., Any]:
  """``method.train_step`` jitted for ``mesh``: ``(config, run, state, batch) -> (state, metrics)``.

  ``config`` and ``run`` are static (equal configs share one compilation); the state is
  replicated and the batch sharded; the method gets ``key = step_key(state)``. One wrapper per
  (method, mesh). Compiled with :func:`jaxad.train.compile.step_options`.
  """
  repl, data = replicated_sharding(mesh), data_sharding(mesh)

  def step(config: Any, run: Run, state: PyTree, batch: dict[str, jax.Array]) -> Any:
    return method.train_step(config, run, state, batch, step_key(state))

  donate = (2,) if jax.default_backend() != "cpu" else ()
  return xla_compile.jit(step, static_argnums=(0, 1), in_shardings=(repl, data),
                         out_shardings=(repl, repl), donate_argnums=donate)


# ----------------------------------------------------------------------------- fit


def fit(method: str | ModuleType, config: Any, train_data: Any, *, seed: int = 0,
        epochs: int = 1, batch_size: int = 16, workdir: str | Path | None = None,
        mesh: jax.sharding.Mesh | None = None, save_every: int | None = None, keep: int = 3,
        max_steps: int | None = None, log_every: int = 10, show_progress: bool | None = None,
        extra_info: dict[str, Any] | None = None) -> FitResult:
  """Trains ``method`` on ``train_data`` with data parallelism over ``mesh``; resumes from ``workdir``.

  Args:
    method: registry name (``"conv_ae"``) or method module.
    config: the method's ``Config``.
    train_data: a :class:`jaxad.data.ArraySplit`, a float32 array ``[N, H, W, C]`` in [0, 1] or a
      dict with ``image``; in a multi-process job every process passes the same (full) data and
      reads only its rows of each batch.
    seed: the one seed of the run (init, prepare, data order, per-step keys).
    epochs: passes over the data (>= 0); steps = ``epochs * (N // batch_size)``. With 0 only
      ``init`` and ``prepare`` run (SMCC: no self-update).
    batch_size: global batch size, divisible by the number of devices.
    workdir: where ``run.json``, ``metrics.jsonl`` and ``checkpoints/`` go; ``None`` writes
      nothing. A workdir holding checkpoints of the same run is resumed.
    mesh: 1-D ``"data"`` mesh; all devices (of all processes) when ``None``.
    save_every: checkpoint every this many steps (plus after ``prepare`` and at the end).
    keep: number of checkpoints kept.
    max_steps: stop after this global step (a time-boxed or interrupted run); the run length
      (schedules) stays ``epochs * steps_per_epoch``.
    log_every: steps between metric flushes (JSON lines, progress postfix).
    show_progress: ``None`` auto (bar on a TTY), ``False`` quiet.
    extra_info: more JSON-able fields to store in ``run.json``.
  Returns:
    :class:`FitResult`.
  Raises:
    ValueError: bad arguments (batch size not divisible by the devices, too few images, config
      not matching the images ...).
    CheckpointMismatchError: ``workdir`` holds an incompatible run.
  """
  method = resolve_method(method)
  if not isinstance(config, method.Config):
    raise TypeError(f"config must be {method.__name__}.Config, got "
                    f"{type(config).__module__}.{type(config).__qualname__}")
  for name, value, low in (("epochs", epochs, 0), ("log_every", log_every, 1)):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
  if max_steps is not None and max_steps < 0:
    raise ValueError(f"max_steps must be >= 0 or None, got {max_steps}")
  mesh = make_mesh() if mesh is None else mesh
  check_batch_size(batch_size, mesh)
  split = data_lib.as_split(train_data)
  n = len(split)
  if n < batch_size:
    raise ValueError(f"batch_size={batch_size} is larger than the number of training images ({n})")
  _check_config_fits(config, split.image_shape)
  run = Run(total_steps=epochs * (n // batch_size), steps_per_epoch=n // batch_size,
            batch_size=batch_size)
  seed = rng.check_seed(seed)
  info = {"method": method_name(method), "config": run_files.config_to_dict(config), "seed": seed,
          "batch_size": batch_size, "image_shape": list(split.image_shape), "epochs": epochs,
          **dataclasses.asdict(run), "num_devices": mesh.devices.size,
          "process_count": jax.process_count(), "jax_version": jax.__version__, **(extra_info or {})}
  if workdir is not None:
    workdir = Path(workdir).resolve()
    if workdir.exists() and not workdir.is_dir():
      raise ValueError(f"workdir {workdir} exists and is not a directory")
    run_files.check_run_info(workdir, info)  # before init: an incompatible workdir fails fast
  ckpt = None if workdir is None else Checkpointer(workdir, save_every=save_every, keep=keep)
  try:
    state = _start(method, config, run, split, seed=seed, mesh=mesh, ckpt=ckpt, info=info)
    start = int(to_host(state.step))
    end = run.total_steps if max_steps is None else min(run.total_steps, max(max_steps, start))
    state, history = _train(method, config, run, state, split, seed=seed, mesh=mesh, ckpt=ckpt,
                            end=end, log_every=log_every, show_progress=show_progress)
    if ckpt is not None:
      ckpt.save(int(to_host(state.step)), state, force=True)
  finally:
    if ckpt is not None:
      ckpt.close()
  return FitResult(state=state, run=run, history=history, start_step=start)


def _check_config_fits(config: Any, image_shape: tuple[int, ...]) -> None:
  size, channels = getattr(config, "image_size", None), getattr(config, "channels", None)
  if size is not None and tuple(image_shape[:2]) != (size, size):
    raise ValueError(f"config.image_size={size} but the training images are "
                     f"{image_shape[0]}x{image_shape[1]}; resize the data or change image_size")
  if channels is not None and image_shape[2] != channels:
    raise ValueError(f"config.channels={channels} but the training images have "
                     f"{image_shape[2]} channels")


def _start(method: ModuleType, config: Any, run: Run, split: data_lib.ArraySplit, *, seed: int,
           mesh: jax.sharding.Mesh, ckpt: Checkpointer | None, info: dict[str, Any]) -> PyTree:
  """The state to train from: the latest intact checkpoint, or ``init`` (+ ``prepare``, saved)."""
  pid, pcount = jax.process_index(), jax.process_count()
  example = next(data_lib.batches(split, run.batch_size, seed=seed, shuffle=False,
                                  process_index=pid, process_count=pcount))
  state = init_state(method, config, run, example, seed=seed, mesh=mesh)
  if ckpt is not None:
    if pid == 0:
      run_files.write_run_info(ckpt.workdir, info)
    restored = ckpt.restore_latest(state)
    step = 0 if restored is None else restored[1]
    if pid == 0:  # metric lines logged after the state we continue from are dropped
      run_files.truncate_metrics(ckpt.workdir, step)
    if restored is not None:
      log("resumed %s from step %d", ckpt.workdir, step)
      return restored[0]
  if hasattr(method, "prepare"):
    state = _prepare(method, config, run, state, split, seed=seed, mesh=mesh)
    if ckpt is not None:
      ckpt.save(int(to_host(state.step)), state, force=True)
  return state


def _prepare(method: ModuleType, config: Any, run: Run, state: PyTree, split: data_lib.ArraySplit,
             *, seed: int, mesh: jax.sharding.Mesh) -> PyTree:
  """Runs ``method.prepare`` over every training image once (fixed order, padded last batch)."""
  if jax.process_count() > 1:
    raise NotImplementedError(f"{method_name(method)}.prepare gathers features on the host and "
                              "runs in one process; multi-process preparation is not implemented")
  sharding = data_sharding(mesh)

  def batches() -> Iterator[dict[str, jax.Array]]:
    for batch in data_lib.batches(split, run.batch_size, seed=seed, shuffle=False,
                                  drop_remainder=False):
      yield data_lib.shard_batch(batch, sharding)

  state = method.prepare(config, run, rng.stream(seed, rng.PREPARE), state, batches)
  return replicate(state, mesh)


def _step_batches(split: data_lib.ArraySplit, run: Run, *, seed: int, start: int,
                  end: int) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
  """``(step, epoch, batch)`` for the global steps ``start + 1 .. end`` (this process's rows)."""
  step = start
  while step < end:
    epoch, first = divmod(step, run.steps_per_epoch)
    for batch in data_lib.batches(split, run.batch_size, seed=seed, epoch=epoch, start=first,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count()):
      if step >= end:
        return
      step += 1
      yield step, epoch, batch


def _train(method: ModuleType, config: Any, run: Run, state: PyTree, split: data_lib.ArraySplit,
           *, seed: int, mesh: jax.sharding.Mesh, ckpt: Checkpointer | None, end: int,
           log_every: int, show_progress: bool | None) -> tuple[PyTree, list[dict[str, float]]]:
  """The loop: jitted sharded steps up to global step ``end``, periodic checkpoints, metrics, progress."""
  train_step = make_train_step(method, mesh)
  sharding = data_sharding(mesh)
  start = int(to_host(state.step))
  chief = jax.process_index() == 0
  log_ = _MetricsLog(ckpt.workdir if (ckpt is not None and chief) else None, run.batch_size,
                     Progress(total=max(end - start, 0), desc=f"train {method_name(method)}",
                              unit="step", enabled=show_progress))
  try:
    for step, epoch, batch in _step_batches(split, run, seed=seed, start=start, end=end):
      state, metrics = train_step(config, run, state, data_lib.shard_batch(batch, sharding))
      log_.add(step, epoch, metrics, flush=step % log_every == 0 or step == end)
      if ckpt is not None:
        ckpt.save(step, state)
  finally:
    log_.close()
  final = int(to_host(state.step))
  if final != max(end, start):
    raise RuntimeError(f"{method_name(method)}.train_step must increment state.step by 1 "
                       f"(expected {end}, got {final})")
  return state, log_.history


class _MetricsLog:
  """Collects device metrics, and on flush writes them as JSON lines and to the progress bar."""

  def __init__(self, workdir: Path | None, batch_size: int, bar: Progress) -> None:
    self.history: list[dict[str, float]] = []
    self._pending: list[tuple[int, int, dict[str, jax.Array]]] = []
    self._writer = run_files.MetricsWriter(workdir)
    self._bar, self._batch_size = bar, batch_size
    self._time = time.perf_counter()

  def add(self, step: int, epoch: int, metrics: dict[str, jax.Array], *, flush: bool) -> None:
    self._pending.append((step, epoch, metrics))
    if flush:
      self.flush()

  def flush(self) -> None:
    if not self._pending:
      return
    host = to_host([m for _, _, m in self._pending])
    rows = [{"step": s, "epoch": e, **{k: float(v) for k, v in m.items()}}
            for (s, e, _), m in zip(self._pending, host)]
    now = time.perf_counter()
    ips = len(rows) * self._batch_size / max(now - self._time, 1e-9)
    self._time = now
    self.history.extend(rows)
    self._writer.write(rows)
    postfix = {k: v for k, v in rows[-1].items() if k not in ("step", "epoch")}
    self._bar.update(len(rows), **postfix, img_s=round(ips, 1))
    self._pending.clear()

  def close(self) -> None:
    self.flush()
    self._bar.close()
    self._writer.close()


# ----------------------------------------------------------------------------- restore


def restore(workdir: str | Path, *, step: int | None = None,
            mesh: jax.sharding.Mesh | None = None) -> Restored:
  """Rebuilds a trained run from ``workdir`` (its ``run.json`` and a checkpoint).

  Args:
    workdir: a workdir written by :func:`fit` (``experiments/train.py``).
    step: the checkpoint to load; the latest intact one when ``None``.
    mesh: the mesh to place the state on (all local devices when ``None``).
  Returns:
    :class:`Restored` with the method module, its config, the state and ``run.json``.
  Raises:
    FileNotFoundError: not a workdir, or no (such) checkpoint.
    CheckpointMismatchError / CheckpointUnreadableError: see :class:`Checkpointer`.
  """
  info = run_files.read_run_info(workdir)
  method = resolve_method(info["method"])
  config = run_files.config_from_dict(method, info["config"])
  run = Run(total_steps=info["total_steps"], steps_per_epoch=info["steps_per_epoch"],
            batch_size=info["batch_size"])
  mesh = make_mesh() if mesh is None else mesh
  shape = tuple(info["image_shape"])
  example = {"image": np.zeros((1,) + shape, np.float32), "mask": np.zeros((1,) + shape[:2], np.float32),
             "label": np.zeros((1,), np.int32), "valid": np.ones((1,), bool)}
  template = init_state(method, config, run, example, seed=info["seed"], mesh=mesh)
  with Checkpointer(workdir, async_save=False) as ckpt:
    if step is None:
      restored = ckpt.restore_latest(template)
      if restored is None:
        raise FileNotFoundError(f"no checkpoint found in {ckpt.directory}")
      state = restored[0]
    else:
      state = ckpt.restore(template, step=step)
  return Restored(method=method, config=config, state=state, info=info)
