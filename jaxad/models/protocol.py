"""The one protocol every method follows: pure functions of an explicit config and run.

A method is a module in ``jaxad/models/`` with a frozen, hashable ``Config`` (the paper's
defaults) and these pure functions; the engine (:mod:`jaxad.train.loop`) drives every step::

  init(config, run, key, example_batch)        -> state
  train_step(config, run, state, batch, key)   -> (state, metrics)
  predict(config, state, images)               -> (scores, maps)

and, only where the method has them::

  prepare(config, run, key, state, batches)    -> state     # non-gradient stage, before step 1
  normalize(config, scores, maps)              -> (scores, maps)   # over the whole test set
  reconstruct(config, state, images)           -> images

* ``config`` and ``run`` are *static* (hashable) arguments: the engine jits with
  ``static_argnums``, so equal configs share compilations through JAX's own cache. They are
  never stored in the state.
* ``state`` is a pytree of arrays with (at least) ``step`` (int32 scalar) and ``key`` (typed PRNG
  key). Networks, optimisers and schedules are rebuilt from ``(config, run)`` inside the
  functions (cheap: only at trace time). Two networks with two optimisers (GANs) are two
  :class:`jaxad.train.state.TrainState` inside one state, updated in one ``train_step``.
* ``train_step`` is written for the *global* batch (no axis names): the engine shards the batch
  over the ``"data"`` mesh axis and replicates the state, so XLA averages gradients and BatchNorm
  statistics over all devices. ``key`` is ``step_key(state)``; it must increment ``state.step``.
  ``metrics`` is a flat dict of float32 scalars.
* ``predict`` maps ``images [B, H, W, C]`` in [0, 1] to ``scores`` (``[B]``, or a dict of per-image
  ``[B]`` arrays when the method defines ``normalize``) and ``maps [B, H, W]`` at image resolution.
* ``prepare`` is the non-gradient stage of memory-bank methods (SMCC's coreset + GMM centres,
  PatchCore's bank, DFDA-AD's k-means bank). The engine calls it once on a fresh state with
  ``batches()``, a function returning an iterator over every training image once (fixed order,
  last batch padded, ``valid`` marks real rows, arrays already sharded), and checkpoints the
  result as step 0. A resumed run does not call it again.
* ``normalize`` turns the raw outputs of ``predict`` over a whole test set (numpy, host) into the
  final scores and maps (e.g. GANomaly's min-max over the test set, never per batch).

The run length reaches schedules through :class:`Run`, never through a config field.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

__all__ = ["Run", "REQUIRED", "OPTIONAL", "check_method"]

REQUIRED = ("Config", "init", "train_step", "predict")
OPTIONAL = ("prepare", "normalize", "reconstruct")


@dataclasses.dataclass(frozen=True)
class Run:
  """What a method may know of the run it is trained in (static, hashable).

  Attributes:
    total_steps: gradient steps of the whole run, ``epochs * steps_per_epoch`` (>= 0).
    steps_per_epoch: global batches per epoch (>= 1).
    batch_size: the global batch size (>= 1).
  """
  total_steps: int = 1
  steps_per_epoch: int = 1
  batch_size: int = 1

  def __post_init__(self) -> None:
    for name, low in (("total_steps", 0), ("steps_per_epoch", 1), ("batch_size", 1)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"Run.{name} must be an int >= {low}, got {value!r}")


def check_method(module: ModuleType) -> ModuleType:
  """Returns ``module`` if it has every required part of the protocol.

  Raises:
    TypeError: a required attribute is missing, or ``Config`` is not a frozen dataclass.
  """
  name = getattr(module, "__name__", repr(module))
  missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
  if missing:
    raise TypeError(f"method module {name!r} lacks {missing}; see jaxad/models/protocol.py")
  config = module.Config
  if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):
    raise TypeError(f"{name}.Config must be a frozen dataclass (a static, hashable jit argument)")
  return module
