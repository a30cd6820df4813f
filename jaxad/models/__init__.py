"""Method registry: ``jaxad.models.get(name)`` returns a method module.

Every method module implements the interface of CONTRIBUTING.md ("One interface
for every method"): ``Config``, ``init(key, config, example_batch)``,
``train_step(state, batch, key)``, ``predict(state, images)``, and optionally
``fit(key, state, batches)`` and ``reconstruct(state, images)``.

Modules are imported lazily, so ``import jaxad.models`` stays cheap and a method
whose module is missing or broken only fails when it is requested.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["get", "names", "register", "REQUIRED", "OPTIONAL"]

REQUIRED = ("Config", "init", "train_step", "predict")
OPTIONAL = ("fit", "reconstruct")

_REGISTRY: dict[str, str] = {
    "conv_ae": "jaxad.models.conv_ae",
    "ramfae": "jaxad.models.ramfae",
    "smcc": "jaxad.models.smcc",
}


def names() -> list[str]:
  """Registered method names, sorted."""
  return sorted(_REGISTRY)


def register(name: str, module: str) -> None:
  """Registers ``name`` for the importable module path ``module``.

  Raises:
    ValueError: ``name`` is already registered for another module.
  """
  if not name or not isinstance(name, str):
    raise ValueError(f"name must be a non-empty str, got {name!r}")
  if _REGISTRY.get(name, module) != module:
    raise ValueError(f"method {name!r} is already registered as {_REGISTRY[name]!r}")
  _REGISTRY[name] = module


def get(name: str) -> ModuleType:
  """The method module registered as ``name`` (imported on first use).

  Raises:
    ValueError: unknown name (the message lists the registered ones).
    ImportError: the registered module cannot be imported.
    TypeError: the module lacks part of the method interface.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(names())}")
  path = _REGISTRY[name]
  try:
    module = importlib.import_module(path)
  except ImportError as e:
    raise ImportError(f"method {name!r} is registered as module {path!r}, which cannot be "
                      f"imported ({type(e).__name__}: {e})") from e
  missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
  if missing:
    raise TypeError(f"method module {path!r} lacks {missing}; see CONTRIBUTING.md "
                    "'One interface for every method'")
  return module
