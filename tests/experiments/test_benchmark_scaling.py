"""benchmark_scaling.py runs and prints one table row per available device count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_scaling_prints_a_row_per_device_count():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "benchmark_scaling.py"), "--config.image_size=32",
       "--config.features=8,16", "--steps=2", "--warmup=1", "--device_counts=1,2,16",
       "--host_devices=2"], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [l for l in proc.stdout.splitlines() if l.startswith("| ") and l[2].isdigit()]
  assert [r.split("|")[1].strip() for r in rows] == ["1", "2"]
  assert [r.split("|")[2].strip() for r in rows] == ["8", "16"]  # weak scaling: 8 per device
  assert "skipped device counts [16]" in proc.stdout
