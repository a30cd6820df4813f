"""The files of a training workdir: ``run.json`` (what a resume must match) and ``metrics.jsonl``.

``run.json`` records the method, its config, the seed, the batch size, the image shape and the
run length; a second run in the same workdir must agree on all of them (or fail with a message
naming the differences). ``metrics.jsonl`` holds one JSON line per step; lines written after the
checkpoint a run resumes from are dropped, so the file always describes one uninterrupted run.
Only process 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from jaxad.train.checkpoint import CheckpointMismatchError

__all__ = ["RUN_FILE", "METRICS_FILE", "RUN_KEYS", "config_to_dict", "config_from_dict",
           "read_run_info", "write_run_info", "check_run_info", "truncate_metrics", "MetricsWriter"]

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
# Fields of run.json that a resumed run must match.
RUN_KEYS = ("method", "config", "seed", "batch_size", "image_shape", "epochs")


def config_to_dict(config: Any) -> dict[str, Any]:
  """A JSON-compatible dict of a frozen-dataclass config (tuples become lists)."""
  if not dataclasses.is_dataclass(config) or isinstance(config, type):
    raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
  return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_from_dict(method: ModuleType, values: dict[str, Any]) -> Any:
  """Builds ``method.Config`` from a dict (lists become tuples where the default is a tuple).

  Raises:
    ValueError: a key is not a field of the config (the message lists them).
  """
  fields = {f.name for f in dataclasses.fields(method.Config)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f"{method.__name__}.Config has no field(s) {unknown}; fields: {sorted(fields)}")
  defaults = method.Config()
  kwargs = {}
  for name, value in values.items():
    if isinstance(getattr(defaults, name), tuple) and isinstance(value, list):
      value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    kwargs[name] = value
  return method.Config(**kwargs)


def read_run_info(workdir: str | Path) -> dict[str, Any]:
  """The content of ``<workdir>/run.json``.

  Raises:
    FileNotFoundError: no run.json (not a training workdir).
  """
  path = Path(workdir) / RUN_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: {workdir} is not a jaxad training workdir "
                            "(train with experiments/train.py --workdir=... first)")
  return json.loads(path.read_text())


def write_run_info(workdir: Path, info: dict[str, Any]) -> None:
  """Writes ``run.json`` atomically."""
  _write_atomic(workdir / RUN_FILE, json.dumps(info, indent=2) + "\n")


def check_run_info(workdir: Path, new: dict[str, Any]) -> None:
  """Raises :class:`CheckpointMismatchError` if ``workdir`` holds a run that differs from ``new``."""
  if not (workdir / RUN_FILE).is_file():
    return
  old = read_run_info(workdir)
  diffs = [k for k in RUN_KEYS if old.get(k) != new.get(k)]
  if diffs:
    detail = "; ".join(f"{k}: saved {old.get(k)!r}, now {new.get(k)!r}" for k in diffs)
    raise CheckpointMismatchError(
        f"workdir {workdir} holds a run that is incompatible with this one ({detail}). "
        "Use a fresh --workdir, or resume with the saved settings.")


def truncate_metrics(workdir: Path, last_step: int) -> None:
  """Drops metric lines of steps after ``last_step`` (logged after the checkpoint resumed from)."""
  path = workdir / METRICS_FILE
  if not path.is_file():
    return
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  keep = [line for line in lines if json.loads(line).get("step", 0) <= last_step]
  if len(keep) != len(lines):
    _write_atomic(path, "".join(line + "\n" for line in keep))


class MetricsWriter:
  """Appends metric rows (dicts of floats) to ``metrics.jsonl``; a no-op without a workdir."""

  def __init__(self, workdir: Path | None) -> None:
    self._file = None if workdir is None else (workdir / METRICS_FILE).open("a")

  def write(self, rows: list[dict[str, Any]]) -> None:
    if self._file is None:
      return
    for row in rows:
      self._file.write(json.dumps(row) + "\n")
    self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


def _write_atomic(path: Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)  # other processes never read a half-written file
