"""CLI defaults of RAMFAE (``--method=ramfae``): the paper's settings.

256x256 RGB, widths 64-128-256-512, MFFE rates 5/7/9, Delete Paste on every image,
loss GMSD + (1 - SSIM) + MSE, Adam 1e-4 cosine-annealed to 1e-6, MSGMS maps smoothed by a
21-tap Gaussian. The paper trains 250 epochs at batch 16 (``--epochs=250 --batch_size=16``);
the cosine annealing runs over the whole run: ``decay_steps=None`` here, which the engine
replaces by ``epochs * (train images // batch size)`` (recorded in run.json); pass
``--set decay_steps=N`` for a fixed length.

MNIST variant (Table 5): ``--dataset=mnist --image_size=32 --channels=1 --set max_features=128``.
"""

from __future__ import annotations

from jaxad.models import ramfae


def get_config() -> ramfae.Config:
  """The paper's defaults (Table 1, Sect. 4.1); see :class:`jaxad.models.ramfae.Config`."""
  return ramfae.Config(image_size=256, channels=3, base_features=64, max_features=512,
                       learning_rate=1e-4, min_learning_rate=1e-6, decay_steps=None)
