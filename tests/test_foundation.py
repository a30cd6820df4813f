"""Package-level guarantees: light imports, version, progress reporting."""

from __future__ import annotations

import io
import json
import logging as std_logging
import subprocess
import sys

import pytest

import jaxad
from jaxad import progress as progress_lib

HEAVY = ("tensorflow", "tensorflow_datasets", "torch")


def _modules_after_import(stmt: str) -> set[str]:
  code = f"import sys, json\n{stmt}\nprint(json.dumps(sorted(sys.modules)))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_version_is_a_string():
  assert isinstance(jaxad.__version__, str) and jaxad.__version__.count(".") == 2


def test_import_jaxad_is_light():
  mods = _modules_after_import("import jaxad")
  assert not any(m in mods for m in HEAVY), sorted(m for m in mods if m in HEAVY)
  # Not even JAX: `import jaxad` only exposes the version.
  assert "jax" not in mods


def test_progress_counts_and_logs_when_not_a_tty(caplog):
  stream = io.StringIO()  # not a TTY -> log lines, no bar
  caplog.set_level(std_logging.INFO)
  with progress_lib.Progress(total=3, desc="unit", unit="img", log_every=1e-9,
                             stream=stream) as bar:
    for _ in range(3):
      bar.update(1, loss=0.5)
  assert bar.count == 3
  assert stream.getvalue() == ""  # no bar drawn
  text = "\n".join(r.getMessage() for r in caplog.records)
  assert "unit: 3/3 img" in text and "loss=0.5" in text and "(done)" in text


def test_progress_iterator_yields_everything():
  assert list(progress_lib.progress(range(5), desc="it", enabled=False)) == list(range(5))


@pytest.mark.parametrize("kwargs", [dict(total=-1), dict(log_every=0)])
def test_progress_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    progress_lib.Progress(**kwargs)


def test_progress_rejects_negative_update():
  bar = progress_lib.Progress(enabled=False)
  with pytest.raises(ValueError):
    bar.update(-1)
