"""Method configs for the CLI: defaults from ``configs/<method>.py`` plus ``--set`` overrides.

Each method's CLI defaults live in ``experiments/configs/<method>.py`` as
``get_config() -> <method>.Config`` (the frozen dataclass of the method module).
Without such a file the method's ``Config()`` defaults are used. On the command
line, ``--set field=value`` (repeatable) overrides any field; values are parsed
by the type of the field's default:

* ``bool``: ``true/false/1/0/yes/no``; ``int``, ``float``, ``str`` as usual;
* ``tuple``: comma-separated (``--set features=16,32,64``), element type from
  the default's elements (``int`` when the default is empty); ``()`` or an empty
  value gives an empty tuple;
* ``None`` default: a Python literal (``ast.literal_eval``) or else the string.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
from collections.abc import Iterable
from types import ModuleType
from typing import Any

__all__ = ["get_config", "apply_overrides", "parse_value", "parse_overrides"]

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def get_config(method_name: str, method: ModuleType) -> Any:
  """The CLI default config of ``method`` (from ``configs/<method_name>.py`` if present)."""
  try:
    module = importlib.import_module(f"experiments.configs.{method_name}")
  except ModuleNotFoundError as e:
    if e.name != f"experiments.configs.{method_name}":
      raise
    return method.Config()
  config = module.get_config()
  if not isinstance(config, method.Config):
    raise TypeError(f"experiments/configs/{method_name}.py:get_config() must return "
                    f"{method.__name__}.Config, got {type(config).__name__}")
  return config


def _parse_scalar(text: str, kind: type, field: str) -> Any:
  text = text.strip()
  try:
    if kind is bool:
      low = text.lower()
      if low in _TRUE:
        return True
      if low in _FALSE:
        return False
      raise ValueError(text)
    if kind is int:
      return int(text)
    if kind is float:
      return float(text)
  except ValueError:
    raise ValueError(f"--set {field}={text}: expected a {kind.__name__}") from None
  return text


def parse_value(field: str, text: str, default: Any) -> Any:
  """Parses ``text`` for a field whose default value is ``default``."""
  if default is None:
    try:
      return ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
  if isinstance(default, tuple):
    text = text.strip()
    if text in ("", "()", "[]"):
      return ()
    text = text.strip("()[]")
    kind = type(default[0]) if default else int
    return tuple(_parse_scalar(part, kind, field) for part in text.split(",") if part.strip())
  for kind in (bool, int, float, str):
    if isinstance(default, kind):
      return _parse_scalar(text, kind, field)
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ValueError(f"--set {field}={text}: cannot parse a value for a field of type "
                     f"{type(default).__name__}") from None


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
  """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` (raises on malformed or repeated items)."""
  out: dict[str, str] = {}
  for item in items:
    if "=" not in item:
      raise ValueError(f"--set expects field=value, got {item!r}")
    name, value = item.split("=", 1)
    name = name.strip()
    if not name:
      raise ValueError(f"--set expects field=value, got {item!r}")
    if name in out:
      raise ValueError(f"--set {name} given twice")
    out[name] = value
  return out


def apply_overrides(config: Any, overrides: Iterable[str] | dict[str, str]) -> Any:
  """A copy of the frozen dataclass ``config`` with ``--set`` overrides applied.

  Raises:
    ValueError: unknown field (the message lists the fields) or unparsable value.
  """
  if not dataclasses.is_dataclass(config):
    raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
  if not isinstance(overrides, dict):
    overrides = parse_overrides(overrides)
  fields = {f.name for f in dataclasses.fields(config)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"--set: {type(config).__module__}.Config has no field(s) {unknown}; "
                     f"fields: {sorted(fields)}")
  values = {k: parse_value(k, v, getattr(config, k)) for k, v in overrides.items()}
  return dataclasses.replace(config, **values)
