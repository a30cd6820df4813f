"""Command-line defaults of AFF-GAN (``method=affgan``): the paper's settings.

256x256 RGB, Skip-GANomaly U-Net (widths 64 ... 512) with AFF-fused skips, DCGAN discriminator,
CutPaste inputs (area 2-15 %, aspect 0.3-3.3), loss weights 1 / 40 / 1 (adversarial /
reconstruction / latent), Adam 2e-4 with betas 0.5 / 0.999, score 0.9 L_rec + 0.1 L_lat min-max
normalised over the test set. The paper trains 400 epochs at batch 64 (``--epochs=400 --batch_size=64``).

Variants: ``:cpu`` is the CPU-sized model measured in BUILD_NOTES.md (64 px, U-Net widths from 32,
discriminator widths from 32); ``:state1`` ... ``:state4`` are Table 3's states at that size
(1: concatenated skips, no augmentation; 2: + CutPaste; 3: AFF, no augmentation; 4: AFF + CutPaste).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from experiments.configs import method_config
from jaxad.models import affgan

VARIANTS = ("", "cpu", "state1", "state2", "state3", "state4")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The paper's defaults (Sect. 4.2); ``cpu`` and ``state<n>`` variants at 64 px."""
  if variant not in VARIANTS:
    raise ValueError(f"affgan config variant must be one of {VARIANTS}, got {variant!r}")
  config = affgan.Config()
  if variant:
    config = dataclasses.replace(config, image_size=64, base_features=32, disc_base_features=32)
  if variant.startswith("state"):
    fusion, aug = affgan.STATES[int(variant[-1])]
    config = dataclasses.replace(config, fusion=fusion, augmentation=aug)
  return method_config("affgan", config)
