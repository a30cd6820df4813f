"""Inference throughput of jaxad backbones vs the same models in PyTorch CPU, in one run.

Prints a Markdown table: backbone, feature dims per layer (stride:channels), jaxad images/s
(jit, float32, NHWC) and PyTorch images/s (eval, no_grad, NCHW) at the given size, plus the
ratio. The PyTorch models are the reference ``torch.nn`` definitions used by the tests
(``tests/backbones/backbone_torch_ref.py``, loaded with the same state dict). Real ImageNet
weights are used where installed; throughput does not depend on the weight values.

  flock /tmp/jaxad-bench.lock .venv/bin/python experiments/benchmark_backbones.py
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time

from absl import app, flags

import jax
import jax.numpy as jnp
import numpy as np

from jaxad import backbones as bb

_NAMES = flags.DEFINE_list("names", list(bb.NAMES), "Backbones to benchmark.")
_BATCH = flags.DEFINE_integer("batch", 8, "Images per forward pass.")
_SIZE = flags.DEFINE_integer("size", 224, "Square input side.")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed forward passes per backbone (after 1 warm-up).")
_THREADS = flags.DEFINE_integer("torch_threads", os.cpu_count() or 1, "torch.set_num_threads.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time PyTorch CPU (needs torch).")


def _time(fn, iters: int) -> float:
  fn()  # warm-up (compile for JAX)
  best = []
  for _ in range(iters):
    t0 = time.perf_counter()
    fn()
    best.append(time.perf_counter() - t0)
  return float(np.median(best))


def main(argv):
  del argv
  torch = ref = None
  if _TORCH.value:
    import torch  # noqa: F811  (reference only)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "backbones"))
    import backbone_torch_ref as ref  # noqa: F811
    torch.set_num_threads(_THREADS.value)
  b, s = _BATCH.value, _SIZE.value
  images = np.random.default_rng(0).uniform(size=(b, s, s, 3)).astype(np.float32)
  rows = []
  for name in _NAMES.value:
    module = bb.create(name)
    try:
      variables, source = bb.load_pretrained(name), "ImageNet"
    except FileNotFoundError:
      variables, source = bb.init_random(name, jax.random.key(0), 64), "random"
    mean, std = bb.input_normalization(name)
    fwd = jax.jit(lambda v, x: module.apply(v, bb.normalize(x, mean, std)))
    x = jnp.asarray(images)
    t_jax = _time(lambda: fwd(variables, x).block_until_ready(), _ITERS.value)
    t_torch = float("nan")
    if torch is not None:
      model = ref.build(name)
      if source == "ImageNet":
        model.load_state_dict(torch.load(bb.weights_path(name), map_location="cpu",
                                         weights_only=True))
      xt = torch.from_numpy(((images - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))
                            .transpose(0, 3, 1, 2).copy())
      with torch.no_grad():
        t_torch = _time(lambda: model(xt), _ITERS.value)
    dims = ", ".join(f"{k} {st}:{c}" for k, (st, c) in bb.FEATURE_LAYERS[name].items())
    rows.append((name, source, dims, b / t_jax, b / t_torch))
    print(f"done {name}", file=sys.stderr, flush=True)
  print(f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()} {os.cpu_count()} CPUs, jax {jax.__version__}, "
        f"torch {torch.__version__ if torch else '-'} ({_THREADS.value} threads), "
        f"batch {b}, {s}x{s}, median of {_ITERS.value}\n")
  print("| backbone | weights | layers (stride:channels) | jaxad img/s | PyTorch img/s | jaxad/PyTorch |")
  print("| --- | --- | --- | ---: | ---: | ---: |")
  for name, source, dims, ij, it in rows:
    print(f"| {name} | {source} | {dims} | {ij:.1f} | {it:.1f} | {ij / it:.2f} |")


if __name__ == "__main__":
  app.run(main)
