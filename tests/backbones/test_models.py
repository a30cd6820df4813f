"""Random-weights equivalence of the Flax backbones with reference PyTorch definitions.

A state dict created in PyTorch (reference ``torch.nn`` modules in ``backbone_torch_ref.py``,
random conv/linear init and random BN statistics) is converted by jaxad; logits and every
feature map of ``FEATURE_LAYERS`` must match PyTorch CPU within 1e-4 (absolute, relative to
max(1, max |reference|)). 64x64 inputs keep compile time small.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxad import backbones as bb

torch = pytest.importorskip("torch")
import backbone_torch_ref as ref  # noqa: E402  (tests/backbones is on sys.path under pytest)

TOL = 1e-4


def _torch_model(name, seed=0):
  torch.manual_seed(seed)
  model = ref.build(name)
  ref.randomize_bn(model, torch.Generator().manual_seed(seed + 1))
  return model


def _compare(name, size=64, batch=2):
  model = _torch_model(name)
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  variables = bb.convert_state_dict(name, sd)
  module = bb.create(name)
  images = np.random.default_rng(0).uniform(size=(batch, size, size, 3)).astype(np.float32)
  mean, std = bb.input_normalization(name)
  x_norm = (images - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
  ref_feats = {}
  with torch.no_grad():
    ref_logits = model(torch.from_numpy(x_norm).permute(0, 3, 1, 2), ref_feats).numpy()
  layers = tuple(bb.FEATURE_LAYERS[name]) + ("logits",)
  # One compile: features and logits from one forward pass (normalisation applied inside).
  feats = jax.jit(lambda v, x: bb.extract_features(module, v, x, layers))(
    variables, jnp.asarray(images))
  logits = feats.pop("logits")
  scale = max(1.0, float(np.abs(ref_logits).max()))
  np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=0, atol=TOL * scale)
  for layer, (stride, channels) in bb.FEATURE_LAYERS[name].items():
    want = ref_feats[layer].permute(0, 2, 3, 1).numpy()
    side = math.ceil(size / stride)
    assert feats[layer].shape == want.shape == (batch, side, side, channels), layer
    np.testing.assert_allclose(np.asarray(feats[layer]), want, rtol=0,
                               atol=TOL * max(1.0, float(np.abs(want).max())), err_msg=layer)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "wide_resnet50_2", "densenet121"])
def test_random_weights_match_torch(name):
  _compare(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1",
                                  "efficientnet_lite2"])
def test_random_weights_match_torch_mobile(name):
  _compare(name)


@pytest.mark.slow
def test_odd_input_size_tf_same_padding():
  """Odd sizes exercise asymmetric TF "SAME" padding (and PyTorch's symmetric padding)."""
  _compare("efficientnet_lite0", size=67, batch=1)
  _compare("mobilenet_v2", size=67, batch=1)


def test_convert_rejects_mismatched_state_dict():
  model = _torch_model("resnet18")
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  del sd["layer4.1.bn2.running_var"]
  with pytest.raises(ValueError, match=r"missing \['batch_stats/layer4_1/bn2/var'\]"):
    bb.convert_state_dict("resnet18", sd)
  with pytest.raises(ValueError, match="shape mismatches|missing|unexpected"):
    bb.convert_state_dict("resnet50", {k: v.detach().numpy()
                                       for k, v in model.state_dict().items()})


def test_conv_kernel_mask_counts_torch_convs():
  model = _torch_model("resnet18")
  n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
  variables = bb.convert_state_dict(
    "resnet18", {k: v.detach().numpy() for k, v in model.state_dict().items()})
  mask = bb.conv_kernel_mask(variables["params"])
  assert sum(jax.tree.leaves(mask)) == n_convs
  assert mask["fc"]["kernel"] is False and mask["bn1"]["scale"] is False
