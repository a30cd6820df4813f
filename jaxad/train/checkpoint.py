"""Orbax checkpoints of a train state: save every N steps, keep K, restore latest.

The saved item is the state's pytree part as a nested dict
(``flax.serialization.to_state_dict``), with typed PRNG keys stored as their
``key_data`` (uint32). The static fields of a state (``apply_fn``, ``tx``) are
not saved: restoring needs a *template* state built by the method's ``init``
with the same config; the saved arrays are restored into it with the
template's shardings, and keys are re-wrapped with the template's key impl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

__all__ = ["Checkpointer", "CheckpointMismatchError", "to_saveable", "from_saveable",
           "quiet_orbax_logs"]

PyTree = Any


class CheckpointMismatchError(ValueError):
  """The checkpoint in a workdir does not fit the state being restored."""


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_saveable(state: PyTree) -> dict[str, Any]:
  """The state's arrays as a nested dict, typed keys replaced by their key data."""
  tree = serialization.to_state_dict(state)
  return jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def from_saveable(template: PyTree, saved: dict[str, Any]) -> PyTree:
  """Inverse of :func:`to_saveable`: fills ``template`` with ``saved`` arrays."""
  template_dict = serialization.to_state_dict(template)

  def wrap(t: Any, s: Any) -> Any:
    if _is_key(t):
      return jax.random.wrap_key_data(s, impl=jax.random.key_impl(t))
    return s

  restored = jax.tree_util.tree_map(wrap, template_dict, saved)
  return serialization.from_state_dict(template, restored)


def _abstract(x: Any) -> Any:
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  x = np.asarray(x)
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


class Checkpointer:
  """Saves and restores train states under ``<workdir>/checkpoints``.

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
    self._manager = ocp.CheckpointManager(self.directory, options=options)

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
      The restored state (``template``'s static fields, saved arrays).
    Raises:
      FileNotFoundError: no checkpoint in the workdir.
      CheckpointMismatchError: the checkpoint's arrays do not fit ``template``.
    """
    self.wait()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint found in {self.directory}")
    elif step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory} "
                              f"(available: {self.all_steps()})")
    abstract = jax.tree_util.tree_map(_abstract, to_saveable(template))
    try:
      saved = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      return from_saveable(template, saved)
    except Exception as e:  # Orbax raises several types for shape/structure mismatches.
      raise CheckpointMismatchError(
          f"workdir {self.workdir} holds a checkpoint (step {step}) that does not match the "
          f"state of this method/config: {type(e).__name__}: {e}. Use a fresh --workdir or the "
          "same method and config as the saved run.") from e

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


class _DropOrbaxInfo:
  """absl log filter: drops Orbax's INFO/DEBUG lines (it logs every save/close)."""

  def filter(self, record: Any) -> bool:
    import logging as std_logging
    return record.levelno >= std_logging.WARNING or "orbax" not in str(record.pathname)


def quiet_orbax_logs() -> None:
  """Hides Orbax's INFO lines from absl logging (CLI scripts call this once)."""
  from absl import logging as absl_logging
  logger = absl_logging.get_absl_logger()
  if not any(isinstance(f, _DropOrbaxInfo) for f in logger.filters):
    logger.addFilter(_DropOrbaxInfo())
