"""jaxad.train.host_memory: XLA:CPU's large per-execution buffers stay mapped between executions.

The check counts minor page faults (``ru_minflt``), not time: a 64 MiB buffer that glibc maps
afresh for every execution faults ~16,000 4 KiB pages each time; kept, it faults none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxad.train import host_memory

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = r"""
import json, resource, sys
mode = sys.argv[1]
if mode == "keep":
  from jaxad.train import host_memory
  applied, _ = host_memory.keep_step_buffers()
  assert applied
import jax, jax.numpy as jnp, numpy as np
x = jnp.asarray(np.random.default_rng(0).standard_normal((4096, 4096)), jnp.float32)  # 64 MiB
f = jax.jit(lambda x: jnp.cumsum(x * 1.5, axis=1))  # a fresh 64 MiB result per call
for _ in range(3):
  y = f(x); y.block_until_ready(); del y
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
n = 8
for _ in range(n):
  y = f(x); y.block_until_ready(); checksum = float(y[::512, ::512].sum()); del y
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n
print(json.dumps({"faults_per_call": faults, "checksum": checksum}))
"""

_PAGES = 64 * 2**20 // 4096


def _run(mode: str) -> dict:
  env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
  out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True,
                       env=env, cwd=REPO, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc_host() -> bool:
  return host_memory._glibc() is not None


@pytest.mark.skipif(not _glibc_host(), reason="needs glibc (Linux): mallopt is glibc's")
def test_kept_buffers_fault_no_pages_and_compute_the_same():
  kept, plain = _run("keep"), _run("default")
  assert plain["checksum"] == kept["checksum"]
  # Without: the result and cumsum's temporary fault 2 x 16,384 pages per call (33,943 measured).
  # Kept: 2,000-4,300 faults per call remain (other, smaller allocations), never a whole buffer.
  assert kept["faults_per_call"] < 0.5 * _PAGES, (kept, plain)
  thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
  if not (thp.exists() and "[always]" in thp.read_text()):  # with 2 MiB pages the baseline faults little
    assert plain["faults_per_call"] > _PAGES, plain  # the problem the module solves is real here
    assert kept["faults_per_call"] < 0.25 * plain["faults_per_call"], (kept, plain)


def test_refuses_after_backends_exist():
  jax.devices()
  with pytest.raises(RuntimeError, match="before JAX creates its backends"):
    host_memory.keep_step_buffers()


def test_switch_values():
  assert host_memory.apply_host_buffers("default").endswith("system default (default)")
  with pytest.raises(ValueError, match="expected one of"):
    host_memory.apply_host_buffers("always")


def test_cpu_backend_expected_follows_jax_platforms(monkeypatch):
  monkeypatch.setattr(host_memory, "_configured_platforms", lambda: "cpu")
  assert host_memory.cpu_backend_expected()
  monkeypatch.setattr(host_memory, "_configured_platforms", lambda: "cuda,cpu")
  assert not host_memory.cpu_backend_expected()
