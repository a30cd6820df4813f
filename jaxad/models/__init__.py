"""Method registry: ``jaxad.models.get(name)`` returns a method module.

Every method module follows :mod:`jaxad.models.protocol` (``Config``, ``init``,
``train_step``, ``predict`` and optionally ``prepare``, ``normalize``, ``reconstruct``).
A new method is one file here plus one line in ``_REGISTRY`` (or a :func:`register` call).

Modules are imported lazily, so ``import jaxad.models`` stays cheap and a method
whose module is missing or broken only fails when it is requested.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from jaxad.models.protocol import OPTIONAL, REQUIRED, Run, check_method

__all__ = ["get", "names", "register", "Run", "REQUIRED", "OPTIONAL"]

_REGISTRY: dict[str, str] = {
    "affgan": "jaxad.models.affgan",
    "conv_ae": "jaxad.models.conv_ae",
    "dfdaad": "jaxad.models.dfdaad",
    "ramfae": "jaxad.models.ramfae",
    "scgan": "jaxad.models.scgan",
    "smcc": "jaxad.models.smcc",
}
_MODULES: dict[str, ModuleType] = {}  # modules registered as objects (e.g. defined in a test)


def names() -> list[str]:
  """Registered method names, sorted."""
  return sorted(_REGISTRY)


def register(name: str, module: str | ModuleType) -> None:
  """Registers ``name`` for a module (its importable path, or the module itself).

  Raises:
    ValueError: ``name`` is already registered for another module.
  """
  if not name or not isinstance(name, str):
    raise ValueError(f"name must be a non-empty str, got {name!r}")
  if isinstance(module, ModuleType):
    check_method(module)
    _MODULES[module.__name__] = module
    module = module.__name__
  if _REGISTRY.get(name, module) != module:
    raise ValueError(f"method {name!r} is already registered as {_REGISTRY[name]!r}")
  _REGISTRY[name] = module


def get(name: str) -> ModuleType:
  """The method module registered as ``name`` (imported on first use).

  Raises:
    ValueError: unknown name (the message lists the registered ones).
    ImportError: the registered module cannot be imported.
    TypeError: the module lacks part of the protocol.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(names())}")
  path = _REGISTRY[name]
  if path in _MODULES:
    return _MODULES[path]
  try:
    module = importlib.import_module(path)
  except ImportError as e:
    raise ImportError(f"method {name!r} is registered as module {path!r}, which cannot be "
                      f"imported ({type(e).__name__}: {e})") from e
  return check_method(module)
