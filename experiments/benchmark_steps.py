"""Shared timing of the benchmarks (``benchmark_ramfae.py``, ``benchmark_gan.py``; per-layer:
``benchmark_upsample.py``, ``benchmark_conv_forms.py``).

Implementations are timed in one process, interleaved (ABBA order) so that all of them see the same
background load; images/s come from the median and the best wall-clock step time and from the median
CPU time (``process_time``, which does not count time the process waited for a CPU). Single
layers: :func:`median_seconds` after one warm-up call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

__all__ = ["interleaved", "median_seconds", "print_throughput_table"]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
  """Median wall-clock seconds of ``repeats`` calls of ``fn`` after one untimed (compiling) call."""
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def interleaved(steppers: dict[str, Callable[[int], None]], steps: int, warmup: int) -> dict:
  """Warm-up, then ``steps`` rounds that run every stepper once each, alternating the order.

  Returns ``{name: {"first": s, "wall": [s, ...], "cpu": [s, ...]}}``: the warm-up time (including
  compilation) and per-step wall and CPU seconds.
  """
  out = {}
  for name, fn in steppers.items():
    t0 = time.perf_counter()
    for i in range(max(warmup, 1)):
      fn(i)
    out[name] = {"first": time.perf_counter() - t0, "wall": [], "cpu": []}
  names = list(steppers)
  for i in range(steps):
    for name in (names if i % 2 == 0 else names[::-1]):
      w0, c0 = time.perf_counter(), time.process_time()
      steppers[name](warmup + i)
      out[name]["cpu"].append(time.process_time() - c0)
      out[name]["wall"].append(time.perf_counter() - w0)
  return out


def print_throughput_table(res: dict, batch_size: int, reference: str | None) -> None:
  """A Markdown table of images/s per implementation, with ratios to ``reference`` (if timed)."""
  b = batch_size
  ref = res.get(reference) if reference else None
  print("| implementation | images/s (median wall) | vs PyTorch | images/s (best wall) | vs PyTorch "
        "| images/s (median CPU time) | vs PyTorch | warm-up steps (s; incl. compile) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for name, r in res.items():
    ips = {k: b / float(np.median(r[k])) for k in ("wall", "cpu")}
    best = b / float(np.min(r["wall"]))
    rips = None if ref is None else {k: b / float(np.median(ref[k])) for k in ("wall", "cpu")}
    rbest = None if ref is None else b / float(np.min(ref["wall"]))
    rat = lambda a, c: "-" if c is None else f"{a / c:.2f}x"  # noqa: E731
    print(f"| {name} | {ips['wall']:.2f} | {rat(ips['wall'], rips and rips['wall'])} | {best:.2f} | "
          f"{rat(best, rbest)} | {ips['cpu']:.2f} | {rat(ips['cpu'], rips and rips['cpu'])} | "
          f"{r['first']:.1f} |")
