"""Method configs for the command line: ``experiments/configs/<method>.py:get_config()``.

Each file returns an ``ml_collections.ConfigDict`` holding ``method`` (the registry name) and
every field of the method's frozen ``Config`` with the command-line defaults (built with
:func:`method_config`). ``experiments/train.py --config=experiments/configs/ramfae.py`` loads it
through ``ml_collections.config_flags`` (as big_vision and the flax examples do), so any field
can be overridden with ``--config.<field>=<value>`` (number tuples as ``--config.features=8,16``,
string tuples as Python literals: ``--config.layers="('stride8','stride16')"``); the
file may take an argument after a colon (``--config=experiments/configs/ramfae.py:mnist``).
:func:`to_method_config` turns the ConfigDict back into the method's ``Config``, whose own
validation then runs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from types import ModuleType
from typing import Any

import ml_collections
from ml_collections import config_dict

__all__ = ["method_config", "to_method_config"]


def _placeholder_type(cls: type, name: str) -> type:
  """The non-None type of an optional field, for ``config_dict.placeholder``."""
  hint = typing.get_type_hints(cls)[name]
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
    return args[0]
  raise TypeError(f"{cls.__qualname__}.{name} defaults to None but its type {hint} is not "
                  "Optional[T]")


def method_config(name: str, config: Any) -> ml_collections.ConfigDict:
  """A ConfigDict of ``method=name`` and every field of the frozen dataclass ``config``.

  Fields whose value is ``None`` become typed placeholders, so ``--config.<field>=...`` can set
  them from the command line.
  """
  if not dataclasses.is_dataclass(config) or isinstance(config, type):
    raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
  out = ml_collections.ConfigDict()
  out.method = name
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if value is None:
      value = config_dict.placeholder(_placeholder_type(type(config), field.name))
    setattr(out, field.name, value)
  return out


def to_method_config(method: ModuleType, config: ml_collections.ConfigDict) -> Any:
  """``method.Config`` from a ConfigDict of :func:`method_config` (``method`` key dropped).

  Raises:
    ValueError: keys that are not fields of ``method.Config`` (listed), or the Config's own
      validation of the values.
  """
  values = config.to_dict()
  values.pop("method", None)
  fields = {f.name for f in dataclasses.fields(method.Config)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f"{method.__name__}.Config has no field(s) {unknown}; fields: {sorted(fields)}")
  for key, value in values.items():
    if isinstance(value, list):
      values[key] = tuple(value)
  return method.Config(**values)
