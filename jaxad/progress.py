"""Logging and progress reporting for long-running loops.

Every long loop in jaxad (data decoding, training epochs, feature extraction,
benchmarks) reports through :func:`progress` so users see the same kind of
output everywhere:

* on an interactive terminal: a ``tqdm`` bar with the postfix values given to
  :meth:`Progress.update` (e.g. loss, images/s);
* otherwise (CI, log files, notebooks redirected to files): one line every
  ``log_every`` seconds and one at the end, so logs stay short.

Lines go through the standard-library logger ``"jaxad"``, which writes the bare
message to ``sys.stderr`` (no level/time/file prefix) and does not pass records
on to the root logger (so an absl or application handler does not print them a
second time). Silence it with ``logging.getLogger("jaxad").setLevel(logging.WARNING)``
or route it elsewhere by replacing its handlers.

Progress reporting never touches device values itself: callers pass plain Python
numbers (call ``float(x)`` only when you log, not every step, to avoid
blocking the accelerator).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["Progress", "progress", "log", "logger"]


class _StderrHandler(logging.StreamHandler):
  """Writes to the *current* ``sys.stderr`` (pytest and notebooks replace it after import)."""

  def __init__(self) -> None:
    super().__init__(sys.stderr)

  @property
  def stream(self):  # type: ignore[override]
    return sys.stderr

  @stream.setter
  def stream(self, value) -> None:
    del value


def _make_logger() -> logging.Logger:
  out = logging.getLogger("jaxad")
  if not out.handlers:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    out.addHandler(handler)
    out.setLevel(logging.INFO)
    out.propagate = False
  return out


logger = _make_logger()


def log(msg: str, *args: Any) -> None:
  """Writes ``msg % args`` as one INFO line of the ``"jaxad"`` logger (stderr, no prefix)."""
  logger.info(msg, *args)


def _is_tty(stream: Any) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):
    return False


class Progress:
  """A progress reporter: tqdm bar on a TTY, periodic log lines (:func:`log`) otherwise.

  Use as a context manager or call :meth:`close` at the end.

  Args:
    total: number of expected steps, or ``None`` when unknown.
    desc: short description shown in front of every line.
    unit: name of one step (``"step"``, ``"img"``, ``"batch"`` ...).
    log_every: seconds between log lines when not on a TTY (> 0).
    enabled: ``None`` chooses automatically (bar on a TTY, log lines otherwise);
      ``False`` silences everything except the final summary line.
    stream: where the bar is drawn (default ``sys.stderr``).
  """

  def __init__(self, total: int | None = None, desc: str = "", unit: str = "step",
               log_every: float = 10.0, enabled: bool | None = None,
               stream: Any = None) -> None:
    if total is not None and total < 0:
      raise ValueError(f"total must be >= 0 or None, got {total}")
    if log_every <= 0:
      raise ValueError(f"log_every must be > 0 seconds, got {log_every}")
    self.total = total
    self.desc = desc
    self.unit = unit
    self.log_every = float(log_every)
    self.count = 0
    self.postfix: dict[str, Any] = {}
    self._stream = sys.stderr if stream is None else stream
    self._start = time.perf_counter()
    self._last_log = self._start
    self._closed = False
    self._bar = None
    self._quiet = enabled is False
    use_bar = _is_tty(self._stream) if enabled is None else bool(enabled) and _is_tty(self._stream)
    if use_bar:
      from tqdm.auto import tqdm  # Imported lazily: only needed on a TTY.
      self._bar = tqdm(total=total, desc=desc, unit=unit, file=self._stream,
                       dynamic_ncols=True)

  @property
  def elapsed(self) -> float:
    """Seconds since the reporter was created."""
    return time.perf_counter() - self._start

  @property
  def rate(self) -> float:
    """Steps per second so far (0 before the first step)."""
    elapsed = self.elapsed
    return self.count / elapsed if elapsed > 0 else 0.0

  def format(self) -> str:
    """One status line: ``desc: count/total unit (rate unit/s) k=v ...``."""
    total = f"/{self.total}" if self.total is not None else ""
    extras = " ".join(f"{k}={_fmt(v)}" for k, v in self.postfix.items())
    line = f"{self.desc}: {self.count}{total} {self.unit} ({self.rate:.2f} {self.unit}/s, {self.elapsed:.1f}s)"
    return f"{line} {extras}".rstrip()

  def update(self, n: int = 1, **postfix: Any) -> None:
    """Advances by ``n`` steps and records ``postfix`` values (e.g. ``loss=0.1``)."""
    if n < 0:
      raise ValueError(f"n must be >= 0, got {n}")
    self.count += n
    self.postfix.update(postfix)
    if self._bar is not None:
      if postfix:
        self._bar.set_postfix({k: _fmt(v) for k, v in self.postfix.items()}, refresh=False)
      self._bar.update(n)
      return
    now = time.perf_counter()
    last = self.total is not None and self.count >= self.total  # close() writes that line
    if not self._quiet and not last and now - self._last_log >= self.log_every:
      self._last_log = now
      log("%s", self.format())

  def close(self) -> None:
    """Finishes the bar (or logs a last line). Idempotent."""
    if self._closed:
      return
    self._closed = True
    if self._bar is not None:
      self._bar.close()
    log("%s (done)", self.format())

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "",
             unit: str = "step", log_every: float = 10.0,
             enabled: bool | None = None) -> Iterator[T]:
  """Iterates over ``iterable`` while reporting progress (see :class:`Progress`).

  Args:
    iterable: anything iterable.
    total: expected length; taken from ``len(iterable)`` when available.
    desc, unit, log_every, enabled: as for :class:`Progress`.

  Yields:
    The items of ``iterable`` unchanged.
  """
  if total is None and hasattr(iterable, "__len__"):
    total = len(iterable)  # type: ignore[arg-type]
  with Progress(total=total, desc=desc, unit=unit, log_every=log_every,
                enabled=enabled) as bar:
    for item in iterable:
      yield item
      bar.update(1)
