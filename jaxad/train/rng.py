"""Every random stream of a run, derived from one integer seed.

``base = jax.random.key(seed)``; each purpose gets ``fold_in(base, purpose)``:

* ``INIT`` (0): passed to ``method.init``; the method splits it into parameter
  initialisation and the state's base key, from which the engine derives each
  step's key (augmentation, dropout, ...) with
  :func:`jaxad.train.state.step_key` — a function of (seed, step) only.
* ``SAMPLE`` (2): host-side choices such as which images go into PNG samples.
* ``PREPARE`` (3): passed to ``method.prepare`` (coresets, GMM, k-means banks ...).

The data order is not a JAX stream: :func:`jaxad.data.epoch_order` derives it from
``(seed, epoch)`` with NumPy, the same for the engine and for ``jaxad.data.batches``.
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["INIT", "SAMPLE", "PREPARE", "stream", "check_seed"]

INIT = 0
SAMPLE = 2
PREPARE = 3


def check_seed(seed: int) -> int:
  """Returns ``seed`` as an int after checking it is an integer in ``[0, 2**32)``."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"seed must be an int, got {type(seed).__name__}")
  if not 0 <= int(seed) < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  return int(seed)


def stream(seed: int, purpose: int) -> jax.Array:
  """The typed PRNG key of one purpose: ``fold_in(key(seed), purpose)``."""
  return jax.random.fold_in(jax.random.key(check_seed(seed)), purpose)
