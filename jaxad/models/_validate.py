"""Input validation shared by the method modules (runs outside jit, on static shapes)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np


def check_images(images: Any, config: Any, name: str) -> None:
  """Checks ``images`` is float32 ``[B, S, S, C]`` matching ``config`` (``S = image_size``).

  Args:
    images: array-like of images in [0, 1].
    config: a method ``Config`` with ``image_size`` and ``channels``, or ``None`` (rank/dtype only).
    name: the argument's name for error messages.
  Raises:
    ValueError: wrong rank or shape. TypeError: not float32.
  """
  shape = tuple(np.shape(images))
  if len(shape) != 4:
    raise ValueError(f"{name} must be [B, H, W, C], got shape {shape}")
  if config is not None and shape[1:] != (config.image_size, config.image_size, config.channels):
    raise ValueError(f"{name} must be [B, {config.image_size}, {config.image_size}, "
                     f"{config.channels}] for this config, got shape {shape}")
  dtype = getattr(images, "dtype", None)
  if dtype is not None and dtype != jnp.float32:
    raise TypeError(f"{name} must be float32 in [0, 1], got dtype {dtype}")
