"""Calibration, export and deployment: exported models score like predict_dataset, load without
Flax, and file scoring reports unreadable inputs without stopping."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from jaxad import deploy, inference
from jaxad.models import conv_ae, ramfae
from jaxad.models.protocol import Run
from jaxad.train import calibrate, loop
from jaxad.train.export import export_predict, export_run
from jaxad.train.predict import predict_dataset

REPO = Path(__file__).resolve().parents[1]
CFG = conv_ae.Config(image_size=32, channels=3, features=(8, 16))


def _images(n: int, seed: int) -> np.ndarray:
  """Smooth random 32x32 RGB images in [0, 1]."""
  base = np.random.default_rng(seed).random((n, 8, 8, 3), dtype=np.float32)
  return np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
  """A conv_ae trained 2 steps, calibrated on 12 held-out images and exported."""
  root = tmp_path_factory.mktemp("deploy")
  wd = root / "run"
  result = loop.fit("conv_ae", CFG, _images(16, 0), batch_size=8, epochs=1, workdir=wd,
                    show_progress=False)
  cal = calibrate.calibrate_run("conv_ae", CFG, result.state, _images(12, 1), batch_size=8)
  calibrate.write_calibration(wd, cal)
  path, meta = export_run(wd, root / "model.jaxad")
  return {"root": root, "workdir": wd, "state": result.state, "cal": cal, "path": path, "meta": meta}


# ----------------------------------------------------------------------------- calibration


def test_calibration_threshold_normalisation_and_round_trip(tmp_path):
  normal = np.arange(1, 101, dtype=np.float32)  # 1 .. 100
  cal = calibrate.calibrate(normal, quantile=0.9)
  assert cal.threshold == pytest.approx(np.quantile(normal, 0.9)) and cal.rule == "quantile"
  assert (cal.low, cal.high) == (1.0, 100.0)
  norm = calibrate.normalize_scores(cal, [cal.threshold, 50.0, 1.0, 1000.0])
  np.testing.assert_allclose(norm, [0.5, 0.5 + (50 - cal.threshold) / 99, 0.0, 1.0], rtol=1e-6)
  np.testing.assert_array_equal(calibrate.decide(cal, [cal.threshold, np.nextafter(
      np.float32(cal.threshold), np.float32(0))]), [True, False])
  q = calibrate.calibrate(normal, normalization="quantile", norm_quantiles=(0.1, 0.9))
  assert (q.low, q.high) == pytest.approx(tuple(np.quantile(normal, [0.1, 0.9])))
  assert calibrate.read_calibration(tmp_path) is None
  calibrate.write_calibration(tmp_path, q)
  assert calibrate.read_calibration(tmp_path) == q
  # Labelled validation: the F1-optimal threshold of jaxad.metrics.
  from jaxad import metrics
  labels = np.array([0] * 8 + [1] * 4)
  scores = np.array([1, 2, 3, 4, 5, 6, 7, 9, 8, 10, 11, 12], np.float32)
  f1 = calibrate.calibrate(normal[:5], labels=labels, scores=scores)
  assert f1.rule == "f1" and f1.threshold == metrics.f1_max(labels, scores)[1] == 8.0
  assert f1.num_anomalous == 4 and f1.f1 == pytest.approx(8 / 9)
  # One image or equal scores still give a usable (positive) scale.
  one = calibrate.calibrate([3.0])
  assert one.threshold == 3.0 and one.scale > 0
  for bad, kwargs in ((np.array([]), {}), (np.array([1.0, np.nan]), {}), (normal, {"quantile": 1.5}),
                      (normal, {"labels": labels}), (normal, {"labels": np.zeros(12),
                                                              "scores": scores})):
    with pytest.raises((ValueError, TypeError)):
      calibrate.calibrate(bad, **kwargs)


# ----------------------------------------------------------------------------- export


def _check_same(model: deploy.Deployed, method, config, state, x: np.ndarray, batch_sizes,
                cal: calibrate.Calibration | None = None) -> None:
  ref_scores, ref_maps = predict_dataset(method, config, state, x, batch_size=len(x))
  for bs in batch_sizes:
    out = model.predict(x, batch_size=bs)
    np.testing.assert_allclose(out["scores"], ref_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["maps"], ref_maps, rtol=1e-5, atol=1e-6)
    if cal is not None:
      np.testing.assert_array_equal(out["decisions"], calibrate.decide(cal, out["scores"]))
      np.testing.assert_allclose(out["normalized"], calibrate.normalize_scores(cal, ref_scores),
                                 atol=1e-6)


def test_exported_conv_ae_scores_like_predict_dataset(conv_run):
  model = deploy.load(conv_run["path"])
  assert model.image_shape == (32, 32, 3) and model.threshold == conv_run["cal"].threshold
  assert model.preprocessing == {"image_size": [32, 32], "crop_size": None, "channels": 3}
  # Only the arrays predict reads are stored: no optimiser state, no PRNG key.
  n_state = len([x for x in jax.tree.leaves(conv_run["state"])
                 if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)])
  assert 0 < conv_run["meta"]["num_variables"] < n_state
  x = _images(5, 2)
  _check_same(model, "conv_ae", CFG, conv_run["state"], x, (5, 2), conv_run["cal"])
  # A threshold override moves the decisions, not the scores.
  out = model(x, threshold=-1.0)
  assert out["decisions"].all() and out["normalized"].min() > 0.5
  with pytest.raises(ValueError, match=r"\[B, 32, 32, 3\]"):
    model(np.zeros((2, 16, 16, 3), np.float32))
  with pytest.raises(TypeError, match="uint8 / 255"):
    model(np.zeros((2, 32, 32, 3), np.uint8))


@pytest.mark.slow  # RAMFAE's predict compiles for ~20 s on 2 CPU cores
def test_exported_ramfae_scores_like_predict_dataset(tmp_path):
  cfg = ramfae.Config(image_size=32, base_features=8, max_features=16)
  x = _images(3, 3)
  batch = {"image": x, "mask": np.zeros(x.shape[:3], np.float32), "label": np.zeros(3, np.int32),
           "valid": np.ones(3, bool)}
  state = ramfae.init(cfg, Run(), jax.random.key(0), batch)
  serialized, variables, platforms = export_predict("ramfae", cfg, state, (32, 32, 3))
  path = deploy.write(tmp_path / "r.jaxad", serialized, variables,
                      {"method": "ramfae", "image_shape": [32, 32, 3], "calibration": None,
                       "preprocessing": {"image_size": [32, 32], "crop_size": None, "channels": 3}})
  model = deploy.load(path)
  _check_same(model, "ramfae", cfg, state, x, (3, 2))
  assert set(model(x)) == {"scores", "maps"}  # no calibration: no decisions


@pytest.mark.slow  # coreset + GMM preparation and two ResNet18 compilations: ~10 s
def test_exported_smcc_scores_like_predict_dataset(tmp_path):
  from jaxad.models import smcc
  cfg = smcc.Config(image_size=32, backbone="resnet18", layers=("layer1", "layer2"),
                    pretrained=False, feature_stride=4, gmm_k=3, knn_k=2, sigma=1.0)
  state = loop.fit("smcc", cfg, _images(8, 4), batch_size=4, epochs=0, show_progress=False).state
  serialized, variables, _ = export_predict("smcc", cfg, state, (32, 32, 3))
  path = deploy.write(tmp_path / "s.jaxad", serialized, variables,
                      {"method": "smcc", "image_shape": [32, 32, 3], "calibration": None,
                       "preprocessing": {"image_size": [32, 32], "crop_size": None, "channels": 3}})
  _check_same(deploy.load(path), "smcc", cfg, state, _images(3, 5), (3, 2))


def test_loader_runs_without_flax(conv_run, tmp_path):
  x = _images(3, 6)
  np.save(tmp_path / "x.npy", x)
  code = f"""
