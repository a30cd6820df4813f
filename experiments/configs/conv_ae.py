"""Command-line defaults of the convolutional autoencoder baseline (``method=conv_ae``)."""

from __future__ import annotations

import ml_collections

from experiments.configs import method_config
from jaxad.models import conv_ae


def get_config() -> ml_collections.ConfigDict:
  """Defaults for 128x128 RGB images: four stride-2 stages, Adam 1e-3."""
  return method_config("conv_ae", conv_ae.Config(image_size=128, channels=3,
                                                 features=(32, 64, 128, 256), batch_norm=True,
                                                 learning_rate=1e-3))
