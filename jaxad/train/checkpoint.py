"""Orbax checkpoints of a train state: save every N steps, keep K, restore latest.

The saved item is the state's pytree part as a nested dict
(``flax.serialization.to_state_dict``), with typed PRNG keys stored as their
``key_data`` (uint32). Restoring needs a *template* state built by the method's
``init`` with the same config; the saved arrays are restored into it with the
template's shardings, and keys are re-wrapped with the template's key impl.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from jaxad.train.state import is_prng_key

__all__ = ["Checkpointer", "CheckpointMismatchError", "CheckpointUnreadableError", "to_saveable",
           "from_saveable", "quiet_orbax_logs"]

PyTree = Any


class CheckpointMismatchError(ValueError):
  """The checkpoint in a workdir does not fit the state being restored."""


def to_saveable(state: PyTree) -> dict[str, Any]:
  """The state's arrays as a nested dict, typed keys replaced by their key data."""
  tree = serialization.to_state_dict(state)
  return jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if is_prng_key(x) else x, tree)


def from_saveable(template: PyTree, saved: dict[str, Any]) -> PyTree:
  """Inverse of :func:`to_saveable`: fills ``template`` with ``saved`` arrays."""
  template_dict = serialization.to_state_dict(template)

  def wrap(t: Any, s: Any) -> Any:
    if is_prng_key(t):
      return jax.random.wrap_key_data(s, impl=jax.random.key_impl(t))
    return s

  restored = jax.tree_util.tree_map(wrap, template_dict, saved)
  return serialization.from_state_dict(template, restored)


def _abstract(x: Any) -> Any:
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  x = np.asarray(x)
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


class CheckpointUnreadableError(RuntimeError):
  """A checkpoint's files cannot be read (truncated, overwritten, missing)."""


class Checkpointer:
  """Saves and restores train states under ``<workdir>/checkpoints``.

  A checkpoint whose files cannot be read is *unreadable* (:class:`CheckpointUnreadableError`);
  one that reads but does not fit the state being restored is a *mismatch*
  (:class:`CheckpointMismatchError`): the saved tree, shapes and dtypes are compared with the
  template's before any array is read. :meth:`restore_latest` skips unreadable checkpoints with
  a warning naming them and returns the newest intact one.

  Args:
    workdir: the run's directory (created if missing).
    save_every: save when ``step % save_every == 0`` (``None`` or 0: only
      forced saves, e.g. at the end of a run).
    keep: number of most recent checkpoints to keep (>= 1).
    async_save: write in a background thread (call :meth:`wait` before reading).
  """

  def __init__(self, workdir: str | Path, *, save_every: int | None = None, keep: int = 3,
               async_save: bool = True) -> None:
    if keep < 1:
      raise ValueError(f"keep must be >= 1, got {keep}")
    if save_every is not None and save_every < 0:
      raise ValueError(f"save_every must be >= 0 or None, got {save_every}")
    self.workdir = Path(workdir).resolve()
    self.directory = self.workdir / "checkpoints"
    self.save_every = save_every or 0
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=ocp.StandardCheckpointHandler())

  def all_steps(self) -> list[int]:
    """Steps with a finished checkpoint, ascending."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The most recent checkpointed step, or ``None``."""
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    """True when the periodic schedule saves at ``step``."""
    return self.save_every > 0 and step % self.save_every == 0

  def save(self, step: int, state: PyTree, *, force: bool = False) -> bool:
    """Saves ``state`` as checkpoint ``step`` if due (or ``force``); returns whether it did.

    Every process of a multi-process job must call this with the same step.
    """
    step = int(step)
    if not (force or self.should_save(step)):
      return False
    if step in self._manager.all_steps():
      return False
    return bool(self._manager.save(step, args=ocp.args.StandardSave(to_saveable(state)),
                                   force=True))

  def restore(self, template: PyTree, step: int | None = None) -> PyTree:
    """Restores checkpoint ``step`` (latest when ``None``) into ``template``.

    Args:
      template: a state of the same method and config (e.g. from ``init``),
        placed with the shardings the restored arrays should have.
      step: which checkpoint; the latest when ``None``.
    Returns:
      The restored state (``template``'s structure, saved arrays).
    Raises:
      FileNotFoundError: no (such) checkpoint in the workdir.
      CheckpointMismatchError: the checkpoint's tree, shapes or dtypes do not fit ``template``.
      CheckpointUnreadableError: the checkpoint's files cannot be read.
    """
    self.wait()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint found in {self.directory}")
    elif step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory} "
                              f"(available: {self.all_steps()})")
    wanted = to_saveable(template)
    with _orbax_silenced():
      try:
        saved_tree = self._manager.item_metadata(step).tree
      except Exception as e:  # noqa: BLE001 - any failure to read is reported as unreadable
        raise CheckpointUnreadableError(self._unreadable(step, e)) from None
      problem = _compare(saved_tree, wanted)
      if problem:
        raise CheckpointMismatchError(
            f"workdir {self.workdir} holds a checkpoint (step {step}) that does not match the "
            f"state of this method/config: {problem}. Use a fresh --workdir or the same method "
            "and config as the saved run.")
      abstract = jax.tree_util.tree_map(_abstract, wanted)
      try:
        saved = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # noqa: BLE001 - the layout matched, so this is damaged data
        raise CheckpointUnreadableError(self._unreadable(step, e)) from None
    return from_saveable(template, saved)

  def restore_latest(self, template: PyTree, *,
                     set_aside: bool = True) -> tuple[PyTree, int] | None:
    """The newest intact checkpoint restored into ``template``, or ``None`` if there is none.

    Unreadable checkpoints are skipped with a warning naming the step; with ``set_aside`` they
    are moved to ``<workdir>/unreadable_checkpoints/<step>`` (single-process jobs only), so that
    the run can write that step again.

    Raises:
      CheckpointMismatchError: the newest readable checkpoint does not fit ``template``.
    """
    for step in reversed(self.all_steps()):
      try:
        return self.restore(template, step), step
      except CheckpointUnreadableError as e:
        log_warning("%s; skipping it", e)
        if set_aside:
          self._set_aside(step)
    return None

  def _unreadable(self, step: int, error: Exception) -> str:
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return (f"checkpoint step {step} in {self.directory} is unreadable "
            f"({type(error).__name__}: {first})")

  def _set_aside(self, step: int) -> None:
    if jax.process_count() > 1:
      raise CheckpointUnreadableError(
          f"checkpoint step {step} in {self.directory} is unreadable; in a multi-process job "
          "remove it by hand and restart")
    target = self.workdir / "unreadable_checkpoints" / str(step)
    target.parent.mkdir(exist_ok=True)
    if target.exists():
      shutil.rmtree(target)
    shutil.move(str(self.directory / str(step)), str(target))
    self._manager.reload()
    log_warning("moved the unreadable checkpoint to %s", target)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are finished."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def _compare(saved: Any, wanted: Any) -> str:
  """Empty if the saved tree metadata fits ``wanted`` (same paths, shapes, dtypes), else why not."""
  def flat(tree: Any) -> dict[str, Any]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(p): x for p, x in leaves}

  have, want = flat(saved), flat(wanted)
  missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  if missing or extra:
    return f"entries missing from the checkpoint {missing[:5]}, unexpected entries {extra[:5]}"
  for path, x in want.items():
    shape, dtype = tuple(np.shape(x)), np.dtype(x.dtype)
    meta = have[path]
    if tuple(meta.shape) != shape or np.dtype(meta.dtype) != dtype:
      return f"{path}: saved {tuple(meta.shape)} {np.dtype(meta.dtype)}, expected {shape} {dtype}"
  return ""


