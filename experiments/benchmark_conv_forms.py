"""Speed of the compute forms of ``jaxad.nn.conv`` (convolution, matrix product, tap sum) + PyTorch.

Times one training-style pass (forward + gradients w.r.t. input and kernel of a summed-square
loss) of a stride-1 convolution in each exact form of :mod:`jaxad.nn.conv`, and of PyTorch's
``Conv2d`` on the same shape (NCHW, its default path), in one process:

* ``conv``: ``lax.conv_general_dilated`` (XLA:CPU: Eigen with the engine's compile options);
* ``matmul``: the shifted views concatenated on channels, one matrix product;
* ``tap_sum``: one matrix product per kernel tap over the output window that reads the input.

Cases are ``H:C_in:C_out:k:pad:dilation``; the defaults are the shapes behind the ``"auto"`` rules:
the 2x2 convolutions at the bottom of AFF-GAN's U-Net (``pad`` given to the padded input, as the
sub-pixel upsampler and the space-to-depth convolution do) and RAMFAE's dilated ASPP branches on
8x8 and 32x32 maps. ``--threads=1`` pins XLA and PyTorch to one thread (run under ``taskset``).

Usage:
  .venv/bin/python experiments/benchmark_conv_forms.py --batch_size=16 --threads=1
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this file may be loaded by path
from benchmark_steps import median_seconds  # noqa: E402

DEFAULT_CASES = ("2:2048:512:2:0:1,3:2048:512:2:0:1,4:1024:1024:2:0:1,6:1024:256:2:0:1,"
                 "10:512:128:2:0:1,34:128:32:2:0:1,8:512:512:3:5:5,8:512:512:3:7:7,8:512:512:3:1:1,"
                 "16:256:256:3:1:1,32:512:512:3:9:9")

flags.DEFINE_string("cases", DEFAULT_CASES, "comma-separated H:C_in:C_out:k:pad:dilation")
flags.DEFINE_integer("batch_size", 16, "batch size")
flags.DEFINE_integer("repeats", 7, "timed calls per form (median reported)")
flags.DEFINE_integer("threads", 0, "threads per framework (0 = all CPUs; 1 also sets XLA's single-thread flags)")
flags.DEFINE_bool("skip_torch", False, "measure only jaxad")
FLAGS = flags.FLAGS


def _parse(case: str) -> tuple[int, ...]:
  parts = case.split(":")
  if len(parts) != 6:
    raise ValueError(f"case {case!r} is not H:C_in:C_out:k:pad:dilation")
  return tuple(int(p) for p in parts)


def main(argv) -> None:
  del argv
  threads = FLAGS.threads or os.cpu_count() or 1
  if threads == 1:  # read when JAX's CPU client starts; the bare word must come last
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1").strip()
  from jaxad.train import host_memory
  host = host_memory.apply_host_buffers("auto")  # as the engine; before JAX's CPU client exists
  import jax
  import jax.numpy as jnp

  from jaxad.nn.conv import conv_tap_sum, conv_valid, live_fraction
  from jaxad.train import compile as xla_compile

  torch = None
  if not FLAGS.skip_torch:
    import torch
    torch.set_num_threads(threads)
  b = FLAGS.batch_size
  opts = xla_compile.step_options()
  print(f"Conv forms, fwd + input and kernel gradients, batch {b}, {threads} thread(s); jax "
        f"{jax.__version__} ({jax.default_backend()}); {host}; "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC\n")
  print("| input | kernel | pad, dilation | live share | conv ms | matmul ms | tap_sum ms | PyTorch ms |")
  print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
  for case in FLAGS.cases.split(","):
    h, cin, cout, k, p, d = _parse(case.strip())
    pad = ((p, p), (p, p))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((b, h, h, cin)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin), jnp.float32)
    forms = {"conv": lambda a, c: conv_valid(a, c, pad, d, form="conv"),
             "matmul": lambda a, c: conv_valid(a, c, pad, d, form="matmul"),
             "tap_sum": lambda a, c: conv_tap_sum(a, c, pad, d)}
    ms = {}
    for name, f in forms.items():
      grad = jax.jit(jax.grad(lambda a, c, f=f: jnp.sum(jnp.square(f(a, c))), argnums=(0, 1)),
                     compiler_options=opts)
      ms[name] = 1000 * median_seconds(lambda grad=grad: jax.block_until_ready(grad(x, w)), FLAGS.repeats)
    t_ms = float("nan")
    if torch is not None:
      conv = torch.nn.Conv2d(cin, cout, k, 1, p, dilation=d, bias=False)
      xt = torch.randn(b, cin, h, h, requires_grad=True)

      def torch_step(conv=conv, xt=xt):
        conv.zero_grad(set_to_none=True)
        xt.grad = None
        (conv(xt) ** 2).sum().backward()

      t_ms = 1000 * median_seconds(torch_step, FLAGS.repeats)
    live = live_fraction(x.shape, w.shape, pad, d)
    print(f"| {h}x{h}x{cin} | {k}x{k} -> {cout} | {p}, {d} | {live:.2f} | {ms['conv']:.1f} | "
          f"{ms['matmul']:.1f} | {ms['tap_sum']:.1f} | {t_ms:.1f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
