"""Device mesh and data-parallel sharding over one mesh axis ``"data"``.

Data parallelism in jaxad is ``jax.jit`` with ``NamedSharding``: the global
batch is sharded on its leading axis over a 1-D mesh, the train state is
replicated, and XLA's SPMD partitioner inserts the all-reduces that average
gradients and compute BatchNorm statistics over the global batch. Model code is
written for the global batch and never names an axis (see CONTRIBUTING.md,
"One interface for every method"). One device is the 1-device mesh: same path.

Multi-host: every process calls the same functions; :func:`jaxad.data.shard_batch`
builds the global batch from each process's local rows with
``jax.make_array_from_process_local_data`` and :func:`replicate` builds the
replicated state from each process's (identical) host copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxad.train.state import is_prng_key

__all__ = ["DATA_AXIS", "make_mesh", "data_sharding", "replicated_sharding",
           "check_batch_size", "replicate", "to_host"]

DATA_AXIS = "data"
PyTree = Any


def make_mesh(num_devices: int | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis ``"data"``.

  Args:
    num_devices: use the first ``num_devices`` of ``jax.devices()`` (all when
      ``None``). Must be >= 1 and <= the number of devices. In a multi-process
      job, use all devices (the default).
    devices: explicit device list (overrides ``num_devices``).
  Returns:
    ``jax.sharding.Mesh`` of shape ``(n,)`` named ``("data",)``.
  """
  if devices is None:
    all_devices = jax.devices()
    if num_devices is None:
      num_devices = len(all_devices)
    if not isinstance(num_devices, int) or isinstance(num_devices, bool):
      raise TypeError(f"num_devices must be an int or None, got {type(num_devices).__name__}")
    if not 1 <= num_devices <= len(all_devices):
      raise ValueError(f"num_devices must be in [1, {len(all_devices)}] (devices available: "
                       f"{len(all_devices)}), got {num_devices}")
    if jax.process_count() > 1 and num_devices != len(all_devices):
      raise ValueError(f"num_devices must use all {len(all_devices)} devices in a multi-process "
                       f"job, got {num_devices}")
    devices = all_devices[:num_devices]
  if len(devices) == 0:
    raise ValueError("devices must not be empty")
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch array: leading axis split over ``"data"``."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of the train state: a full copy on every device."""
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """Validates a global batch size for ``mesh`` and returns the per-process size.

  Raises:
    ValueError: if the batch size is not a positive multiple of the device count.
  """
  n = mesh.devices.size
  if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size <= 0:
    raise ValueError(f"batch_size must be a positive int, got {global_batch_size!r}")
  if global_batch_size % n:
    raise ValueError(f"batch_size={global_batch_size} is not divisible by the number of devices "
                     f"({n}); use a multiple of {n}, e.g. {max(n, global_batch_size // n * n)}")
  return int(global_batch_size) // jax.process_count()


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places a pytree (identical on every process) fully replicated on ``mesh``.

  Typed PRNG keys are handled through ``key_data``/``wrap_key_data``.
  """
  sharding = replicated_sharding(mesh)

  def put(x: Any) -> Any:
    if is_prng_key(x):
      impl = jax.random.key_impl(x)
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=impl)
    if not isinstance(x, (jax.Array, np.ndarray, np.generic)):
      return x
    host = np.asarray(to_host(x))
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

  return jax.tree_util.tree_map(put, tree)


def to_host(tree: PyTree) -> PyTree:
  """Copies replicated device arrays to numpy (works in multi-process jobs).

  Reads each array's first addressable shard, which for a replicated array is
  the full value on every process. Typed keys become their ``key_data``.
  """

  def get(x: Any) -> Any:
    if is_prng_key(x):
      x = jax.random.key_data(x)
    if isinstance(x, jax.Array):
      if x.is_fully_addressable:
        return np.asarray(x)
      shard = x.addressable_shards[0]
      if shard.data.shape != x.shape:
        raise ValueError(f"to_host needs replicated arrays, got shape {x.shape} sharded as "
                         f"{x.sharding}")
      return np.asarray(shard.data)
    return x

  return jax.tree_util.tree_map(get, tree)
