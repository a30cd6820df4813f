"""Training throughput of the GAN methods: jaxad (JAX/XLA:CPU) vs PyTorch CPU, same model, same step.

``--method=scgan``: generator E1 (MS-CAM) -> decoder -> E2 and the GANomaly discriminator (widths
from ``--base_features``, latent ``--latent_dim``); CopyPaste inputs (30 patches of 1 %);
L_G = L_enc + 40 L_con + L_adv + 40 (1 - SSIM).
``--method=affgan``: the Skip-GANomaly U-Net with AFF-fused skips (widths from ``--base_features``,
capped at 512) and the DCGAN discriminator (widths from ``--base_features``); CutPaste inputs;
L_G = L_adv + 40 L_rec + L_lat (discriminator features).

Both sides then update D on BCE(D(x), 1) + BCE(D(G(x~)), 0) (fake detached) and read D's loss back
to the host (GANomaly's re-initialisation test), with Adam 2e-4 (0.5, 0.999) for both networks.
Before timing, the PyTorch networks get the jaxad weights and their outputs are checked equal
(eval mode; the largest difference is printed), so both sides compute the same function. Timing as
``benchmark_ramfae.py``: steps interleaved (ABBA), images/s from the median and best wall-clock step
and the median CPU time.

The PyTorch models are in ``experiments/torch_blocks.py`` (``TorchSCGANGenerator``,
``TorchSkipUNet``, ``TorchDiscriminator``), written from the papers and the GANomaly / Skip-GANomaly
code; their augmentations are per-image loops on the host (both sides include augmentation in the
timed step).

``--jax_devices=2`` times jaxad's own multi-device path on the CPU: the batch split over two XLA
host devices of one thread each (one per core), the state replicated, as ``train.py`` runs on a mesh
(BatchNorm statistics and losses over the whole batch: the same step).

Usage:
  .venv/bin/python experiments/benchmark_gan.py --method=scgan --image_size=64 --batch_size=16 \
      --base_features=32 --steps=10 --warmup=2
"""

from __future__ import annotations

import functools
import os
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this file may be loaded by path
from benchmark_steps import interleaved, print_throughput_table  # noqa: E402
from torch_blocks import (TorchDiscriminator, TorchSCGANGenerator, TorchSkipUNet,  # noqa: E402
                          nchw_to_nhwc, nhwc_to_nchw, ssim_map)

METHODS = ("scgan", "affgan")


def torch_copy_paste(rng: np.random.Generator, x: torch.Tensor, num_patches: int, side: int) -> torch.Tensor:
  """Per image: ``num_patches`` squares copied from the original image, pasted at random places."""
  out = x.clone()
  _, _, h, w = x.shape
  for i in range(x.shape[0]):
    for _ in range(num_patches):
      sy, sx = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
      dy, dx = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
      out[i, :, dy:dy + side, dx:dx + side] = x[i, :, sy:sy + side, sx:sx + side]
  return out


def torch_cut_paste(rng: np.random.Generator, x: torch.Tensor) -> torch.Tensor:
  """Per image: one rectangle (area 2-15 %, aspect log-uniform 0.3-3.3) cut and pasted elsewhere."""
  out = x.clone()
  _, _, h, w = x.shape
  for i in range(x.shape[0]):
    area = rng.uniform(0.02, 0.15) * h * w
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
    ph = int(min(h, max(1, round(np.sqrt(area / aspect)))))
    pw = int(min(w, max(1, round(np.sqrt(area * aspect)))))
    sy, sx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    dy, dx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    out[i, :, dy:dy + ph, dx:dx + pw] = x[i, :, sy:sy + ph, sx:sx + pw]
  return out


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
  return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _torch_nets(method: str, cfg, g_vars, d_vars):
  """PyTorch generator and discriminator of ``cfg`` loaded with the jaxad variables."""
  from jaxad.models import affgan, scgan
  if method == "scgan":
    g = TorchSCGANGenerator(cfg.channels, scgan.widths(cfg), cfg.latent_dim, cfg.use_mscam,
                            cfg.mscam_reduction)
  else:
    g = TorchSkipUNet(cfg.channels, affgan.unet_widths(cfg), cfg.fusion, cfg.aff_reduction)
  d = TorchDiscriminator(cfg.channels, _module(method)._discriminator(cfg).widths)
  g.load(g_vars["params"], g_vars["batch_stats"])
  d.load(d_vars["params"], d_vars["batch_stats"])
  return g, d


def _module(method: str):
  from jaxad import models
  return models.get(method)


