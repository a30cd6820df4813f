"""Small shared pieces of the engine tests (tiny data and config)."""

from __future__ import annotations

import hashlib

import jax
import numpy as np

from jaxad.models import conv_ae
from jaxad.train.mesh import to_host

CFG = conv_ae.Config(image_size=32, channels=3, features=(8, 16))


def images(n: int = 24, seed: int = 0) -> np.ndarray:
  """Smooth random 32x32 RGB images in [0, 1] (float32)."""
  rng = np.random.default_rng(seed)
  base = rng.random((n, 8, 8, 3), dtype=np.float32)
  return np.repeat(np.repeat(base, 4, axis=1), 4, axis=2).astype(np.float32)


def leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(to_host(tree))]


def digest(tree) -> str:
  h = hashlib.sha256()
  for leaf in leaves(tree):
    h.update(leaf.tobytes())
  return h.hexdigest()
