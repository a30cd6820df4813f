"""experiments/train.py and evaluate.py end to end on a tiny synthetic folder data set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
  """One persistent XLA cache for this module's subprocesses (later runs skip compiling)."""
  global _CACHE
  _CACHE = str(tmp_path_factory.mktemp("xla_cache"))
  yield


_CACHE = ""


def _run(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), JAX_COMPILATION_CACHE_DIR=_CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, str(REPO / "experiments" / script), *args],
                        capture_output=True, text=True, env=env, cwd=str(REPO), timeout=400)
  if check and proc.returncode != 0:
    raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return proc


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  from jaxad.data.synthetic import write_folder_like
  return write_folder_like(tmp_path_factory.mktemp("data"), n_train=12, n_test_normal=4,
                           n_test_abnormal=4, size=40)


CONV_AE = "--config=experiments/configs/conv_ae.py"


def _train_args(folder, workdir, *extra):
  return (CONV_AE, "--dataset=folder", f"--data_dir={folder}", f"--workdir={workdir}",
          "--config.image_size=32", "--batch_size=4", "--seed=3", "--config.features=8,16",
          "--num_samples=4", *extra)


def test_train_resume_evaluate(folder, tmp_path):
  wd = tmp_path / "run"
  _run("train.py", *_train_args(folder, wd, "--epochs=3", "--max_steps=4", "--save_every=2",
                                 "--val_fraction=0.25"))
  assert [json.loads(l)["step"] for l in (wd / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
  out = _run("train.py", *_train_args(folder, wd, "--epochs=3", "--save_every=2"))
  final = json.loads(out.stdout.strip().splitlines()[-1])
  assert final["step"] == 6  # 12 images - 3 held out = 9 / batch 4 = 2 steps per epoch, resumed at 4
  calibration = json.loads((wd / "calibration.json").read_text())
  assert calibration["threshold"] > 0 and calibration["num_normal"] == 3
  steps = [json.loads(l)["step"] for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6]
  config = json.loads((wd / "config.json").read_text())
  assert config["config"]["features"] == [8, 16] and config["config"]["image_size"] == 32
  assert (wd / "samples.png").stat().st_size > 0
  assert sorted(p.name for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4", "6"]

  ev = _run("evaluate.py", f"--workdir={wd}", "--batch_size=3", "--num_panels=4")
  values = json.loads(ev.stdout.strip().splitlines()[-1])
  for name in ("image_auroc", "pixel_auroc", "aupro"):
    assert 0.0 <= values[name] <= 1.0
  record = json.loads((wd / "results" / "conv_ae" / f"{folder.name}.json").read_text())
  assert record["category"] == folder.name and record["dataset"] == "folder"  # the user's folder
  assert record["metrics"]["image_auroc"] == values["image_auroc"]
  assert "conv_ae" in (wd / "results.md").read_text()
  assert (wd / "test_panels.png").stat().st_size > 0

  # The same workdir with another config: a clear error naming the workdir.
  bad = _run("train.py", *_train_args(folder, wd, "--epochs=3", "--config.learning_rate=0.5"),
             check=False)
  assert bad.returncode != 0 and str(wd) in bad.stderr and "incompatible" in bad.stderr


@pytest.mark.parametrize("args, message", [
    ((CONV_AE, "--dataset=folder", "--data_dir=/nonexistent/x", "--workdir=W"),
     "--data_dir=/nonexistent/x does not exist"),
    ((CONV_AE, "--dataset=mvtec", "--workdir=W"), "--data_dir is required"),
    ((CONV_AE, "--dataset=folder", "--data_dir=.", "--workdir=W", "--num_processes=2"),
     "--coordinator_address"),
    ((CONV_AE, "--dataset=folder", "--data_dir=.", "--workdir=W", "--normal_class=3"),
     "--normal_class only applies"),
    (("--dataset=folder", "--data_dir=.", "--workdir=W"), "--config is required"),
])
def test_bad_flags_fail_before_training(args, message, tmp_path):
  args = tuple(a.replace("=W", f"={tmp_path / 'w'}") for a in args)
  proc = _run("train.py", *args, check=False)
  assert proc.returncode != 0 and message in proc.stderr
  assert not (tmp_path / "w").exists()


def test_bad_method_flags(folder, tmp_path):
  proc = _run("train.py", *_train_args(folder, tmp_path / "w", "--config.nope=1"), check=False)
  assert proc.returncode != 0 and "--config has no field 'nope'" in proc.stderr
  assert "Traceback" not in proc.stderr
  proc = _run("train.py", *_train_args(folder, tmp_path / "w", "--config.channels=2"), check=False)
  assert proc.returncode != 0 and "channels must be 1 or 3" in proc.stderr
  proc = _run("evaluate.py", f"--workdir={tmp_path / 'none'}", check=False)
  assert proc.returncode != 0 and "run.json not found" in proc.stderr


SMCC_ARGS = ("--config=experiments/configs/smcc.py", "--config.image_size=32",
             "--config.backbone=resnet18", "--config.layers=('layer1','layer2')",
             "--config.pretrained=False", "--config.feature_stride=4", "--config.gmm_k=3",
             "--config.knn_k=2", "--config.sigma=1.0", "--config.learning_rate=1e-4",
             "--batch_size=4", "--epochs=2", "--seed=3", "--save_every=1", "--keep=2",
             "--num_samples=0", "--log_every=1", "--val_fraction=0")


def test_smcc_killed_after_a_checkpoint_resumes_bit_identically(tmp_path):
  """SIGKILL after the prepared state's checkpoint; the rerun ends in the state of one run.

  The config and run length (10 images, batch 4, W = 2) are those of
  tests/train/test_fit_methods.py, so the in-process reference shares its compilations.
  """
  import signal
  import time

  import numpy as np

  from jaxad import data
  from jaxad.data.synthetic import write_folder_like
  from jaxad.models import smcc
  from jaxad.train import loop
  from jaxad.train.mesh import to_host

  folder = write_folder_like(tmp_path / "data", n_train=10, n_test_normal=1, n_test_abnormal=1,
                             size=32)
  wd = tmp_path / "smcc"
  args = (*SMCC_ARGS, "--dataset=folder", f"--data_dir={folder}", f"--workdir={wd}")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), JAX_COMPILATION_CACHE_DIR=_CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.Popen([sys.executable, str(REPO / "experiments" / "train.py"), *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=str(REPO))
  prepared = wd / "checkpoints" / "0"  # a finished checkpoint directory is named by its step
  deadline = time.monotonic() + 400
  while time.monotonic() < deadline and proc.poll() is None and not prepared.is_dir():
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)  # the self-update step is compiling or running now
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
  steps = sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  assert steps and max(steps) < 4  # interrupted mid-run, after at least one checkpoint
  out = _run("train.py", *args)
  assert json.loads(out.stdout.strip().splitlines()[-1])["step"] == 4  # 10 images // 4 x 2
  rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]  # one line per self-update step
  assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [3, 4]
  # The same run uninterrupted, in this process: bit-identical final state and losses.
  train = data.load("folder", str(folder), "train", image_size=32, channels=3)
  cfg = smcc.Config(image_size=32, backbone="resnet18", layers=("layer1", "layer2"),
                    pretrained=False, feature_stride=4, gmm_k=3, knn_k=2, sigma=1.0,
                    learning_rate=1e-4)
  full = loop.fit("smcc", cfg, train, seed=3, epochs=2, batch_size=4, show_progress=False)
  assert [r["loss"] for r in rows] == [h["loss"] for h in full.history]
  restored = loop.restore(wd)
  assert restored.config == cfg
  for a, b in zip(jax.tree.leaves(to_host(full.state)), jax.tree.leaves(to_host(restored.state))):
    np.testing.assert_array_equal(a, b)
