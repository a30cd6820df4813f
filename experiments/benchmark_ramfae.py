"""Training throughput of RAMFAE: jaxad (JAX/XLA:CPU) vs a PyTorch CPU re-implementation.

Both sides train the same architecture (Table 1 of the paper, widths scaled by
``--base_features`` / ``--max_features``) on the same batch size and image size with the
same loss (GMSD + (1 - SSIM) + MSE, Delete Paste inputs) and Adam; images/s is measured
over ``--steps`` steps after ``--warmup`` steps (compilation / allocator warm-up), in one
process. The timed steps of the implementations are interleaved (ABBA order), so that all
of them see the same background load on a shared machine; images/s are reported from the
median and the best wall-clock step time and from the median CPU time (``process_time``,
which does not count time the process waited for a CPU). Each side gets ``--threads``
threads (default all CPUs; PyTorch ``torch.set_num_threads``, XLA its own pool, or
XLA's single-thread flags for ``--threads=1``). The jitted jaxad step donates the state.

The PyTorch model (:class:`TorchRAMFAE`) is written for this benchmark from the paper
and is also the independent reference of ``tests/models/test_ramfae.py`` (weights copied
from the Flax parameters, forward outputs equal to 1e-4). The PyTorch loss uses the same
definitions (Prewitt GMS with reflect padding, Gaussian SSIM 11/1.5 with reflect padding);
its Delete Paste is a simple per-image loop on the host (both sides include augmentation
in the timed step).

Usage:
  .venv/bin/python experiments/benchmark_ramfae.py \
      --image_size=64 --batch_size=16 --base_features=32 --max_features=256 --steps=6 --warmup=1
  # compare jaxad's per-jit step options (default) with XLA's defaults in one run:
  #   --compiler_options='default;none'
  # one core each: prefix with `taskset -c 1` and add --threads=1
  # each framework in its own process (large images: the two together press on RAM):
  #   --skip_torch, then --skip_jax
  # both frameworks with glibc's huge-page malloc (process-wide, re-executes the script):
  #   --glibc_hugetlb
"""

from __future__ import annotations

import functools
import os
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this file may be loaded by path
from benchmark_steps import interleaved, print_throughput_table  # noqa: E402
from torch_blocks import (CBR, TorchASPP, TorchCoordAtt, copy_bn, copy_conv, copy_convt,  # noqa: E402
                          ssim_map)

RUN_STEPS = 3250  # the cosine schedule's length: the paper's 250 epochs of bottle at batch 16

__all__ = ["TorchRAMFAE", "copy_flax_to_torch", "torch_loss"]


# ----------------------------------------------------------------------------- model


class EncoderBlock(nn.Sequential):
  def __init__(self, cin: int, cout: int, k: int, s: int):
    super().__init__(CBR(cin, cout, k, s, 1), CBR(cout, cout))


class DecoderBlock(nn.Module):
  """ConvTranspose 4/2/1 -> BN -> ReLU = u; out = u + CBR(CBR(u))."""

  def __init__(self, cin: int, cout: int, residual: bool = True):
    super().__init__()
    self.up = nn.ConvTranspose2d(cin, cout, 4, 2, 1)
    self.up_bn = nn.BatchNorm2d(cout)
    self.cbr1, self.cbr2 = CBR(cout, cout), CBR(cout, cout)
    self.residual = residual

  def forward(self, x):
    u = F.relu(self.up_bn(self.up(x)))
    y = self.cbr2(self.cbr1(u))
    return u + y if self.residual else y


class TorchRAMFAE(nn.Module):
  """RAMFAE (Table 1) in PyTorch; input/output NCHW in [0, 1] (Tanh output rescaled)."""

  def __init__(self, channels: int = 3, base_features: int = 64, max_features: int = 512,
               rates=(5, 7, 9), reduction: int = 32):
    super().__init__()
    c = [min(base_features * 2 ** i, max_features) for i in range(4)]
    self.enc0 = EncoderBlock(channels, c[0], 3, 1)
    self.enc1 = EncoderBlock(c[0], c[1], 4, 2)
    self.enc2 = EncoderBlock(c[1], c[2], 4, 2)
    self.enc3 = EncoderBlock(c[2], c[3], 4, 2)
    self.aspp = TorchASPP(c[3], c[3], rates)
    self.att = TorchCoordAtt(c[3], reduction)
    self.dec0 = DecoderBlock(c[3], c[2])
    self.dec1 = DecoderBlock(c[2], c[1])
    self.dec2 = DecoderBlock(c[1], c[0])
    self.out_conv = nn.Conv2d(c[0], channels, 3, 1, 1)

  def forward(self, x):
    h = 2 * x - 1
    h = self.enc3(self.enc2(self.enc1(self.enc0(h))))
    h = self.att(self.aspp(h))
    h = self.dec2(self.dec1(self.dec0(h)))
    return (torch.tanh(self.out_conv(h)) + 1) * 0.5


