"""RAMFAE: shapes, parameter counts and forward pass vs a PyTorch re-implementation,
training on real images, anomaly maps, determinism, validation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxad import augment
from jaxad.models import ramfae
from jaxad.models.protocol import Run

REPO = Path(__file__).resolve().parents[2]
TINY = dict(base_features=8, max_features=32)
# One small config and batch shape shared by the training tests, so that the (slow on
# CPU) XLA compilations of init / train_step / predict happen once per test run.
# lr 1e-3 (paper: 1e-4) so that 50 steps of a tiny model show a clear decrease.
CFG = ramfae.Config(image_size=32, channels=3, learning_rate=1e-3, min_learning_rate=1e-5,
                    smooth_kernel=5, smooth_sigma=1.0, **TINY)
RUN = Run(total_steps=50, steps_per_epoch=50, batch_size=8)
B = 8
_STEP = jax.jit(ramfae.train_step, static_argnums=(0, 1))
STEP = lambda state, batch, key: _STEP(CFG, RUN, state, batch, key)
_PREDICT = jax.jit(ramfae.predict, static_argnums=0,
                   static_argnames=("anomaly_map", "smooth_sigma", "smooth_kernel"))
PREDICT = lambda state, x, **kw: _PREDICT(CFG, state, x, **kw)
ALL_VALID = jnp.ones((B,), bool)


def _torch_module():
  spec = importlib.util.spec_from_file_location("benchmark_ramfae",
                                                REPO / "experiments" / "benchmark_ramfae.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.fixture(scope="module")
def tref():
  torch.set_num_threads(1)
  return _torch_module()


@pytest.mark.parametrize("size,channels,kw", [
    (32, 1, dict(max_features=128)), (40, 3, TINY), (64, 3, TINY), (256, 3, {})])
def test_output_shapes(size, channels, kw):
  cfg = ramfae.Config(image_size=size, channels=channels, **kw)
  x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
  net = ramfae.RAMFAENet(cfg)
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  y = jax.eval_shape(lambda v, a: net.apply(v, a, train=False), variables, x)
  assert y.shape == x.shape and y.dtype == jnp.float32
  bott = variables["params"]["mffe_aspp"]["project"]["conv"]["kernel"]
  assert bott.shape[-1] == ramfae.widths(cfg)[3]


@pytest.mark.parametrize("kw", [dict(), dict(image_size=32, channels=1, max_features=128)])
def test_param_count_matches_torch(tref, kw):
  cfg = ramfae.Config(**kw)
  net = tref.TorchRAMFAE(cfg.channels, cfg.base_features, cfg.max_features)
  n_torch = sum(p.numel() for p in net.parameters())
  assert ramfae.param_count(cfg) == n_torch
  if cfg.max_features == 128:
    assert ramfae.widths(cfg) == (64, 128, 128, 128)
  else:
    assert ramfae.widths(cfg) == (64, 128, 256, 512)


def test_forward_matches_torch(tref):
  x = np.random.default_rng(0).uniform(size=(B, 32, 32, 3)).astype(np.float32)
  state = ramfae.init(CFG, RUN, jax.random.key(0), {"image": x})
  apply = jax.jit(ramfae.RAMFAENet(CFG).apply, static_argnames=("train", "mutable"))
  y, upd = apply(state.variables(), x, train=True, mutable=("batch_stats",))
  net = tref.copy_flax_to_torch(tref.TorchRAMFAE(3, 8, 32), state.params, state.batch_stats)
  net.train()
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  y_t = net(xt).detach().numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(y), y_t, rtol=1e-4, atol=1e-4)
  # Inference mode with running statistics (after one update; PyTorch's unbiased running
  # variance differs by n/(n-1), so the updated Flax statistics are copied over).
  net = tref.copy_flax_to_torch(net, state.params, upd["batch_stats"])
  net.eval()
  y_eval = apply({"params": state.params, "batch_stats": upd["batch_stats"]}, x, train=False)
  np.testing.assert_allclose(np.asarray(y_eval), net(xt).detach().numpy().transpose(0, 2, 3, 1),
                             rtol=1e-4, atol=1e-4)
  assert (np.asarray(y) > 0).all() and (np.asarray(y) < 1).all()


def _bottle_images(root: Path, n: int, size: int) -> np.ndarray:
  from PIL import Image
  files = sorted((root / "train" / "good").glob("*.png"))[:n]
  return np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR),
                              np.float32) / 255.0 for f in files])


@pytest.mark.real_data
def test_loss_decreases_on_real_images_and_map_finds_pasted_defect(mvtec_bottle):
  images = _bottle_images(mvtec_bottle, B, 32)
  batch = {"image": jnp.asarray(images), "valid": ALL_VALID}
  state = ramfae.init(CFG, RUN, jax.random.key(0), batch)
  hist = []
  for i in range(50):
    state, m = STEP(state, batch, jax.random.fold_in(jax.random.key(1), i))
    hist.append(float(m["loss"]))
  assert np.isfinite(hist).all()
  assert np.mean(hist[-5:]) < 0.8 * np.mean(hist[:5]), hist
  assert float(m["learning_rate"]) < 2e-5  # cosine annealed to the floor

  # A Delete-Paste defect in an image scores higher inside the defect than outside.
  defect, mask = augment.delete_paste(jax.random.key(7), batch["image"], area_ratio=(0.1, 0.15))
  scores, maps = PREDICT(state, defect)
  mask = np.asarray(mask) > 0
  maps = np.asarray(maps)
  inside = np.array([maps[i][mask[i]].mean() for i in range(8)])
  outside = np.array([maps[i][~mask[i]].mean() for i in range(8)])
  assert (inside > outside).mean() >= 0.75, (inside, outside)
  np.testing.assert_allclose(scores, maps.reshape(8, -1).max(1), rtol=1e-6)


@pytest.mark.parametrize("kind", ramfae.MAP_KINDS)
def test_maps_higher_inside_synthetic_defect(kind):
  """With a perfect reconstruction of the clean image, every map kind peaks on the defect."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:32, :32] / 32.0
  clean = np.stack([0.5 + 0.2 * np.sin(6 * xx + c) * np.cos(4 * yy) for c in range(3)], -1)
  clean = np.repeat(clean[None], 2, 0).astype(np.float32)
  defect = clean.copy()
  defect[:, 10:18, 12:20] = rng.uniform(0, 1, (2, 8, 8, 3))
  mask = np.zeros((32, 32), bool)
  mask[10:18, 12:20] = True
  maps = np.asarray(ramfae.anomaly_maps(jnp.asarray(defect), jnp.asarray(clean), kind))
  assert maps.shape == (2, 32, 32)
  for m in maps:
    assert m[mask].mean() > 3 * m[~mask].mean()
  same = np.asarray(ramfae.anomaly_maps(jnp.asarray(clean), jnp.asarray(clean), kind))
  np.testing.assert_allclose(same, 0.0, atol=1e-5)


