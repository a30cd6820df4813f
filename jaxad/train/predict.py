"""Prediction over a data set: one jitted, sharded ``predict`` per batch, then ``normalize``.

:func:`predict_dataset` pads the last batch, runs ``method.predict(config, state, images)`` with
the images sharded over the ``"data"`` mesh axis, and applies the method's ``normalize`` hook
(if any) once over the whole set, so that test-set-wide normalisation never happens per batch.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import jax
import numpy as np

from jaxad.progress import Progress
from jaxad.train import compile as xla_compile
from jaxad.train.loop import resolve_method
from jaxad.train.mesh import data_sharding, make_mesh, replicated_sharding

__all__ = ["make_predict", "predict_dataset"]

PyTree = Any


@functools.lru_cache(maxsize=32)
def make_predict(method: ModuleType, mesh: jax.sharding.Mesh) -> Any:
  """``method.predict`` jitted for ``mesh``: ``(config, state, images)``, config static,
  images and outputs sharded on the batch axis."""
  repl, data = replicated_sharding(mesh), data_sharding(mesh)
  return xla_compile.jit(method.predict, static_argnums=0, in_shardings=(repl, data),
                         out_shardings=(data, data))


def predict_dataset(method: str | ModuleType, config: Any, state: PyTree, images: np.ndarray, *,
                    batch_size: int = 32, mesh: jax.sharding.Mesh | None = None,
                    desc: str = "predict") -> tuple[Any, np.ndarray]:
  """Scores and maps for all ``images`` (single process), normalised over the whole set.

  Args:
    method: registry name or module.
    config: the method's ``Config``.
    state: a trained state (replicated on ``mesh``, or on one device).
    images: float32 ``[N, H, W, C]`` in [0, 1].
    batch_size: images per call (rounded up to a multiple of the device count).
    mesh: 1-D data mesh (all local devices when ``None``).
  Returns:
    ``scores [N]`` and ``maps [N, H, W]`` as numpy float32, after the method's ``normalize``
    (when it has one).
  Raises:
    ValueError: ``images`` is not ``[N, H, W, C]`` or is empty.
  """
  method = resolve_method(method)
  mesh = make_mesh() if mesh is None else mesh
  if jax.process_count() > 1:
    raise NotImplementedError("predict_dataset runs in a single process; evaluate on one host")
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[0] == 0:
    raise ValueError(f"images must be a non-empty [N, H, W, C] array, got shape {images.shape}")
  n_dev = mesh.devices.size
  batch_size = -(-batch_size // n_dev) * n_dev
  fn = make_predict(method, mesh)
  scores, maps = [], []
  starts = range(0, images.shape[0], batch_size)
  with Progress(total=len(starts), desc=desc, unit="batch") as bar:
    for s in starts:
      chunk = images[s:s + batch_size]
      real = chunk.shape[0]
      if real < batch_size:
        chunk = np.concatenate([chunk, np.zeros((batch_size - real,) + chunk.shape[1:], chunk.dtype)])
      sc, mp = fn(config, state, jax.device_put(chunk, data_sharding(mesh)))
      scores.append(jax.tree.map(lambda x: np.asarray(x)[:real], sc))
      maps.append(np.asarray(mp)[:real])
      bar.update(1)
  scores = jax.tree.map(lambda *xs: np.concatenate(xs).astype(np.float32), *scores)
  maps = np.concatenate(maps).astype(np.float32)
  if hasattr(method, "normalize"):
    scores, maps = method.normalize(config, scores, maps)
  return scores, maps
