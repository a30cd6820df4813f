"""Times jaxad SSIM / GMSD / MSGMS forward+backward against PyTorch CPU equivalents.

References, in the same process:
  * SSIM: ``pytorch_msssim.ssim`` (separable Gaussian, grouped conv2d, "valid") when installed
    (``pip install pytorch-msssim``), else an equivalent written here.
  * GMSD / MSGMS: torch modules written the RIAD way (Prewitt grouped conv2d, padding 1,
    ``sqrt(.. + 1e-12)``, c = 0.0026, ``avg_pool2d`` pyramid).

Each timing is the median of ``--repeats`` runs of ``loss.sum()`` + gradient w.r.t. ``x`` (after a
warm-up / compile run); jaxad runs under ``jax.jit``. The implementations alternate per repeat so
other processes on the machine slow both alike. Prints a Markdown table.

  python experiments/benchmark_losses.py
  # both libraries on one core, only the SSIM rows:
  taskset -c 1 python experiments/benchmark_losses.py --torch_threads 1 --cases ssim_same,ssim_valid
"""

from __future__ import annotations

import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from jaxad import losses

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 16, "Batch size.")
flags.DEFINE_integer("size", 256, "Image height and width.")
flags.DEFINE_integer("channels", 3, "Channels.")
flags.DEFINE_integer("repeats", 5, "Timed repetitions (median reported).")
flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0 = torch default).")
flags.DEFINE_list("cases", [], "Subset of rows to run, e.g. 'ssim_same,ssim_valid' "
                  "(ssim_same, ssim_valid, gmsd, msgms); empty = all.")


def _torch_refs():
  import torch
  import torch.nn.functional as F

  try:
    from pytorch_msssim import ssim as ms_ssim
    ssim_name = "pytorch_msssim.ssim"
  except ImportError:  # pragma: no cover - fallback written like pytorch_msssim
    ssim_name = "torch grouped-conv SSIM (pytorch_msssim style)"

    def ms_ssim(x, y, data_range):
      c = x.shape[1]
      g = torch.arange(11, dtype=torch.float32) - 5
      g = torch.exp(-g ** 2 / (2 * 1.5 ** 2))
      g = (g / g.sum()).view(1, 1, 1, 11).repeat(c, 1, 1, 1)
      def blur(t):
        t = F.conv2d(t, g, groups=c)
        return F.conv2d(t, g.transpose(2, 3), groups=c)
      c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
      mx, my = blur(x), blur(y)
      sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
      s = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
      return s.mean()

  class RiadGMS:
    """GMS / MSGMS as in the RIAD reference code (per channel, zero padding 1)."""

    def __init__(self, channels):
      px = torch.tensor([[1., 0., -1.]] * 3) / 3.0
      self.kx = px.view(1, 1, 3, 3).repeat(channels, 1, 1, 1)
      self.ky = px.t().contiguous().view(1, 1, 3, 3).repeat(channels, 1, 1, 1)
      self.c = channels

    def gms(self, a, b, c=0.0026):
      def mag(t):
        gx = F.conv2d(t, self.kx, padding=1, groups=self.c)
        gy = F.conv2d(t, self.ky, padding=1, groups=self.c)
        return torch.sqrt(gx ** 2 + gy ** 2 + 1e-12)
      ma, mb = mag(a), mag(b)
      return (2 * ma * mb + c) / (ma ** 2 + mb ** 2 + c)

    def gmsd(self, a, b):
      return self.gms(a, b).std(dim=(2, 3), unbiased=False).mean()

    def msgms_loss(self, a, b, scales=4):
      total = 0.0
      for i in range(scales):
        if i:
          a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        total = total + torch.mean(1 - self.gms(a, b))
      return total / scales

  return torch, ssim_name, ms_ssim, RiadGMS


