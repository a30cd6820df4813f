"""Keep XLA:CPU's per-step temporary buffer in memory between steps (glibc hosts).

Why: an XLA executable gets all its temporaries as one host allocation per execution (121 MB
for SCGAN's step at 64 px, batch 16; 286 MB for RAMFAE's). glibc serves allocations above its
``mmap`` threshold (at most 32 MiB) with a fresh ``mmap`` and returns them with ``munmap``, so
every step faults the whole buffer in again, page by page: ~19 % of the one-thread SCGAN step
was kernel time in a profile (BUILD_NOTES.md, "RAMFAE", speed). Non-main glibc arenas always
``mmap`` such sizes, and with JAX's asynchronous CPU dispatch the buffer is allocated on a
dispatch thread, i.e. in a non-main arena.

:func:`keep_step_buffers` therefore (1) turns JAX's asynchronous CPU dispatch off, so executions
(and their allocation) run on the calling thread, whose arena is glibc's main arena, and (2) tells
glibc, through ``mallopt``, to serve large blocks from that heap (``M_MMAP_MAX = 0``) and not to
give freed memory back (``M_TRIM_THRESHOLD`` = 2 GiB - 1), so the next step reuses the same
pages. The numbers computed are unchanged (only where buffers live changes).

Costs, by design: the process keeps its peak heap until it exits (fine for a training or
evaluation run, not what a long-lived service wants), and Python no longer runs ahead of a CPU
computation (the steps here are tens of milliseconds and longer). Accelerator computations
keep JAX's asynchronous dispatch: the setting is the CPU client's only.

Must be called before JAX creates its CPU client (the first computation, ``jax.devices()``, or
``jax.distributed.initialize``); later it raises. ``experiments/train.py``, ``evaluate.py``,
``predict.py`` and every record of ``benchmark_methods.py`` call it when JAX will run on the CPU (``--host_buffers=auto``, the default, uses
:func:`cpu_backend_expected`); ``keep`` forces it, ``default`` leaves the process as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import pkgutil
import sys

__all__ = ["keep_step_buffers", "cpu_backend_expected", "HOST_BUFFERS", "apply_host_buffers",
           "M_MMAP_MAX", "M_TRIM_THRESHOLD", "TRIM_THRESHOLD"]

HOST_BUFFERS = ("auto", "keep", "default")

# glibc <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int; larger than any buffer freed at the heap top


def _backends_initialised() -> bool:
  from jax._src import xla_bridge
  return xla_bridge.backends_are_initialized()


def _configured_platforms() -> str | None:
  import jax
  return jax.config.jax_platforms


def cpu_backend_expected() -> bool:
  """Whether JAX will compute on the CPU, decided without creating a backend.

  True when ``jax_platforms`` (``JAX_PLATFORMS``) names ``cpu`` first, or, when it is unset, when no
  JAX plugin (GPU, TPU, ...) is installed: neither a ``jax_plugins`` module nor a ``jax_plugins``
  entry point.
  """
  platforms = _configured_platforms()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  try:
    import jax_plugins  # namespace package of the accelerator plugins
    if any(True for _ in pkgutil.iter_modules(jax_plugins.__path__)):
      return False
  except ImportError:
    pass
  if importlib.util.find_spec("libtpu") is not None:
    return False
  return not importlib.metadata.entry_points(group="jax_plugins")


def _glibc() -> ctypes.CDLL | None:
  if not sys.platform.startswith("linux"):
    return None
  name = ctypes.util.find_library("c") or "libc.so.6"
  try:
    libc = ctypes.CDLL(name)
  except OSError:
    return None
  # gnu_get_libc_version exists only in glibc (musl has mallopt as a stub that does nothing).
  return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def keep_step_buffers() -> tuple[bool, str]:
  """Applies the two settings of the module docstring; returns ``(applied, explanation)``.

  ``applied`` is False (nothing changed) on hosts without glibc, where the reason is returned
  for the caller to log; the computation is then correct, only slower on CPU.

  Raises:
    RuntimeError: JAX's backends already exist (the dispatch mode can no longer change).
  """
  if _backends_initialised():
    raise RuntimeError("keep_step_buffers() must run before JAX creates its backends (before the "
                       "first computation, jax.devices() or jax.distributed.initialize)")
  libc = _glibc()
  if libc is None:
    return False, f"not applied: no glibc on this host ({sys.platform}); host buffers are the system's"
  import jax
  jax.config.update("jax_cpu_enable_async_dispatch", False)
  rejected = [name for name, param, value in (("M_MMAP_MAX", M_MMAP_MAX, 0),
                                               ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, TRIM_THRESHOLD))
              if libc.mallopt(param, value) != 1]  # glibc returns 1 on success
  if rejected:
    raise RuntimeError(f"glibc rejected mallopt({', '.join(rejected)}); the host allocator is in "
                       "an unknown state")
  libc.gnu_get_libc_version.restype = ctypes.c_char_p
  version = libc.gnu_get_libc_version().decode()
  return True, (f"XLA:CPU step buffers kept between steps (synchronous CPU dispatch; glibc {version} "
                f"mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD={TRIM_THRESHOLD})")


def apply_host_buffers(mode: str) -> str:
  """The command-line switch: ``"auto"`` (keep on CPU), ``"keep"`` or ``"default"`` (nothing).

  Returns a line for the run's log saying what was done.
  """
  if mode not in HOST_BUFFERS:
    raise ValueError(f"host buffers: expected one of {HOST_BUFFERS}, got {mode!r}")
  if mode == "default" or (mode == "auto" and not cpu_backend_expected()):
    return f"host buffers: system default ({mode})"
  return "host buffers: " + keep_step_buffers()[1]