def copy_flax_to_torch(model: TorchRAMFAE, params, batch_stats) -> TorchRAMFAE:
  """Loads Flax ``RAMFAENet`` variables into :class:`TorchRAMFAE` (in place)."""
  for i in range(4):
    enc, p, s = getattr(model, f"enc{i}"), params[f"enc{i}"], batch_stats[f"enc{i}"]
    enc[0].load(p["cbr1"], s["cbr1"])
    enc[1].load(p["cbr2"], s["cbr2"])
  model.aspp.load(params["mffe_aspp"], batch_stats["mffe_aspp"])
  model.att.load(params["mffe_attention"], batch_stats["mffe_attention"])
  for i in range(3):
    dec, p, s = getattr(model, f"dec{i}"), params[f"dec{i}"], batch_stats[f"dec{i}"]
    copy_convt(dec.up, p["up"])
    copy_bn(dec.up_bn, p["up_bn"], s["up_bn"])
    dec.cbr1.load(p["cbr1"], s["cbr1"])
    dec.cbr2.load(p["cbr2"], s["cbr2"])
  copy_conv(model.out_conv, params["out_conv"])
  return model


# ----------------------------------------------------------------------------- loss


def _prewitt(c: int) -> torch.Tensor:
  hx = torch.tensor([[1.0, 0.0, -1.0]] * 3) / 3.0
  return torch.stack([hx, hx.t()])[:, None].repeat(c, 1, 1, 1)  # [2c, 1, 3, 3]


def _gms(x, y, c_const=170.0 / 255.0 ** 2):
  ch = x.shape[1]
  k = _prewitt(ch).to(x)

  def mag(a):
    g = F.conv2d(F.pad(a, (1, 1, 1, 1), mode="replicate"), k, groups=ch)
    g = g.view(a.shape[0], ch, 2, *a.shape[2:])
    return torch.sqrt((g ** 2).sum(2) + 1e-12)

  mx, my = mag(x), mag(y)
  return (2 * mx * my + c_const) / (mx ** 2 + my ** 2 + c_const)


def torch_loss(recon, target):
  """Mean over the batch of GMSD + (1 - SSIM) + MSE (images in [0, 1])."""
  gms = _gms(recon, target)
  gmsd = gms.flatten(2).std(2, unbiased=False).mean(1)
  ssim = ssim_map(recon, target).flatten(1).mean(1)
  mse = ((recon - target) ** 2).flatten(1).mean(1)
  return (gmsd + (1 - ssim) + mse).mean()


def torch_delete_paste(rng: np.random.Generator, x: torch.Tensor) -> torch.Tensor:
  """Per image: cut a rectangle (area 2-15%, aspect 0.3-3.3), zero it, paste it elsewhere."""
  out = x.clone()
  _, _, h, w = x.shape
  for i in range(x.shape[0]):
    area = rng.uniform(0.02, 0.15) * h * w
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
    ph = int(min(h, max(1, round(np.sqrt(area * aspect)))))
    pw = int(min(w, max(1, round(np.sqrt(area / aspect)))))
    sy, sx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    dy, dx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    patch = x[i, :, sy:sy + ph, sx:sx + pw].clone()
    out[i, :, sy:sy + ph, sx:sx + pw] = 0
    out[i, :, dy:dy + ph, dx:dx + pw] = patch
  return out


# ----------------------------------------------------------------------------- benchmark


class _TorchStep:
  """One PyTorch training step (Delete Paste on the host, forward, loss, backward, Adam)."""

  def __init__(self, cfg, images: np.ndarray):
    torch.manual_seed(0)
    self.model = TorchRAMFAE(cfg.channels, cfg.base_features, cfg.max_features, cfg.dilation_rates,
                             cfg.attention_reduction)
    self.model.train()
    self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
    self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=RUN_STEPS,
                                                            eta_min=1e-6)
    self.x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    self.rng = np.random.default_rng(0)

  def __call__(self, i: int) -> None:
    del i
    inp = torch_delete_paste(self.rng, self.x)
    self.opt.zero_grad(set_to_none=True)
    loss = torch_loss(self.model(inp), self.x)
    loss.backward()
    self.opt.step()
    self.sched.step()
    loss.item()


class _JaxStep:
  """One jitted jaxad step; the state is donated (updated in place)."""

  def __init__(self, cfg, images: np.ndarray, compiler_options: str = "default"):
    import jax

    from jaxad.models import ramfae
    from jaxad.models.protocol import Run
    from jaxad.train import compile as xla_compile
    self.jax = jax
    self.batch = {"image": jax.device_put(images)}
    run = Run(total_steps=RUN_STEPS, batch_size=images.shape[0])
    self.state = ramfae.init(cfg, run, jax.random.key(0), self.batch)
    self.step = jax.jit(functools.partial(ramfae.train_step, cfg, run), donate_argnums=0,
                        compiler_options=xla_compile.step_options(setting=compiler_options))

  def __call__(self, i: int) -> None:
    self.state, m = self.step(self.state, self.batch, self.jax.random.key(100 + i))
    self.jax.block_until_ready((self.state, m))


