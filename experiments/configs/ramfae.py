"""Command-line defaults of RAMFAE (``method=ramfae``): the paper's settings.

256x256 RGB, widths 64-128-256-512, MFFE rates 5/7/9, Delete Paste on every image, loss
GMSD + (1 - SSIM) + MSE, Adam 1e-4 cosine-annealed to 1e-6 over the whole run, MSGMS maps
smoothed by a 21-tap Gaussian. The paper trains 250 epochs at batch 16
(``--epochs=250 --batch_size=16``).

``--config=experiments/configs/ramfae.py:mnist`` is the MNIST variant of Table 5 (32x32
grayscale, widths capped at 128).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import method_config
from jaxad.models import ramfae


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The paper's defaults (Table 1, Sect. 4.1); ``variant="mnist"`` for Table 5."""
  if variant not in ("", "mnist"):
    raise ValueError(f"ramfae config variant must be '' or 'mnist', got {variant!r}")
  if variant == "mnist":
    return method_config("ramfae", ramfae.Config(image_size=32, channels=1, max_features=128))
  return method_config("ramfae", ramfae.Config(image_size=256, channels=3, base_features=64,
                                               max_features=512, learning_rate=1e-4,
                                               min_learning_rate=1e-6))
