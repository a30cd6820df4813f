"""Per-backend XLA compiler options for jaxad's jitted training and prediction steps.

Why: in jax 0.10, XLA:CPU hands every convolution to YNNPACK, including the
convolution *kernel gradient* (a convolution whose window is the whole feature map),
which YNNPACK computes 3-9x slower than PyTorch/oneDNN (BUILD_NOTES.md, "ramfae",
performance). The debug option ``xla_cpu_experimental_ynn_fusion_type`` selects which
ops XLA:CPU gives to YNNPACK. jaxad compiles its steps with
``INDIVIDUAL_DOT,REDUCE`` on CPU: matrix products and reductions stay in YNNPACK,
convolutions go to XLA's Eigen kernels (the kernel gradients of RAMFAE's 3x3 convs
become 2-8x faster). The option is set **per jitted function**
(``jax.jit(..., compiler_options=...)``), not process-wide, so a user's own
``jax.jit`` calls are unaffected. Other backends get no options.

Control: the environment variable ``JAXAD_XLA_CPU_OPTIONS``
  * unset or ``default`` -> :data:`CPU_OPTIONS` on CPU, nothing elsewhere;
  * ``none`` -> no options (XLA's own defaults);
  * a JSON object, e.g. ``{"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}``
    -> exactly these options on CPU (JSON booleans stay booleans, e.g. ``{"xla_cpu_use_onednn": true}``;
    other values are passed as strings).
The option is *experimental* in XLA; if a future jaxlib rejects it, :func:`step_options`
raises with this explanation instead of silently compiling without it.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["CPU_OPTIONS", "ENV_VAR", "step_options", "jit"]

ENV_VAR = "JAXAD_XLA_CPU_OPTIONS"

CPU_OPTIONS: dict[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


def _requested(setting: str | None) -> dict[str, str | bool]:
  raw = (os.environ.get(ENV_VAR, "default") if setting is None else setting).strip()
  if raw in ("", "default"):
    return dict(CPU_OPTIONS)
  if raw == "none":
    return {}
  try:
    opts = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f"{ENV_VAR} must be 'default', 'none' or a JSON object of XLA options, "
                     f"got {raw!r} ({e})") from None
  if not isinstance(opts, dict) or not all(isinstance(k, str) for k in opts):
    raise ValueError(f"{ENV_VAR} must be a JSON object mapping option names to values, got {raw!r}")
  return {k: v if isinstance(v, bool) else str(v) for k, v in opts.items()}


@functools.lru_cache(maxsize=8)
def _checked(items: tuple[tuple[str, str | bool], ...]) -> dict[str, str | bool]:
  """Compile a one-op function with the options once, so a rejected option fails early and clearly."""
  opts = dict(items)
  try:
    jax.jit(lambda x: x + 1, compiler_options=opts)(jnp.zeros((), jnp.float32)).block_until_ready()
  except Exception as e:  # noqa: BLE001 - re-raised with the remedy
    raise RuntimeError(
        f"XLA:CPU rejected jaxad's step compiler options {opts} (jax {jax.__version__}): {e}. "
        f"These options only tune CPU speed; set {ENV_VAR}=none to compile without them, or "
        f"pass working options as JSON in {ENV_VAR}.") from e
  return opts


def step_options(backend: str | None = None, setting: str | None = None) -> dict[str, str | bool] | None:
  """XLA compiler options for a jitted jaxad step on ``backend``.

  Args:
    backend: ``"cpu"``, ``"gpu"``, ``"tpu"``...; ``None`` = ``jax.default_backend()``.
    setting: ``"default"``, ``"none"`` or a JSON object, as ``JAXAD_XLA_CPU_OPTIONS`` takes
      it; ``None`` = read that environment variable.
  Returns:
    The options (checked once per process to be accepted by this jaxlib), or ``None``
    when there are none (non-CPU backends, or ``JAXAD_XLA_CPU_OPTIONS=none``).
  Raises:
    ValueError: malformed ``setting`` / ``JAXAD_XLA_CPU_OPTIONS``.
    RuntimeError: this jaxlib rejects the options.
  """
  if (backend or jax.default_backend()) != "cpu":
    return None
  opts = _requested(setting)
  return _checked(tuple(sorted(opts.items()))) if opts else None


def jit(fun: Any, **kwargs: Any) -> Any:
  """``jax.jit(fun, **kwargs)`` with :func:`step_options` for the default backend."""
  return jax.jit(fun, compiler_options=step_options(), **kwargs)