def main(argv):
  del argv
  torch, ssim_name, ms_ssim, RiadGMS = _torch_refs()
  if FLAGS.torch_threads:
    torch.set_num_threads(FLAGS.torch_threads)
  b, s, c = FLAGS.batch, FLAGS.size, FLAGS.channels
  rng = np.random.default_rng(0)
  x_np = rng.random((b, s, s, c), dtype=np.float32)
  y_np = np.clip(x_np + rng.normal(0, 0.1, x_np.shape), 0, 1).astype(np.float32)
  xj, yj = jnp.asarray(x_np), jnp.asarray(y_np)
  xt = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2)))
  yt = torch.from_numpy(np.ascontiguousarray(y_np.transpose(0, 3, 1, 2)))
  riad = RiadGMS(c)

  cases = {
      "SSIM (same)": (lambda a, b_: losses.ssim_loss(a, b_, max_val=1.0),
                      lambda a, b_: 1 - ms_ssim(a, b_, data_range=1.0), ssim_name),
      "SSIM (valid)": (lambda a, b_: losses.ssim_loss(a, b_, max_val=1.0, padding="valid"),
                       lambda a, b_: 1 - ms_ssim(a, b_, data_range=1.0), ssim_name),
      "GMSD": (lambda a, b_: losses.gmsd(a, b_, max_val=1.0), riad.gmsd, "RIAD-style torch GMS"),
      "MSGMS loss": (lambda a, b_: losses.msgms_loss(a, b_, max_val=1.0), riad.msgms_loss,
                     "RIAD-style torch MSGMS"),
  }
  keys = dict(zip(("ssim_same", "ssim_valid", "gmsd", "msgms"), cases))
  unknown = [k for k in FLAGS.cases if k not in keys]
  if unknown:
    raise app.UsageError(f"--cases: unknown {unknown}; choose from {sorted(keys)}.")
  if FLAGS.cases:
    cases = {keys[k]: cases[keys[k]] for k in FLAGS.cases}
  rows = []
  for name, (jfn, tfn, tname) in cases.items():
    jgrad = jax.jit(jax.value_and_grad(lambda a, b_: jnp.sum(jfn(a, b_))))
    jfwd = jax.jit(lambda a, b_: jnp.sum(jfn(a, b_)))
    jv = float(jfwd(xj, yj)) / b  # mean over the batch, comparable with torch's mean

    def run_jax_fb():
      v, g = jgrad(xj, yj)
      jax.block_until_ready(g)

    def run_jax_f():
      jax.block_until_ready(jfwd(xj, yj))

    def run_torch_fb():
      a = xt.clone().requires_grad_(True)
      loss = tfn(a, yt).sum()
      loss.backward()

    def run_torch_f():
      with torch.no_grad():
        tfn(xt, yt)

    with torch.no_grad():
      tv = float(tfn(xt, yt))
    # Interleave: jax, torch, jax, torch ...
    jf, tf, jfb, tfb = [], [], [], []
    for fn in (run_jax_f, run_torch_f, run_jax_fb, run_torch_fb):
      fn()
    for _ in range(FLAGS.repeats):
      for fn, acc in ((run_jax_f, jf), (run_torch_f, tf), (run_jax_fb, jfb), (run_torch_fb, tfb)):
        t0 = time.perf_counter()
        fn()
        acc.append(time.perf_counter() - t0)
    med = lambda v: 1000.0 * float(np.median(v))
    rows.append((name, tname, med(jf), med(tf), med(jfb), med(tfb), jv, tv))

  print(f"\nbatch {b}x{s}x{s}x{c} float32, jax {jax.__version__} ({jax.default_backend()}), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), median of "
        f"{FLAGS.repeats}; {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
  print("| loss | torch reference | jaxad fwd ms | torch fwd ms | jaxad fwd+bwd ms | "
        "torch fwd+bwd ms | speed-up fwd+bwd (torch/jaxad) | loss jaxad / torch |")
  print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
  for name, tname, jf, tf, jfb, tfb, jv, tv in rows:
    print(f"| {name} | {tname} | {jf:.0f} | {tf:.0f} | {jfb:.0f} | {tfb:.0f} | {tfb / jfb:.2f}x | "
          f"{jv:.5f} / {tv:.5f} |")


if __name__ == "__main__":
  app.run(main)
