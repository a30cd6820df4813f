"""The ``"unrolled"`` convolutions of ``jaxad.backbones.convs`` against the native ``lax`` ones.

Reference: ``flax.linen.Conv`` (``feature_group_count=C`` for depthwise), i.e. XLA's grouped
convolution, which is what the backbones computed before. Values and gradients (input and
kernel) must agree to float32 summation order: layers within 1e-5 of max(1, max |reference|);
whole networks (random and ImageNet weights) within 1e-5 for every feature map and the logits,
parameter gradients within 1e-4 of each leaf's largest gradient.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxad import backbones as bb
from jaxad.backbones import convs

TOL = 1e-5


def _close(got, want, tol=TOL, msg=""):
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape, (got.shape, want.shape, msg)
  np.testing.assert_allclose(got, want, rtol=0, atol=tol * max(1.0, float(np.abs(want).max())),
                             err_msg=msg)


def _layer_case(module_new, module_ref, x_shape, seed):
  """Values and (input, kernel) gradients of two modules sharing one parameter set."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  params = module_ref.init(jax.random.key(seed), x)
  assert jax.tree.map(jnp.shape, module_new.init(jax.random.key(seed), x)) == \
      jax.tree.map(jnp.shape, params)
  # Random (not LeCun-scaled) kernel values so that every tap matters.
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  w = jnp.asarray(rng.normal(size=jax.eval_shape(module_ref.apply, params, x).shape), jnp.float32)

  @functools.partial(jax.jit, static_argnums=0)  # one small program instead of eager ops
  def run(module, params, x):
    y, vjp = jax.vjp(module.apply, params, x)
    return (y,) + vjp(w)

  y_new, gp_new, gx_new = run(module_new, params, x)
  y_ref, gp_ref, gx_ref = run(module_ref, params, x)
  _close(y_new, y_ref, msg="value")
  _close(gx_new, gx_ref, msg="input gradient")
  _close(gp_new["params"]["kernel"], gp_ref["params"]["kernel"], msg="kernel gradient")


# (batch, H, W, C, kernel, stride, padding): MobileNetV2's torch padding and TF "SAME" with the
# extra bottom/right pixel (odd and even sizes, stride 2), "VALID"; batches 1, 3, 4, 6 exercise
# the kernel gradient's batch grouping (1, 3, 4, 3 groups).
_DEPTHWISE = [
  (3, 9, 10, 5, 3, 1, ((1, 1), (1, 1))),
  (4, 9, 8, 6, 3, 2, ((1, 1), (1, 1))),
  (1, 9, 11, 4, 5, 2, "SAME"),
  (6, 8, 8, 3, 5, 2, "SAME"),
  (3, 7, 7, 2, 5, 1, "SAME"),
  (2, 8, 9, 3, 3, 2, "VALID"),
]


@pytest.mark.parametrize("b,h,w,c,k,s,padding", _DEPTHWISE)
def test_depthwise_matches_grouped_conv(b, h, w, c, k, s, padding):
  ref = nn.Conv(c, (k, k), (s, s), padding, feature_group_count=c, use_bias=False)
  _layer_case(convs.DepthwiseConv(k, s, padding, "unrolled"), ref, (b, h, w, c), seed=k + s + b)


@pytest.mark.parametrize("cin", [4, 20])  # broadcast-product forward (<= 16) and matrix product
def test_pointwise_matches_conv(cin):
  _layer_case(convs.PointwiseConv(7, "unrolled"), nn.Conv(7, (1, 1), use_bias=False),
              (2, 5, 6, cin), seed=cin)


@pytest.mark.parametrize("cin", [3, 4])  # 3x3x3 = 27 inputs: broadcast products; 36: im2col
def test_dense_matches_conv(cin):
  for padding, size in ((((1, 1), (1, 1)), 9), ("SAME", 9), ("SAME", 8)):
    ref = nn.Conv(5, (3, 3), (2, 2), padding, use_bias=False)
    _layer_case(convs.DenseConv(5, 3, 2, padding, "unrolled"), ref, (2, size, size, cin),
                seed=size + cin)


