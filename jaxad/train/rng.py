"""Every random stream of a run, derived from one integer seed.

``base = jax.random.key(seed)``; each purpose gets ``fold_in(base, purpose)``:

* ``INIT`` (0): passed to ``method.init``; the method splits it into parameter
  initialisation and the state's base key, from which the engine derives each
  step's key (augmentation, dropout, ...) with
  :func:`jaxad.train.state.step_key` — a function of (seed, step) only.
* ``DATA`` (1): the data-order seed, an integer (:func:`data_seed`); batches of
  epoch ``e`` are a function of (data seed, ``e``) only.
* ``SAMPLE`` (2): host-side choices such as which images go into PNG samples.
* ``FIT`` (3): passed to ``method.fit`` of memory-bank methods (coresets, GMM, ...).
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["INIT", "DATA", "SAMPLE", "FIT", "stream", "data_seed", "epoch_permutation"]

INIT = 0
DATA = 1
SAMPLE = 2
FIT = 3  # the non-gradient ``fit`` of memory-bank methods (coresets, GMM, ...)


def _check_seed(seed: int) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"seed must be an int, got {type(seed).__name__}")
  if not 0 <= int(seed) < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  return int(seed)


def stream(seed: int, purpose: int) -> jax.Array:
  """The typed PRNG key of one purpose: ``fold_in(key(seed), purpose)``."""
  return jax.random.fold_in(jax.random.key(_check_seed(seed)), purpose)


def data_seed(seed: int) -> int:
  """An integer seed for host-side data order, derived from ``seed`` via ``fold_in``."""
  bits = np.asarray(jax.random.key_data(stream(seed, DATA))).ravel()
  return int(bits[-1])


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """A permutation of ``range(num_examples)`` that depends on (seed, epoch) only.

  Args:
    num_examples: number of examples (>= 0).
    seed: the data seed (see :func:`data_seed`).
    epoch: epoch index (>= 0).
  Returns:
    int64 array ``[num_examples]``.
  """
  if num_examples < 0 or epoch < 0:
    raise ValueError(f"num_examples and epoch must be >= 0, got {num_examples}, {epoch}")
  rng = np.random.default_rng([_check_seed(seed), int(epoch)])
  return rng.permutation(num_examples)