@contextlib.contextmanager
def _orbax_silenced() -> Iterator[None]:
  """Drops Orbax's own log lines (errors included) while jaxad reports the outcome itself."""
  from absl import logging as absl_logging
  logger = absl_logging.get_absl_logger()
  filt = _DropOrbax(std_logging.CRITICAL + 1)
  logger.addFilter(filt)
  _drop_closed_loop_callbacks()
  try:
    yield
  finally:
    logger.removeFilter(filt)


def _drop_closed_loop_callbacks() -> None:
  """Installs (once) a ``sys.unraisablehook`` that drops one known, harmless Orbax artefact.

  When an array of a damaged checkpoint fails to read, Orbax closes its asyncio loop while
  TensorStore still completes the other reads; each late completion calls
  ``loop.call_soon_threadsafe`` and surfaces as an unraisable ``RuntimeError: Event loop is
  closed`` with a traceback on stderr. jaxad reports the unreadable checkpoint itself, so only
  exactly that error is dropped; every other unraisable exception goes to the previous hook.
  """
  import sys
  previous = sys.unraisablehook
  if getattr(previous, "_jaxad_closed_loop_filter", False):
    return

  def hook(unraisable: Any) -> None:
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
      return
    previous(unraisable)

  hook._jaxad_closed_loop_filter = True  # type: ignore[attr-defined]
  sys.unraisablehook = hook


def log_warning(msg: str, *args: Any) -> None:
  """A WARNING line on the ``"jaxad"`` logger (stderr, prefixed ``warning:``)."""
  from jaxad.progress import logger
  logger.warning("warning: " + msg, *args)


class _DropOrbax:
  """absl log filter: drops Orbax's records below ``level`` (it logs every save/close)."""

  def __init__(self, level: int = std_logging.WARNING) -> None:
    self.level = level

  def filter(self, record: Any) -> bool:
    return record.levelno >= self.level or "orbax" not in str(record.pathname)


def quiet_orbax_logs() -> None:
  """Hides Orbax's INFO lines from absl logging (CLI scripts call this once)."""
  from absl import logging as absl_logging
  logger = absl_logging.get_absl_logger()
  if not any(isinstance(f, _DropOrbax) for f in logger.filters):
    logger.addFilter(_DropOrbax())
