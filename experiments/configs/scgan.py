"""Command-line defaults of SCGAN (``method=scgan``): the paper's settings.

256x256 RGB, GANomaly widths from 64 (doubling, uncapped), latent 100, MS-CAM (r = 4) in the
first encoder, CopyPaste with N = 30 patches of 1 % area, loss weights 1 / 40 / 1 / 40
(encoder / content / adversarial / SSIM), Adam 2e-4 with betas 0.5 / 0.999 for both networks,
score 0.8 L_con + 0.2 L_enc min-max normalised over the test set. The paper trains 400 epochs at
batch 64 (``--epochs=400 --batch_size=64``).

``--config=experiments/configs/scgan.py:cpu`` is the CPU-sized variant measured in BUILD_NOTES.md
(64 px, widths 32-64-128-256, latent 100); ``:ganomaly`` is the plain GANomaly-style baseline
(no MS-CAM, no SSIM loss, no augmentation) at the same size.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from experiments.configs import method_config
from jaxad.models import scgan

VARIANTS = ("", "cpu", "ganomaly")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The paper's defaults (Sect. IV-A); ``cpu`` and ``ganomaly`` variants at 64 px."""
  if variant not in VARIANTS:
    raise ValueError(f"scgan config variant must be one of {VARIANTS}, got {variant!r}")
  config = scgan.Config()
  if variant:
    config = dataclasses.replace(config, image_size=64, base_features=32)
  if variant == "ganomaly":
    config = dataclasses.replace(config, use_mscam=False, ssim_weight=0.0, augmentation="none")
  return method_config("scgan", config)
