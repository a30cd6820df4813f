"""Shared pytest fixtures for jaxad tests.

* ``shared_data``: the real-data folder of the tests (``mvtec_ad/bottle``, ``mnist``):
  ``$JAXAD_TEST_DATA`` when set, else ``../shared/data`` beside the repository. This
  is the only place that names the location; tests that need the folder use this
  fixture (or ``mvtec_bottle`` / ``mnist_dir``) and skip with a message when it is absent.
* ``run_jax_subprocess``: runs a Python snippet in a fresh interpreter with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` so sharding tests see
  N CPU devices (the flag must be set before JAX is imported).
* ``run_experiment``: runs an ``experiments/`` script on the CPU in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA_ENV = "JAXAD_TEST_DATA"


def shared_data_dir() -> Path:
  """Returns the real-data folder of the tests (may not exist)."""
  env = os.environ.get(TEST_DATA_ENV)
  if env:
    return Path(env).expanduser()
  return REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
  path = shared_data_dir()
  if not path.is_dir():
    pytest.skip(f"real data not found at {path} (set {TEST_DATA_ENV} to a folder holding "
                "mvtec_ad/bottle and mnist)")
  return path


@pytest.fixture(scope="session")
def mvtec_bottle(shared_data: Path) -> Path:
  path = shared_data / "mvtec_ad" / "bottle"
  if not (path / "train" / "good").is_dir():
    pytest.skip(f"MVTec AD bottle not found at {path}")
  return path


@pytest.fixture(scope="session")
def mnist_dir(shared_data: Path) -> Path:
  path = shared_data / "mnist"
  if not (path / "t10k-images-idx3-ubyte.gz").is_file():
    pytest.skip(f"MNIST IDX files not found at {path}")
  return path


def run_jax_subprocess(code: str, devices: int = 1, timeout: float = 600,
                       env: dict[str, str] | None = None) -> str:
  """Runs ``code`` in a fresh Python with ``devices`` forced CPU devices.

  Returns the subprocess's stdout; raises ``AssertionError`` with stderr on failure.
  """
  full_env = dict(os.environ)
  full_env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  full_env["JAX_PLATFORMS"] = "cpu"
  full_env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
  if env:
    full_env.update(env)
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                        text=True, timeout=timeout, env=full_env, cwd=str(REPO_ROOT))
  if proc.returncode != 0:
    raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return proc.stdout


@pytest.fixture()
def jax_subprocess():
  """Fixture form of :func:`run_jax_subprocess`."""
  return run_jax_subprocess


def run_experiment(script: str, *args: str, timeout: float = 600) -> str:
  """Runs ``experiments/<script> args`` on the CPU (no inherited ``XLA_FLAGS``); returns stdout.

  Raises ``AssertionError`` with the end of stderr when the script fails.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, str(REPO_ROOT / "experiments" / script), *args],
                        capture_output=True, text=True, env=env, cwd=str(REPO_ROOT), timeout=timeout)
  if proc.returncode != 0:
    raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return proc.stdout
