"""Variable initialisation shared by the method modules."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnums=(0, 2))
def init_variables(module: nn.Module, key: jax.Array, shape: tuple[int, ...]) -> Any:
  """``module.init(key, zeros(shape), train=False)``, jitted once per (module, shape).

  Flax modules are frozen dataclasses, so equal modules share one compilation through JAX's
  cache; eager Flax init would dispatch (and compile) every op separately.

  Args:
    module: the network (hashable Flax module).
    key: typed PRNG key.
    shape: input shape, e.g. ``(1, H, W, C)``.
  Returns:
    The variables dict (``params`` and, if any, ``batch_stats``).
  """
  return module.init(key, jnp.zeros(shape, jnp.float32), train=False)