def test_determinism_and_keys():
  x = jax.random.uniform(jax.random.key(3), (B, 32, 32, 3))
  a = ramfae.init(CFG, RUN, jax.random.key(0), {"image": x})
  b = ramfae.init(CFG, RUN, jax.random.key(0), {"image": x})
  c = ramfae.init(CFG, RUN, jax.random.key(1), {"image": x})
  eq = lambda s, t: all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(s.params),
                                                              jax.tree.leaves(t.params)))
  assert eq(a, b) and not eq(a, c)
  batch = {"image": x, "valid": ALL_VALID}
  a1, ma = STEP(a, batch, jax.random.key(5))
  b1, mb = STEP(b, batch, jax.random.key(5))
  a2, mc = STEP(a, batch, jax.random.key(6))
  assert eq(a1, b1) and float(ma["loss"]) == float(mb["loss"])
  assert float(ma["loss"]) != float(mc["loss"])  # the key drives Delete Paste
  assert int(a1.step) == 1 and set(ma) == {"loss", "gmsd", "ssim_loss", "mse", "learning_rate"}
  assert all(v.dtype == jnp.float32 and v.shape == () for v in ma.values())
  # valid=False rows do not enter the loss.
  _, mv = STEP(a, {"image": x, "valid": ALL_VALID.at[B // 2:].set(False)}, jax.random.key(5))
  assert np.isfinite(float(mv["loss"])) and float(mv["loss"]) != float(ma["loss"])


def test_predict_options_and_reconstruct():
  x = jax.random.uniform(jax.random.key(0), (B, 32, 32, 3))
  state = ramfae.init(CFG, RUN, jax.random.key(0), {"image": x})
  r = jax.jit(ramfae.reconstruct, static_argnums=0)(CFG, state, x)
  assert r.shape == x.shape and float(r.min()) >= 0 and float(r.max()) <= 1
  raw = jax.jit(ramfae.anomaly_maps, static_argnames="kind")(x, r, "ssim")
  s, m = PREDICT(state, x, anomaly_map="ssim", smooth_kernel=0)
  np.testing.assert_allclose(m, raw, rtol=1e-5, atol=1e-6)
  s2, m2 = PREDICT(state, x, anomaly_map="ssim")
  assert m2.shape == (B, 32, 32) and float(jnp.std(m2)) < float(jnp.std(m))  # smoothing
  np.testing.assert_allclose(s2, m2.reshape(B, -1).max(1))
  with pytest.raises(ValueError, match="anomaly_map"):
    ramfae.predict(CFG, state, x, anomaly_map="l2")
  with pytest.raises(ValueError, match=r"\[B, 32, 32, 3\]"):
    ramfae.predict(CFG, state, x[..., :1])


@pytest.mark.parametrize("kw,match", [
    (dict(image_size=36), "divisible by 8"), (dict(channels=2), "channels"),
    (dict(anomaly_map="l1"), "anomaly_map"), (dict(upsample="nearest"), "upsample"),
    (dict(min_learning_rate=1e-3), "min_learning_rate"), (dict(smooth_kernel=20), "smooth_kernel"),
    (dict(augment_probability=1.5), "augment_probability"), (dict(msgms_scales=0), "msgms_scales")])
def test_config_validation(kw, match):
  with pytest.raises(ValueError, match=match):
    ramfae.Config(**kw)


def test_init_validation():
  cfg = CFG
  with pytest.raises(TypeError, match="Config"):
    ramfae.init({"image_size": 32}, RUN, jax.random.key(0),
                {"image": np.zeros((1, 32, 32, 3), np.float32)})
  with pytest.raises(ValueError, match="example_batch"):
    ramfae.init(cfg, RUN, jax.random.key(0), {"image": np.zeros((1, 64, 64, 3), np.float32)})
  with pytest.raises(TypeError, match="float32"):
    ramfae.init(cfg, RUN, jax.random.key(0), {"image": np.zeros((1, 32, 32, 3), np.uint8)})


@pytest.mark.slow
def test_sharded_train_step_equals_single_device():
  from conftest import run_jax_subprocess
  code = """
  import jax, jax.numpy as jnp, numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from jaxad.models import ramfae
  from jaxad.models.protocol import Run
  cfg = ramfae.Config(image_size=32, channels=3, base_features=8, max_features=32)
  run = Run(total_steps=5, steps_per_epoch=5, batch_size=4)
  x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype(np.float32)
  st = ramfae.init(cfg, run, jax.random.key(0), {"image": x})
  step = lambda s, b, k: ramfae.train_step(cfg, run, s, b, k)
  single, m1 = jax.jit(step)(st, {"image": x}, jax.random.key(1))
  mesh = Mesh(np.array(jax.devices()), ("data",))
  rep, dat = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  f = jax.jit(step, in_shardings=(rep, {"image": dat}, rep), out_shardings=(rep, rep))
  multi, m2 = f(st, {"image": x}, jax.random.key(1))
  diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
             for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(multi.params)))
  sd = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
           for a, b in zip(jax.tree.leaves(single.batch_stats), jax.tree.leaves(multi.batch_stats)))

  def grads(params, x):
    def f(p):
      y, _ = ramfae.RAMFAENet(cfg).apply({"params": p, "batch_stats": st.batch_stats}, x,
                                         train=True, mutable=["batch_stats"])
      return jnp.mean(ramfae.loss_terms(cfg, y, x)["loss"])
    return jax.grad(f)(params)

  g1 = jax.jit(grads)(st.params, x)
  g2 = jax.jit(grads, in_shardings=(rep, dat), out_shardings=rep)(st.params, x)
  # Relative to the largest gradient entry: a few tensors (the transposed-conv bias that feeds
  # a BatchNorm) have an exactly-zero true gradient, i.e. pure float noise.
  gmax = max(float(np.abs(np.asarray(a)).max()) for a in jax.tree.leaves(g1))
  gerr = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
             for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2))) / gmax
  print(len(jax.devices()), float(m1["loss"]), float(m2["loss"]), diff, sd, gerr)
  """
  n, l1, l2, dmax, sd, gerr = run_jax_subprocess(code, devices=4).split()
  assert int(n) == 4
  assert abs(float(l1) - float(l2)) < 1e-5  # loss over the global batch, BN over the global batch
  assert float(sd) < 1e-5  # running statistics from global-batch moments
  assert float(gerr) < 1e-4  # gradients agree
  # Adam's first step is ~lr * sign(g): entries whose gradient is float noise may flip sign
  # between reduction orders, so parameters agree only to 2 lr after one step.
  assert float(dmax) <= 2 * 1e-4 + 1e-6
