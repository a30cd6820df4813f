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


_GAN_FOUR_DEVICES = r"""
import json, sys
import jax
sys.path[:0] = ["tests", "tests/models", "tests/train"]
import {module} as T
from jaxad.train import loop, mesh as mesh_lib
from train_helpers import leaves
assert len(jax.devices()) == 4, jax.devices()
r = loop.fit("{method}", T.CFG, T.DATA, seed=0, epochs=1, batch_size=4, mesh=mesh_lib.make_mesh(4),
             show_progress=False)
params = [x.tolist() for x in leaves((r.state.generator.params, r.state.discriminator.params))]
print("RESULT" + json.dumps({{"hist": r.history, "params": params,
                             "state": [x.tolist() for x in leaves(r.state)]}}))
"""


def assert_gan_four_devices_match(method: str, module: str, trained) -> None:
  """Refits ``module.CFG`` on ``module.DATA`` (1 epoch, batch 4, seed 0) over 4 forced devices in a
  subprocess and compares it with ``trained`` (the same fit on one device): metrics and parameters
  to 1e-5, Adam's moments (float sums in another order) to 1e-4."""
  import json

  from conftest import run_jax_subprocess
  code = _GAN_FOUR_DEVICES.format(module=module, method=method)
  out = json.loads(run_jax_subprocess(code, devices=4).split("RESULT", 1)[1])
  for h1, h4 in zip(trained.history, out["hist"]):
    assert h1.keys() == h4.keys()
    np.testing.assert_allclose([h4[k] for k in h1], [h1[k] for k in h1], rtol=1e-5, atol=1e-5)
  params = leaves((trained.state.generator.params, trained.state.discriminator.params))
  for a, b in zip(params, out["params"]):
    np.testing.assert_allclose(np.asarray(b), a, rtol=1e-5, atol=1e-5)
  for a, b in zip(leaves(trained.state), out["state"]):
    np.testing.assert_allclose(np.asarray(b), a, rtol=1e-4, atol=1e-4)