import json, sys
for name in ("flax", "optax", "orbax", "orbax.checkpoint", "jaxad.models", "jaxad.train.loop"):
  sys.modules[name] = None  # importing any of them now raises ImportError
import numpy as np
try:
  import flax
  raise SystemExit("flax import was not blocked")
except ImportError:
  pass
from jaxad import deploy
out = deploy.load({str(conv_run['path'])!r})(np.load({str(tmp_path / 'x.npy')!r}))
loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and (
    m.split(".")[0] in ("flax", "optax", "orbax") or m.startswith("jaxad.models")))
print(json.dumps({{"scores": out["scores"].tolist(), "decisions": out["decisions"].tolist(),
                   "maps_sum": float(out["maps"].astype(np.float64).sum()), "loaded": loaded}}))
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        cwd=str(tmp_path), timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  assert got["loaded"] == []
  scores, maps = predict_dataset("conv_ae", CFG, conv_run["state"], x, batch_size=3)
  np.testing.assert_allclose(got["scores"], scores, rtol=1e-5, atol=1e-6)
  assert got["decisions"] == calibrate.decide(conv_run["cal"], scores).tolist()
  assert got["maps_sum"] == pytest.approx(float(maps.astype(np.float64).sum()), rel=1e-5)


def test_load_rejects_files_that_are_not_exported_models(tmp_path, conv_run):
  text = tmp_path / "model.jaxad"
  text.write_text("not a model")
  with pytest.raises(ValueError, match="not a zip archive"):
    deploy.load(text)
  with zipfile.ZipFile(tmp_path / "part.jaxad", "w") as z:
    z.writestr(deploy.METADATA_FILE, "{}")
  with pytest.raises(ValueError, match="missing"):
    deploy.load(tmp_path / "part.jaxad")
  with pytest.raises(FileNotFoundError, match="export.py"):
    deploy.load(tmp_path / "absent.jaxad")
  assert deploy.is_exported(conv_run["path"]) and not deploy.is_exported(text)


# ----------------------------------------------------------------------------- files


