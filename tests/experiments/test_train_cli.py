"""experiments/train.py and evaluate.py end to end on a tiny synthetic folder data set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def _train_args(folder, workdir, *extra):
  return ("--method=conv_ae", "--dataset=folder", f"--data_dir={folder}", f"--workdir={workdir}",
          "--image_size=32", "--batch_size=4", "--seed=3", "--set", "features=8,16",
          "--num_samples=4", *extra)


def test_train_resume_evaluate(folder, tmp_path):
  wd = tmp_path / "run"
  _run("train.py", *_train_args(folder, wd, "--epochs=2", "--max_steps=4", "--save_every=2"))
  assert [json.loads(l)["step"] for l in (wd / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
  out = _run("train.py", *_train_args(folder, wd, "--epochs=2", "--save_every=2"))
  final = json.loads(out.stdout.strip().splitlines()[-1])
  assert final["step"] == 6  # 12 images / batch 4 = 3 steps per epoch, resumed at 4
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
  bad = _run("train.py", *_train_args(folder, wd, "--epochs=2", "--set", "learning_rate=0.5"),
             check=False)
  assert bad.returncode != 0 and str(wd) in bad.stderr and "incompatible" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (("--method=conv_ae", "--dataset=folder", "--data_dir=/nonexistent/x", "--workdir=W"),
     "--data_dir=/nonexistent/x does not exist"),
    (("--method=conv_ae", "--dataset=mvtec", "--workdir=W"), "--data_dir is required"),
    (("--method=conv_ae", "--dataset=folder", "--data_dir=.", "--workdir=W", "--num_processes=2"),
     "--coordinator_address"),
    (("--method=conv_ae", "--dataset=folder", "--data_dir=.", "--workdir=W", "--normal_class=3"),
     "--normal_class only applies"),
])
def test_bad_flags_fail_before_training(args, message, tmp_path):
  args = tuple(a.replace("=W", f"={tmp_path / 'w'}") for a in args)
  proc = _run("train.py", *args, check=False)
  assert proc.returncode != 0 and message in proc.stderr
  assert not (tmp_path / "w").exists()


def test_bad_method_flags(folder, tmp_path):
  proc = _run("train.py", *_train_args(folder, tmp_path / "w", "--set", "nope=1"), check=False)
  assert proc.returncode != 0 and "has no field(s) ['nope']" in proc.stderr
  proc = _run("train.py", *_train_args(folder, tmp_path / "w", "--set", "image_size=64"), check=False)
  assert proc.returncode != 0 and "conflicts with --set image_size=64" in proc.stderr
  proc = _run("evaluate.py", f"--workdir={tmp_path / 'none'}", check=False)
  assert proc.returncode != 0 and "run.json not found" in proc.stderr
