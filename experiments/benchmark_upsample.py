"""Upsampler speed: 4/2/1 transposed conv vs the equivalent sub-pixel conv (+ PyTorch).

Times one training-style pass (forward + gradients w.r.t. input and kernel, summed-square
loss) of :class:`jaxad.nn.layers.Upsample2x` with ``method="transpose"`` (dilated-input
convolution, what ``ConvTranspose`` lowers to) and ``method="subpixel"`` (one 2x2 conv to
4x the channels + depth-to-space + crop, same parameters and outputs), and PyTorch's
``ConvTranspose2d(k=4, s=2, p=1)`` on the CPU as the reference. The shapes are those of
RAMFAE's three decoder blocks at the given image size and width.

Usage:
  .venv/bin/python experiments/benchmark_upsample.py \
      --image_size=256 --batch_size=16 --base_features=64
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this file may be loaded by path
from benchmark_steps import median_seconds  # noqa: E402

flags.DEFINE_integer("image_size", 256, "RAMFAE input side; decoder inputs are 1/8, 1/4, 1/2 of it")
flags.DEFINE_integer("batch_size", 16, "batch size")
flags.DEFINE_integer("base_features", 64, "RAMFAE base width (decoder widths 4x, 2x, 1x of it)")
flags.DEFINE_integer("max_features", 512, "width cap")
flags.DEFINE_integer("repeats", 5, "timed calls per case (median reported)")
flags.DEFINE_bool("skip_torch", False, "measure only jaxad")
FLAGS = flags.FLAGS


def main(argv) -> None:
  del argv
  import jax
  import jax.numpy as jnp

  from jaxad.nn.layers import Upsample2x, default_upsample

  s, b = FLAGS.image_size, FLAGS.batch_size
  c = [min(FLAGS.base_features * 2 ** i, FLAGS.max_features) for i in range(4)]
  cases = [(s // 8, c[3], c[2]), (s // 4, c[2], c[1]), (s // 2, c[1], c[0])]
  torch = None
  if not FLAGS.skip_torch:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
  rows = []
  for hw, cin, cout in cases:
    x = jax.random.normal(jax.random.key(0), (b, hw, hw, cin))
    res = {}
    for method in ("transpose", "subpixel"):
      mod = Upsample2x(cout, method=method)
      params = mod.init(jax.random.key(1), x)["params"]

      def loss(p, x, mod=mod):
        return jnp.sum(jnp.square(mod.apply({"params": p}, x)))

      fwd = jax.jit(lambda p, x, mod=mod: mod.apply({"params": p}, x))
      grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
      res[method + "_fwd"] = median_seconds(lambda: jax.block_until_ready(fwd(params, x)), FLAGS.repeats)
      res[method] = median_seconds(lambda: jax.block_until_ready(grad(params, x)), FLAGS.repeats)
    if torch is not None:
      conv = torch.nn.ConvTranspose2d(cin, cout, 4, 2, 1)
      xt = torch.randn(b, cin, hw, hw, requires_grad=True)

      def torch_step():
        conv.zero_grad(set_to_none=True)
        xt.grad = None
        (conv(xt) ** 2).sum().backward()

      def torch_fwd():
        with torch.no_grad():
          conv(xt)

      res["torch_fwd"] = median_seconds(torch_fwd, FLAGS.repeats)
      res["torch"] = median_seconds(torch_step, FLAGS.repeats)
    rows.append(((hw, cin, cout), res))

  print(f"\nUpsample2x (4/2/1) timings, batch {b}, median of {FLAGS.repeats}; jax {jax.__version__} "
        f"backend {jax.default_backend()} (default path: {default_upsample()}), {os.cpu_count()} CPUs"
        + ("" if torch is None else f", torch {torch.__version__} {torch.get_num_threads()} threads") + "\n")
  print("| input HxW, C_in -> C_out | transpose fwd (ms) | subpixel fwd (ms) | transpose fwd+bwd (ms) "
        "| subpixel fwd+bwd (ms) | speed-up | PyTorch ConvTranspose2d fwd / fwd+bwd (ms) |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for (hw, cin, cout), r in rows:
    t = "-" if "torch" not in r else f"{1e3 * r['torch_fwd']:.1f} / {1e3 * r['torch']:.1f}"
    print(f"| {hw}x{hw}, {cin} -> {cout} | {1e3 * r['transpose_fwd']:.1f} | {1e3 * r['subpixel_fwd']:.1f} "
          f"| {1e3 * r['transpose']:.1f} | {1e3 * r['subpixel']:.1f} | "
          f"{r['transpose'] / r['subpixel']:.1f}x | {t} |")


if __name__ == "__main__":
  app.run(main)