def main(argv) -> None:
  del argv
  from absl import flags
  f = flags.FLAGS
  if f.glibc_hugetlb and "glibc.malloc.hugetlb" not in os.environ.get("GLIBC_TUNABLES", ""):
    # glibc reads its tunables at process start: re-execute this script with the tunable set.
    env = dict(os.environ, GLIBC_TUNABLES=":".join(
        t for t in (os.environ.get("GLIBC_TUNABLES", ""), "glibc.malloc.hugetlb=1") if t))
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
  threads = f.threads or os.cpu_count() or 1
  if f.xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + f.xla_flags).strip()
  if threads == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1").strip()
  from jaxad.train import host_memory
  host = host_memory.apply_host_buffers(f.host_buffers)  # before JAX's CPU client exists
  import jax

  from jaxad.models import ramfae
  from jaxad.nn.layers import default_upsample
  torch.set_num_threads(threads)
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (f.batch_size, f.image_size, f.image_size, f.channels)).astype(np.float32)
  if f.skip_jax and f.skip_torch:
    raise SystemExit("--skip_jax and --skip_torch together leave nothing to time")
  steppers = {}
  for up in ([] if f.skip_jax else [u.strip() for u in f.upsample.split(",") if u.strip()]):
    for co in [c.strip() for c in f.compiler_options.split(";") if c.strip()]:
      cfg = ramfae.Config(image_size=f.image_size, channels=f.channels, base_features=f.base_features,
                          max_features=f.max_features, upsample=up)
      name = f"jaxad (upsample={up if up != 'auto' else 'auto=' + default_upsample()}, options={co})"
      steppers[name] = _JaxStep(cfg, images, co)
  cfg = ramfae.Config(image_size=f.image_size, channels=f.channels, base_features=f.base_features,
                      max_features=f.max_features)
  torch_name = f"PyTorch {torch.__version__} CPU"
  if not f.skip_torch:
    steppers[torch_name] = _TorchStep(cfg, images)
  t_start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
  res = interleaved(steppers, f.steps, f.warmup)
  b = f.batch_size
  print(f"\nRAMFAE training throughput, {f.image_size}x{f.image_size}x{f.channels}, batch {b}, widths "
        f"{ramfae.widths(cfg)}, {f.steps} interleaved timed steps after {f.warmup} warm-up; jax "
        f"{jax.__version__} backend {jax.default_backend()}, {os.cpu_count()} CPUs, {threads} thread(s) "
        f"each; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; GLIBC_TUNABLES="
        f"{os.environ.get('GLIBC_TUNABLES', '')!r}; {host}; timed from {t_start} UTC\n")
  print_throughput_table(res, b, torch_name)

if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_integer("image_size", 64, "square image side (divisible by 8)")
  flags.DEFINE_integer("channels", 3, "1 or 3")
  flags.DEFINE_integer("batch_size", 16, "batch size (paper: 16)")
  flags.DEFINE_integer("base_features", 64, "first encoder width (paper: 64)")
  flags.DEFINE_integer("max_features", 512, "width cap (paper: 512; MNIST: 128)")
  flags.DEFINE_integer("steps", 5, "timed steps per implementation")
  flags.DEFINE_integer("warmup", 2, "untimed steps first (includes XLA compilation)")
  flags.DEFINE_string("upsample", "auto", "comma-separated jaxad upsample paths (auto, subpixel, "
                      "transpose)")
  flags.DEFINE_bool("skip_torch", False, "measure only jaxad")
  flags.DEFINE_bool("skip_jax", False, "measure only PyTorch (with --skip_torch in another process: each "
                    "framework alone, e.g. at 256 px where both in one process need ~19 GB)")
  flags.DEFINE_string("compiler_options", "default", "';'-separated jaxad step compiler-option "
                      "settings to compare, each as JAXAD_XLA_CPU_OPTIONS takes it: 'default' "
                      "(jaxad.train.compile.CPU_OPTIONS), 'none' (XLA defaults) or a JSON object")
  flags.DEFINE_bool("glibc_hugetlb", False, "re-run with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "
                    "(process-wide, both frameworks): glibc backs large allocations with "
                    "transparent huge pages, so fresh buffers fault per 2 MiB instead of per 4 KiB")
  flags.DEFINE_enum("host_buffers", "auto", ["auto", "keep", "default"], "as train.py: keep "
                    "XLA:CPU's step buffers mapped between steps (process-wide, so PyTorch runs with "
                    "the same allocator settings) or not")
  flags.DEFINE_integer("threads", 0, "threads per framework (0 = all CPUs; 1 also sets XLA's "
                       "single-thread flags)")
  flags.DEFINE_string("xla_flags", "", "extra XLA_FLAGS for this process (set before jax starts)")
  app.run(main)