def test_native_method_is_flax_conv_exactly():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 9, 6)), jnp.float32)
  cases = [(convs.DepthwiseConv(5, 2, "SAME", "native"),
            nn.Conv(6, (5, 5), (2, 2), "SAME", feature_group_count=6, use_bias=False)),
           (convs.PointwiseConv(4, "native"), nn.Conv(4, (1, 1), use_bias=False)),
           (convs.DenseConv(4, 3, 2, ((1, 1), (1, 1)), "native"),
            nn.Conv(4, (3, 3), (2, 2), ((1, 1), (1, 1)), use_bias=False))]
  for new, ref in cases:
    params = ref.init(jax.random.key(1), x)
    np.testing.assert_array_equal(new.apply(params, x), ref.apply(params, x))
    # Same initialiser, same parameter tree: a fresh init is identical too.
    jax.tree.map(np.testing.assert_array_equal, new.init(jax.random.key(1), x), params)


def test_method_selection_and_validation():
  assert convs.default_conv_method("cpu") == "unrolled"
  assert convs.default_conv_method("gpu") == convs.default_conv_method("tpu") == "native"
  assert convs.resolve_conv_method("auto") == convs.default_conv_method()
  with pytest.raises(ValueError, match="conv_method.*'fast'"):
    convs.resolve_conv_method("fast")
  with pytest.raises(ValueError, match=r"kernel \[k, k, 1, C\]"):
    convs.depthwise_conv(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 1, 2)))
  assert convs.explicit_pads((1, 9, 9, 3), 5, 2, "SAME") == ((2, 2), (2, 2))
  assert convs.explicit_pads((1, 8, 8, 3), 5, 2, "SAME") == ((1, 2), (1, 2))  # TF: extra bottom


# --------------------------------------------------------------------------- whole networks
_LAYERS = {n: tuple(bb.FEATURE_LAYERS[n]) + ("logits",) for n in ("mobilenet_v2",
                                                                    "efficientnet_lite0")}


@functools.lru_cache(maxsize=None)
def _network_fn(name: str, method: str):
  """One jitted (features, parameter gradients) function per network and method, shared."""
  module = bb.create(name, conv_method=method)

  def loss(params, stats, images):  # one forward pass gives the features and the loss
    out = bb.extract_features(module, {"params": params, "batch_stats": stats}, images,
                              _LAYERS[name], train=True)
    return jnp.mean(out["head"] ** 2), out

  def fn(variables, images):
    grads, feats = jax.grad(loss, has_aux=True)(variables["params"], variables["batch_stats"],
                                                images)
    return feats, grads

  return jax.jit(fn)


def _compare_networks(name, variables):
  images = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 64, 64, 3)), jnp.float32)
  feats, grads = _network_fn(name, "unrolled")(variables, images)
  feats_ref, grads_ref = _network_fn(name, "native")(variables, images)
  for layer in _LAYERS[name]:
    _close(feats[layer], feats_ref[layer], msg=f"{name} {layer}")
  flat, flat_ref = (jax.tree_util.tree_flatten_with_path(g)[0] for g in (grads, grads_ref))
  assert len(flat) == len(flat_ref) > 100
  for (path, g), (_, g_ref) in zip(flat, flat_ref):
    g_ref = np.asarray(g_ref)
    np.testing.assert_allclose(np.asarray(g), g_ref, rtol=0,
                               atol=1e-4 * float(np.abs(g_ref).max()) + 1e-12,
                               err_msg=f"{name} gradient {jax.tree_util.keystr(path)}")
  # The gradients are not trivially zero: the comparison above means something.
  assert float(np.abs(np.asarray(grads_ref["blocks_3" if "lite" in name else "features_3"]
                                 ["conv_1_0" if "lite" not in name else "depthwise_conv"]
                                 ["kernel"])).max()) > 0


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_network_random_weights(name):
  _compare_networks(name, bb.init_random(name, jax.random.key(7), 64))


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_network_imagenet_weights(name):
  try:
    variables = bb.load_pretrained(name)
  except FileNotFoundError as e:
    pytest.skip(str(e))
  _compare_networks(name, variables)
