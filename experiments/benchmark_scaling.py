"""Data-parallel scaling: steps/s and images/s of a method's train step per device count.

For every device count n in ``--device_counts`` (those <= the available devices),
builds the 1-D ``"data"`` mesh over the first n devices, replicates the state,
shards a global batch of ``--per_device_batch * n`` images (weak scaling; or a
fixed ``--global_batch``, strong scaling) and times ``--steps`` jitted train steps
after ``--warmup`` steps (the first one compiles). Prints a Markdown table.

CPU: ``--host_devices=8`` (default) forces 8 virtual CPU devices
via ``XLA_FLAGS=--xla_force_host_platform_device_count`` before JAX starts; they
share the same cores, so this measures overhead, not speed-up.

GPU/TPU: run on the accelerator host as is; ``--host_devices`` only affects the
CPU platform, JAX uses the accelerators::

  python experiments/benchmark_scaling.py --config=experiments/configs/conv_ae.py \
      --config.image_size=256 --per_device_batch=32 --device_counts=1,2,4,8 --steps=50

Example (CPU; the method's config file and ``--config.*`` overrides as in ``train.py``)::

  python experiments/benchmark_scaling.py --config=experiments/configs/conv_ae.py \
      --config.image_size=64
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _force_host_devices(argv: list[str]) -> None:
  """Sets the forced CPU device count from ``--host_devices`` before JAX is imported."""
  count = "8"
  for i, arg in enumerate(argv):
    if arg.startswith("--host_devices="):
      count = arg.split("=", 1)[1]
    elif arg == "--host_devices" and i + 1 < len(argv):
      count = argv[i + 1]
  if int(count) > 0 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={int(count)}").strip()


_force_host_devices(sys.argv)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", str(REPO_ROOT / "experiments" / "configs" / "conv_ae.py"),
    "Method config file; override fields with --config.<field>=<value>.")
flags.DEFINE_list("device_counts", ["1", "2", "4", "8"], "Device counts to measure.")
flags.DEFINE_integer("per_device_batch", 8, "Images per device (weak scaling).")
flags.DEFINE_integer("global_batch", 0, "Fixed global batch (strong scaling); 0: per-device.")
flags.DEFINE_integer("steps", 20, "Timed steps per device count.")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (the first compiles).")
flags.DEFINE_integer("host_devices", 8, "Forced CPU device count (read before JAX starts; 0: off).")
flags.DEFINE_integer("seed", 0, "Seed of init and data.")


def measure(method, config, n: int) -> dict[str, float]:
  """Times the train step of ``method`` on an n-device mesh."""
  from jaxad.data import shard_batch
  from jaxad.models.protocol import Run
  from jaxad.train import loop, mesh as mesh_lib
  mesh = mesh_lib.make_mesh(n)
  batch_size = FLAGS.global_batch or FLAGS.per_device_batch * n
  mesh_lib.check_batch_size(batch_size, mesh)
  rng = np.random.default_rng(FLAGS.seed)
  size = config.image_size
  host = {"image": rng.random((batch_size, size, size, config.channels), dtype=np.float32),
          "mask": np.zeros((batch_size, size, size), np.float32),
          "label": np.zeros((batch_size,), np.int32), "valid": np.ones((batch_size,), bool)}
  run = Run(total_steps=FLAGS.warmup + FLAGS.steps, steps_per_epoch=1, batch_size=batch_size)
  state = loop.init_state(method, config, run, host, seed=FLAGS.seed, mesh=mesh)
  batch = shard_batch(host, mesh_lib.data_sharding(mesh))
  step = loop.make_train_step(method, mesh)
  t0 = time.perf_counter()
  state, metrics = step(config, run, state, batch)
  jax.block_until_ready(metrics)
  first = time.perf_counter() - t0
  for _ in range(max(FLAGS.warmup - 1, 0)):
    state, metrics = step(config, run, state, batch)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, metrics = step(config, run, state, batch)
  jax.block_until_ready((state, metrics))
  elapsed = time.perf_counter() - t0
  loss = float(next(iter(mesh_lib.to_host(metrics).values())))
  return {"devices": n, "batch": batch_size, "steps_s": FLAGS.steps / elapsed,
          "images_s": FLAGS.steps * batch_size / elapsed,
          "images_s_dev": FLAGS.steps * batch_size / elapsed / n, "first_step_s": first,
          "metric": loss}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.steps < 1 or FLAGS.warmup < 1:
    raise app.UsageError("--steps and --warmup must be >= 1")
  from experiments import configs
  from jaxad import models
  from jaxad.progress import progress
  method = models.get(_CONFIG.value.method)
  config = configs.to_method_config(method, _CONFIG.value)
  counts = [int(c) for c in FLAGS.device_counts]
  available = len(jax.devices())
  skipped = [c for c in counts if c > available]
  counts = [c for c in counts if c <= available]
  rows = [measure(method, config, n) for n in progress(counts, desc="scaling", unit="mesh")]
  print(f"\n{_CONFIG.value.method} train step, {config.image_size}x{config.image_size}x{config.channels}, "
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}, "
        f"{FLAGS.steps} timed steps after {FLAGS.warmup} warm-up\n")
  print("| devices | global batch | steps/s | images/s | images/s per device | first step (compile) s "
        "| loss (last step) |")
  print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  for r in rows:
    print(f"| {r['devices']} | {r['batch']} | {r['steps_s']:.2f} | {r['images_s']:.1f} | "
          f"{r['images_s_dev']:.1f} | {r['first_step_s']:.1f} | {r['metric']:.4f} |")
  if skipped:
    print(f"\nskipped device counts {skipped}: only {available} devices available")


if __name__ == "__main__":
  app.run(main)
