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


def test_progress_counts_and_logs_when_not_a_tty(capsys):
  stream = io.StringIO()  # not a TTY -> log lines, no bar
  with progress_lib.Progress(total=3, desc="unit", unit="img", log_every=1e-9,
                             stream=stream) as bar:
    for _ in range(3):
      bar.update(1, loss=0.5)
  assert bar.count == 3
  assert stream.getvalue() == ""  # no bar drawn
  lines = capsys.readouterr().err.splitlines()
  # Bare lines on stderr: no absl/logging prefix (level letter, date, thread, file:line).
  assert lines and all(line.startswith("unit: ") for line in lines), lines
  assert "unit: 3/3 img" in lines[-1] and "loss=0.5" in lines[-1] and lines[-1].endswith("(done)")
  assert sum("3/3" in line for line in lines) == 1  # the last step is reported once, by close()


def test_log_lines_are_not_repeated_by_root_handlers(capsys):
  root_stream = io.StringIO()
  handler = std_logging.StreamHandler(root_stream)
  std_logging.getLogger().addHandler(handler)
  try:
    progress_lib.log("hello %d", 7)
  finally:
    std_logging.getLogger().removeHandler(handler)
  assert capsys.readouterr().err == "hello 7\n"
  assert root_stream.getvalue() == ""


def test_absent_tpu_probe_is_dropped_and_nothing_else():
  xla_logger = std_logging.getLogger("jax._src.xla_bridge")

  def passes(msg, level=std_logging.INFO):
    record = xla_logger.makeRecord(xla_logger.name, level, "xla_bridge.py", 1, msg, (), None)
    return xla_logger.filter(record)

  assert not passes("Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so: "
                    "libtpu.so: cannot open shared object file: No such file or directory")
  assert passes("Unable to initialize backend 'cuda': no CUDA devices")
  assert passes("Unable to initialize backend 'tpu': INTERNAL: TPU is busy")
  assert passes("Unable to initialize backend 'tpu': Failed to open libtpu.so", std_logging.WARNING)


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
