"""benchmark_scaling.py runs and prints one table row per available device count."""

from __future__ import annotations

import pytest

from conftest import run_experiment


@pytest.mark.slow
def test_benchmark_scaling_prints_a_row_per_device_count():
  out = run_experiment("benchmark_scaling.py", "--config.image_size=32", "--config.features=8,16",
                       "--steps=2", "--warmup=1", "--device_counts=1,2,16", "--host_devices=2")
  rows = [l for l in out.splitlines() if l.startswith("| ") and l[2].isdigit()]
  assert [r.split("|")[1].strip() for r in rows] == ["1", "2"]
  assert [r.split("|")[2].strip() for r in rows] == ["8", "16"]  # weak scaling: 8 per device
  assert "skipped device counts [16]" in out