class _TorchStep:
  """One PyTorch step: augmentation on the host, G update, D update, D's loss to the host."""

  def __init__(self, method: str, cfg, images: np.ndarray, g_vars, d_vars):
    from jaxad.augment import patch_side
    self.method = method
    self.g, self.d = _torch_nets(method, cfg, g_vars, d_vars)
    self.g.train()
    self.d.train()
    adam = functools.partial(torch.optim.Adam, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
    self.opt_g, self.opt_d = adam(self.g.parameters()), adam(self.d.parameters())
    self.x = nhwc_to_nchw(images)
    self.rng = np.random.default_rng(0)
    if method == "scgan":
      self.n, self.side = cfg.num_patches, patch_side(cfg.image_size, cfg.image_size, cfg.patch_area)

  def _g_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if self.method == "scgan":
      fake, z1, z2 = self.g(torch_copy_paste(self.rng, x, self.n, self.side))
      logit_fake, _ = self.d(2 * fake - 1)
      loss = (((z1 - z2) ** 2).mean() + 40 * (x - fake).abs().mean() + _bce(logit_fake, 1.0)
              + 40 * (1 - ssim_map(fake, x).flatten(1).mean(1)).mean())
      return loss, fake
    fake = self.g(torch_cut_paste(self.rng, x))
    logit_fake, f_fake = self.d(2 * fake - 1)
    _, f_real = self.d(2 * x - 1)
    loss = _bce(logit_fake, 1.0) + 40 * (x - fake).abs().mean() + ((f_real.detach() - f_fake) ** 2).mean()
    return loss, fake

  def __call__(self, i: int) -> None:
    del i
    x = self.x
    loss_g, fake = self._g_loss(x)
    self.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    self.opt_g.step()
    logit_real, _ = self.d(2 * x - 1)
    logit_fake, _ = self.d(2 * fake.detach() - 1)
    loss_d = _bce(logit_real, 1.0) + _bce(logit_fake, 0.0)
    self.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    self.opt_d.step()
    loss_d.item()


class _JaxStep:
  """One jitted jaxad step of the method; the state is donated (updated in place)."""

  def __init__(self, method: str, cfg, state, images: np.ndarray, devices: int = 1):
    import jax

    from jaxad.models.protocol import Run
    from jaxad.train import compile as xla_compile
    from jaxad.train import mesh as mesh_lib
    self.jax = jax
    mesh = mesh_lib.make_mesh(devices)
    mesh_lib.check_batch_size(images.shape[0], mesh)
    # The engine's layout: batch split over the "data" axis, state replicated (one device: plain).
    self.batch = {"image": jax.device_put(images, mesh_lib.data_sharding(mesh))}
    self.state = mesh_lib.replicate(state, mesh)
    self.step = jax.jit(functools.partial(_module(method).train_step, cfg, Run(batch_size=images.shape[0])),
                        donate_argnums=0, compiler_options=xla_compile.step_options())

  def __call__(self, i: int) -> None:
    self.state, m = self.step(self.state, self.batch, self.jax.random.key(100 + i))
    float(m["loss_d"])  # GANomaly reads D's loss every step (its re-initialisation test)


def max_output_difference(method: str, cfg, state, images: np.ndarray) -> float:
  """Max |jaxad - PyTorch| over G's outputs and D's logits (eval mode, copied weights)."""
  import jax
  mod = _module(method)
  g_vars = jax.device_get(state.generator.variables())
  d_vars = jax.device_get(state.discriminator.variables())
  tg, td = _torch_nets(method, cfg, g_vars, d_vars)
  tg.eval()
  td.eval()
  gen = mod.Generator(cfg) if method == "scgan" else mod.SkipUNet(cfg)
  outs = gen.apply(g_vars, images, train=False)
  logit, _ = mod._discriminator(cfg).apply(d_vars, 2 * images - 1, train=False)
  with torch.no_grad():
    touts = tg(nhwc_to_nchw(images))
    tlogit, _ = td(nhwc_to_nchw(2 * images - 1))
  if method == "affgan":
    outs, touts = (outs,), (touts,)
  diffs = [np.abs(np.asarray(logit) - tlogit.numpy()).max()]
  for a, b in zip(outs, touts):
    b = nchw_to_nhwc(b) if b.ndim == 4 else b.numpy()
    diffs.append(np.abs(np.asarray(a) - b).max())
  return float(max(diffs))


def make_config(method: str, f):
  """The benchmarked config: the method's defaults at the flags' size and widths."""
  mod = _module(method)
  common = dict(image_size=f.image_size, channels=f.channels, base_features=f.base_features)
  if method == "scgan":
    return mod.Config(latent_dim=f.latent_dim, **common)
  return mod.Config(disc_base_features=f.base_features, **common)


def main(argv) -> None:
  del argv
  from absl import flags
  f = flags.FLAGS
  threads = f.threads or os.cpu_count() or 1
  xla_flags = []
  if f.jax_devices > 1:
    xla_flags.append(f"--xla_force_host_platform_device_count={f.jax_devices}")
  if threads == 1 or f.jax_devices > 1:
    # The bare word must come last: XLA stops reading flags at it.
    xla_flags += ["--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
  # XLA reads XLA_FLAGS when its CPU client starts (first use of jax below), not at import.
  os.environ["XLA_FLAGS"] = " ".join(xla_flags + [os.environ.get("XLA_FLAGS", "")]).strip()
  from jaxad.train import host_memory
  host = host_memory.apply_host_buffers(f.host_buffers)  # before JAX's CPU client exists
  import jax

  from jaxad.models.protocol import Run
  torch.set_num_threads(threads)
  cfg = make_config(f.method, f)
  images = np.random.default_rng(0).uniform(
      0, 1, (f.batch_size, f.image_size, f.image_size, f.channels)).astype(np.float32)
  state = _module(f.method).init(cfg, Run(batch_size=f.batch_size), jax.random.key(0), {"image": images})
  diff = max_output_difference(f.method, cfg, state, images[:4])
  if diff > 1e-4:
    raise SystemExit(f"PyTorch and jaxad {f.method} differ by {diff:.2e} (> 1e-4): not the same model")
  g_vars = jax.device_get(state.generator.variables())
  d_vars = jax.device_get(state.discriminator.variables())
  jax_name = "jaxad" if f.jax_devices <= 1 else f"jaxad, {f.jax_devices} host devices x 1 thread"
  steppers = {jax_name: _JaxStep(f.method, cfg, state, images, max(f.jax_devices, 1))}
  torch_name = f"PyTorch {torch.__version__} CPU"
  if not f.skip_torch:
    steppers[torch_name] = _TorchStep(f.method, cfg, images, g_vars, d_vars)
  t_start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
  res = interleaved(steppers, f.steps, f.warmup)
  counts = _module(f.method).param_count(cfg)
  print(f"\n{f.method} training throughput (G + D step), {f.image_size}x{f.image_size}x{f.channels}, "
        f"batch {f.batch_size}, base width {f.base_features}, parameters G {counts['generator']:,} / "
        f"D {counts['discriminator']:,}; outputs equal to {diff:.1e}; {f.steps} interleaved timed steps "
        f"after {f.warmup} warm-up; jax {jax.__version__} backend {jax.default_backend()}, "
        f"{os.cpu_count()} CPUs, {threads} thread(s) each"
        + (f" (jaxad: {f.jax_devices} XLA host devices of 1 thread, batch split)" if f.jax_devices > 1 else "")
        + f"; {host}; timed from {t_start} UTC\n")
  print_throughput_table(res, f.batch_size, None if f.skip_torch else torch_name)


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_enum("method", "scgan", list(METHODS), "GAN method to time")
  flags.DEFINE_integer("image_size", 64, "square image side, a power of two in [32, 512]")
  flags.DEFINE_integer("channels", 3, "1 or 3")
  flags.DEFINE_integer("batch_size", 16, "batch size (papers: 64)")
  flags.DEFINE_integer("base_features", 32, "first width of G and D (papers / GANomaly: 64)")
  flags.DEFINE_integer("latent_dim", 100, "SCGAN latent size (GANomaly: 100)")
  flags.DEFINE_integer("steps", 10, "timed steps per implementation")
  flags.DEFINE_integer("warmup", 2, "untimed steps first (includes XLA compilation)")
  flags.DEFINE_bool("skip_torch", False, "measure only jaxad")
  flags.DEFINE_enum("host_buffers", "auto", ["auto", "keep", "default"], "as train.py: keep "
                    "XLA:CPU's step buffers mapped between steps (process-wide, so PyTorch runs with "
                    "the same allocator settings) or not")
  flags.DEFINE_integer("threads", 0, "threads per framework (0 = all CPUs; 1 also sets XLA's "
                       "single-thread flags)")
  flags.DEFINE_integer("jax_devices", 0, "> 1: jaxad runs data-parallel over this many XLA host "
                       "devices of one thread each (the engine's multi-device path on CPU cores; "
                       "batch split, BatchNorm statistics over the whole batch)")
  app.run(main)
