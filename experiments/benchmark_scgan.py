"""Training throughput of SCGAN: jaxad (JAX/XLA:CPU) vs a PyTorch CPU implementation of the same model.

Both sides train the same generator (E1 with MS-CAM -> decoder -> E2) and discriminator (GANomaly
layout, widths from ``--base_features``, latent ``--latent_dim``) at the same image size and batch,
with the same step: CopyPaste inputs (N patches of 1 % area), L_G = L_enc + 40 L_con + L_adv +
40 (1 - SSIM), one Adam step of G, then the discriminator BCE on real and (detached) fake images and
one Adam step of D, and the loss read back to the host (GANomaly's D re-initialisation test). Before
timing, the PyTorch generator and discriminator get the jaxad weights and their outputs are checked
equal (eval mode, 1e-4), so the two sides compute the same function. Timing as
``benchmark_ramfae.py`` (interleaved steps, median / best wall and median CPU time).

The PyTorch model is ``experiments/torch_blocks.py`` (``TorchSCGANGenerator``,
``TorchDiscriminator``), written from the papers and GANomaly's code; its CopyPaste is a per-image
loop on the host (both sides include augmentation in the timed step).

Usage:
  .venv/bin/python experiments/benchmark_scgan.py --image_size=64 --batch_size=16 \
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
from torch_blocks import (TorchDiscriminator, TorchSCGANGenerator, nchw_to_nhwc,  # noqa: E402
                          nhwc_to_nchw, ssim_map)


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


class _TorchStep:
  """One PyTorch SCGAN step (CopyPaste on the host, G update, D update, loss to the host)."""

  def __init__(self, cfg, widths, images: np.ndarray, variables):
    from jaxad.augment import patch_side
    self.g = TorchSCGANGenerator(cfg.channels, widths, cfg.latent_dim, cfg.use_mscam, cfg.mscam_reduction)
    self.d = TorchDiscriminator(cfg.channels, widths)
    g_vars, d_vars = variables
    self.g.load(g_vars["params"], g_vars["batch_stats"])
    self.d.load(d_vars["params"], d_vars["batch_stats"])
    self.g.train()
    self.d.train()
    adam = functools.partial(torch.optim.Adam, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
    self.opt_g, self.opt_d = adam(self.g.parameters()), adam(self.d.parameters())
    self.x = nhwc_to_nchw(images)
    self.rng = np.random.default_rng(0)
    self.n, self.side = cfg.num_patches, patch_side(cfg.image_size, cfg.image_size, cfg.patch_area)

  def __call__(self, i: int) -> None:
    del i
    x = self.x
    inp = torch_copy_paste(self.rng, x, self.n, self.side)
    fake, z1, z2 = self.g(inp)
    logit_fake, _ = self.d(2 * fake - 1)
    loss_g = (((z1 - z2) ** 2).mean() + 40 * (x - fake).abs().mean()
              + F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
              + 40 * (1 - ssim_map(fake, x).flatten(1).mean(1)).mean())
    self.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    self.opt_g.step()
    logit_real, _ = self.d(2 * x - 1)
    logit_fake, _ = self.d(2 * fake.detach() - 1)
    loss_d = (F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
              + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))
    self.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    self.opt_d.step()
    loss_d.item()


class _JaxStep:
  """One jitted jaxad SCGAN step; the state is donated (updated in place)."""

  def __init__(self, cfg, state, images: np.ndarray):
    import jax

    from jaxad.models import scgan
    from jaxad.models.protocol import Run
    from jaxad.train import compile as xla_compile
    self.jax = jax
    self.batch = {"image": jax.device_put(images)}
    self.state = state
    self.step = jax.jit(functools.partial(scgan.train_step, cfg, Run(batch_size=images.shape[0])),
                        donate_argnums=0, compiler_options=xla_compile.step_options())

  def __call__(self, i: int) -> None:
    self.state, m = self.step(self.state, self.batch, self.jax.random.key(100 + i))
    float(m["loss_d"])  # GANomaly reads D's loss every step (its re-initialisation test)


def check_same_function(cfg, widths, state, images: np.ndarray) -> float:
  """Max |jaxad - PyTorch| of G's reconstruction, z1, z2 and D's logits (eval mode, copied weights)."""
  import jax

  from jaxad.models import scgan
  g_vars, d_vars = jax.device_get(state.generator.variables()), jax.device_get(state.discriminator.variables())
  tg = TorchSCGANGenerator(cfg.channels, widths, cfg.latent_dim, cfg.use_mscam, cfg.mscam_reduction).eval()
  td = TorchDiscriminator(cfg.channels, widths).eval()
  tg.load(g_vars["params"], g_vars["batch_stats"])
  td.load(d_vars["params"], d_vars["batch_stats"])
  y, z1, z2 = scgan.Generator(cfg).apply(g_vars, images, train=False)
  logit, _ = scgan.Discriminator(widths).apply(d_vars, 2 * images - 1, train=False)
  with torch.no_grad():
    ty, tz1, tz2 = tg(nhwc_to_nchw(images))
    tlogit, _ = td(nhwc_to_nchw(2 * images - 1))
  diffs = [np.abs(np.asarray(y) - nchw_to_nhwc(ty)).max(), np.abs(np.asarray(z1) - tz1.numpy()).max(),
           np.abs(np.asarray(z2) - tz2.numpy()).max(), np.abs(np.asarray(logit) - tlogit.numpy()).max()]
  return float(max(diffs))


def main(argv) -> None:
  del argv
  from absl import flags
  f = flags.FLAGS
  threads = f.threads or os.cpu_count() or 1
  import jax

  from jaxad.models import scgan
  from jaxad.models.protocol import Run
  torch.set_num_threads(threads)
  cfg = scgan.Config(image_size=f.image_size, channels=f.channels, base_features=f.base_features,
                     latent_dim=f.latent_dim)
  widths = scgan.widths(cfg)
  images = np.random.default_rng(0).uniform(
      0, 1, (f.batch_size, f.image_size, f.image_size, f.channels)).astype(np.float32)
  state = scgan.init(cfg, Run(batch_size=f.batch_size), jax.random.key(0), {"image": images})
  diff = check_same_function(cfg, widths, state, images[:4])
  if diff > 1e-4:
    raise SystemExit(f"PyTorch and jaxad SCGAN differ by {diff:.2e} (> 1e-4): not the same model")
  g_vars = jax.device_get(state.generator.variables())
  d_vars = jax.device_get(state.discriminator.variables())
  steppers = {"jaxad": _JaxStep(cfg, state, images)}
  torch_name = f"PyTorch {torch.__version__} CPU"
  if not f.skip_torch:
    steppers[torch_name] = _TorchStep(cfg, widths, images, (g_vars, d_vars))
  t_start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
  res = interleaved(steppers, f.steps, f.warmup)
  print(f"\nSCGAN training throughput (G + D step), {f.image_size}x{f.image_size}x{f.channels}, batch "
        f"{f.batch_size}, widths {widths}, latent {cfg.latent_dim}, CopyPaste N={cfg.num_patches}; "
        f"outputs equal to {diff:.1e}; {f.steps} interleaved timed steps after {f.warmup} warm-up; "
        f"jax {jax.__version__} backend {jax.default_backend()}, {os.cpu_count()} CPUs, {threads} "
        f"thread(s) each; timed from {t_start} UTC\n")
  print_throughput_table(res, f.batch_size, None if f.skip_torch else torch_name)


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_integer("image_size", 64, "square image side, a power of two in [32, 512]")
  flags.DEFINE_integer("channels", 3, "1 or 3")
  flags.DEFINE_integer("batch_size", 16, "batch size (paper: 64)")
  flags.DEFINE_integer("base_features", 32, "first encoder width (paper / GANomaly: 64)")
  flags.DEFINE_integer("latent_dim", 100, "latent size (GANomaly: 100)")
  flags.DEFINE_integer("steps", 10, "timed steps per implementation")
  flags.DEFINE_integer("warmup", 2, "untimed steps first (includes XLA compilation)")
  flags.DEFINE_bool("skip_torch", False, "measure only jaxad")
  flags.DEFINE_integer("threads", 0, "threads per framework (0 = all CPUs)")
  app.run(main)