def _write_inputs(folder: Path) -> list[Path]:
  """Readable images of other sizes / channels, and unreadable files."""
  folder.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray((rng.random((70, 45, 3)) * 255).astype(np.uint8)).save(folder / "rgb.png")
  Image.fromarray((rng.random((20, 33)) * 255).astype(np.uint8), "L").save(folder / "gray.jpg")
  Image.fromarray((_images(1, 7)[0] * 255).astype(np.uint8)).save(folder / "same.bmp")
  data = (folder / "rgb.png").read_bytes()
  (folder / "truncated.png").write_bytes(data[:len(data) // 3])
  (folder / "text.png").write_text("hello")
  (folder / "empty.jpg").write_bytes(b"")
  return sorted(folder.iterdir())


def test_score_files_reports_unreadable_inputs_and_agrees_across_backends(conv_run, tmp_path):
  files = _write_inputs(tmp_path / "in")
  results = {}
  for kind, source in (("workdir", conv_run["workdir"]), ("exported", conv_run["path"])):
    scorer = inference.open_scorer(source, batch_size=4)
    assert type(scorer).__name__ == ("WorkdirScorer" if kind == "workdir" else "ExportedScorer")
    res = inference.score_files(scorer, files, tmp_path / kind, chunk=2, show_progress=False)
    assert sorted(Path(f).name for f in res.failed) == ["empty.jpg", "text.png", "truncated.png"]
    rows = list(csv.DictReader((tmp_path / kind / "scores.csv").open()))
    assert [Path(r["file"]).name for r in rows] == ["gray.jpg", "rgb.png", "same.bmp"]
    assert all(r["decision"] in ("normal", "anomalous") for r in rows)
    assert sorted(p.name for p in (tmp_path / kind / "overlays").iterdir()) == [
        "gray.png", "rgb.png", "same.png"]
    errors = list(csv.DictReader((tmp_path / kind / inference.ERRORS_FILE).open()))
    assert {Path(e["file"]).name for e in errors} == set(Path(f).name for f in res.failed)
    results[kind] = rows
  for a, b in zip(results["workdir"], results["exported"]):
    assert float(a["score"]) == pytest.approx(float(b["score"]), rel=1e-5, abs=1e-6)
    assert a["decision"] == b["decision"]
  # A file read like training scores like the same array through predict_dataset.
  same = [r for r in results["exported"] if r["file"].endswith("same.bmp")][0]
  x = (_images(1, 7) * 255).astype(np.uint8).astype(np.float32) / 255  # what the BMP holds
  ref, _ = predict_dataset("conv_ae", CFG, conv_run["state"], x, batch_size=1)
  assert float(same["score"]) == pytest.approx(float(ref[0]), rel=1e-5)


def test_predict_cli_with_an_exported_model(conv_run, tmp_path):
  files = _write_inputs(tmp_path / "in")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, str(REPO / "experiments" / "predict.py"),
                         f"--model={conv_run['path']}", f"--images={tmp_path / 'in' / '*'}",
                         f"--out={tmp_path / 'out'}", "--overlays=anomalous", "--threshold=-1"],
                        capture_output=True, text=True, env=env, cwd=str(REPO), timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary == {"out": str((tmp_path / "out").resolve()), "files": len(files), "scored": 3,
                     "anomalous": 3, "unreadable": 3, "overlays": 3}
  for name in ("truncated.png", "text.png", "empty.jpg"):  # listed at the end, not fatal
    assert name in proc.stderr
  assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- real data


# slow: trains on real bottle images; the calibration and export paths are covered above on synthetic data.
@pytest.mark.slow
@pytest.mark.real_data
def test_normal_only_threshold_flags_cut_paste_defects_on_bottle(mvtec_bottle):
  """conv_ae at 32 px on 40 bottle images; threshold = 0.99 quantile of 40 held-out ones."""
  from jaxad import augment
  from jaxad.data import image_io
  train = sorted((mvtec_bottle / "train" / "good").glob("*.png"))[:80]
  clean = sorted((mvtec_bottle / "test" / "good").glob("*.png"))[:20]
  pixels, _ = image_io.load_arrays(train + clean, image_size=32)
  x = pixels.astype(np.float32) / 255
  fit_x, val_x, clean_x = x[:40], x[40:80], x[80:]
  state = loop.fit("conv_ae", CFG, fit_x, batch_size=10, epochs=20, show_progress=False).state
  cal = calibrate.calibrate_run("conv_ae", CFG, state, val_x, batch_size=20)
  defect_x, defect_mask = augment.cut_paste(jax.random.key(0), clean_x, area_ratio=(0.05, 0.1),
                                            jitter=0.3)
  assert float(np.asarray(defect_mask).sum(axis=(1, 2)).min()) > 0
  scores, _ = predict_dataset("conv_ae", CFG, state, np.concatenate([clean_x, np.asarray(defect_x)]),
                              batch_size=20)
  flagged = calibrate.decide(cal, scores)
  # Measured: 1 of 20 clean images flagged, 18 of 20 defects (2 pastes of background on background).
  assert flagged[:20].sum() <= 3
  assert flagged[20:].sum() >= 15
