"""benchmark_conv_forms.py runs and prints one row per case with a time for every form."""

from __future__ import annotations

import pytest

from conftest import run_experiment


@pytest.mark.slow
def test_benchmark_conv_forms_prints_a_row_per_case():
  out = run_experiment("benchmark_conv_forms.py", "--batch_size=2", "--repeats=1",
                       "--cases=3:8:16:2:0:1,6:4:4:3:5:5")
  rows = [[c.strip() for c in l.split("|")[1:-1]] for l in out.splitlines()
          if l.startswith("| ") and l[2].isdigit()]
  assert [r[0] for r in rows] == ["3x3x8", "6x6x4"]
  assert [r[3] for r in rows] == ["1.00", f"{(6 + 1 + 1) ** 2 / (9 * 36):.2f}"]  # live share
  assert all(float(v) > 0 for r in rows for v in r[4:8])  # conv, matmul, tap_sum, PyTorch
