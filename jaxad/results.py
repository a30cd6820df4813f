"""Results files: one JSON per (method, category) and paper-style Markdown tables.

Layout written by :func:`write_results`::

  <workdir>/<method>/<category>.json
  {"method": ..., "category": ..., "metrics": {"image_auroc": 0.951, ...}, "jaxad_version": ...}

``category`` names the user's data: an MVTec category, a BTAD product, or for a folder of
one's own images its folder name (:func:`dataset_name` derives it; a ``dataset`` key may
record the reader, e.g. ``"folder"``).

:func:`collect_results` reads every such file under a root folder into
``{method: {category: {metric: value}}}`` and :func:`markdown_table` turns one
metric of that table into categories x methods with a ``Mean`` row, values in
percent with one decimal (the convention of the MVTec AD papers).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["write_results", "load_results", "collect_results", "markdown_table", "markdown_tables",
           "dataset_name"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

# Display names of the metric keys produced by `jaxad.metrics.evaluate`.
METRIC_NAMES = {
  "image_auroc": "Image AUROC",
  "image_ap": "Image AP",
  "image_f1_max": "Image F1-max",
  "pixel_auroc": "Pixel AUROC",
  "pixel_ap": "Pixel AP",
  "pixel_f1_max": "Pixel F1-max",
  "aupro": "AUPRO (FPR <= 0.3)",
}


def _check_name(value: str, name: str) -> str:
  if not isinstance(value, str) or not _NAME.match(value):
    raise ValueError(f"{name} must be a non-empty name of letters, digits, '_', '-', '.', '+' "
                     f"(it becomes a file name), got {value!r}")
  return value


def _check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
  if not isinstance(metrics, Mapping) or not metrics:
    raise ValueError(f"metrics must be a non-empty dict of name -> number, got {metrics!r}")
  out = {}
  for key, value in metrics.items():
    if not isinstance(key, str) or not key:
      raise ValueError(f"metric names must be non-empty strings, got {key!r}")
    try:
      number = float(value)
    except (TypeError, ValueError):
      raise ValueError(f"metric {key!r} must be a number, got {value!r}") from None
    if not math.isfinite(number):
      raise ValueError(f"metric {key!r} is not finite: {value!r}")
    out[key] = number
  return out


def dataset_name(dataset: str, root: str | os.PathLike | None = None, **kwargs) -> str:
  """A results name for the data a run used: the user's category, product or folder name.

  Args:
    dataset: the reader's name (``"mvtec"``, ``"btad"``, ``"folder"``, ``"elpv"``, ``"mnist"``, ...).
    root: the data folder given to ``jaxad.data.load`` (``None`` for built-in data).
    **kwargs: the reader's keyword arguments; ``category`` (MVTec), ``product`` (BTAD) and
      ``normal_class`` (MNIST-style) are used.

  Returns:
    ``category`` or ``product`` when given; ``"<dataset>_class<k>"`` for a one-class split; else
    the name of ``root`` (e.g. ``"my_parts"`` for ``path/to/my_parts``, or ``"bottle"`` for one
    MVTec category folder); else ``dataset``. Runs of characters a results file name cannot
    hold become one ``_``.
  """
  if kwargs.get("category"):
    name = str(kwargs["category"])
  elif kwargs.get("product"):
    name = str(kwargs["product"])
  elif kwargs.get("normal_class") is not None:
    name = f"{dataset}_class{int(kwargs['normal_class'])}"
  elif root is not None and Path(root).resolve().name:
    name = Path(root).resolve().name
  else:
    name = str(dataset)
  name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_").lstrip(".+-")
  return name or str(dataset)


def write_results(workdir: str | os.PathLike, method: str, category: str,
                  metrics: Mapping[str, float], *, dataset: str | None = None) -> Path:
  """Writes ``<workdir>/<method>/<category>.json`` (overwrites; parent folders are created).

  Args:
    workdir: results root folder.
    method: method name, e.g. ``"ramfae"`` (letters, digits, ``_-.+``).
    category: name of the evaluated data, e.g. ``"bottle"`` or the folder name of one's own
      images (see :func:`dataset_name`).
    metrics: flat ``{name: value}``, e.g. the output of ``jaxad.metrics.evaluate``; values are
      finite numbers stored as fractions (``0.951``, not ``95.1``).
    dataset: optional reader name stored beside (``"mvtec"``, ``"folder"`` ...).

  Returns:
    Path of the JSON file.
  """
  _check_name(method, "method")
  _check_name(category, "category")
  metrics = _check_metrics(metrics)
  from jaxad import __version__  # Light: the top-level package only holds the version.

  path = Path(workdir) / method / f"{category}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  record = {"method": method, "category": category, "metrics": metrics, "jaxad_version": __version__}
  if dataset is not None:
    record["dataset"] = str(dataset)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
  tmp.replace(path)  # atomic: concurrent readers never see half a file
  return path


def load_results(path: str | os.PathLike) -> dict:
  """Reads one file written by :func:`write_results` (raises ``ValueError`` if malformed)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"results file not found: {path} (written by jaxad.results.write_results)")
  try:
    record = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from None
  if not (isinstance(record, dict) and {"method", "category", "metrics"} <= record.keys()):
    raise ValueError(f"{path} is not a jaxad results file (needs method, category, metrics keys)")
  record["metrics"] = _check_metrics(record["metrics"])
  return record


def collect_results(root: str | os.PathLike) -> dict[str, dict[str, dict[str, float]]]:
  """Reads every ``<root>/**/<category>.json`` results file into one nested table.

  Args:
    root: folder searched recursively; JSON files that are not results files are skipped.

  Returns:
    ``{method: {category: {metric: value}}}`` with methods and categories sorted by name.
  """
  root = Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"results folder not found: {root}")
  table: dict[str, dict[str, dict[str, float]]] = {}
  for path in sorted(root.rglob("*.json")):
    try:
      record = load_results(path)
    except ValueError:
      continue
    method, category = str(record["method"]), str(record["category"])
    if category in table.get(method, {}):
      raise ValueError(f"duplicate results for method {method!r}, category {category!r} under "
                       f"{root} (second file: {path})")
    table.setdefault(method, {})[category] = record["metrics"]
  return {m: dict(sorted(table[m].items())) for m in sorted(table)}


def _fmt(value: float | None, percent: bool, decimals: int) -> str:
  if value is None:
    return "–"
  return f"{value * 100.0 if percent else value:.{decimals}f}"


def markdown_table(table: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str = "image_auroc",
                   *, methods: Sequence[str] | None = None, categories: Sequence[str] | None = None,
                   percent: bool = True, decimals: int = 1, title: str | None = None) -> str:
  """One metric as a Markdown table: a row per category, a column per method, and a Mean row.

  Args:
    table: ``{method: {category: {metric: value}}}`` as returned by :func:`collect_results`.
    metric: the metric key to show, e.g. ``"image_auroc"``, ``"pixel_auroc"``, ``"aupro"``.
    methods: column order (default: every method in ``table``, sorted).
    categories: row order (default: every category of any method, sorted).
    percent: show ``100 * value`` (the papers' convention).
    decimals: digits after the decimal point.
    title: heading line; default names the metric, the unit and the rounding.

  Returns:
    Markdown text: a title line, a blank line and the table. Missing entries are ``–``; the Mean
    row averages the unrounded values a method has and is marked ``*`` when some are missing
    (explained under the table).
  """
  if not isinstance(metric, str) or not metric:
    raise ValueError(f"metric must be a non-empty string, got {metric!r}")
  if not isinstance(decimals, int) or decimals < 0:
    raise ValueError(f"decimals must be an int >= 0, got {decimals!r}")
  methods = list(sorted(table) if methods is None else methods)
  if not methods:
    raise ValueError("markdown_table: no methods (empty table)")
  for m in methods:
    if m not in table:
      raise ValueError(f"method {m!r} not in the table (has {sorted(table)})")
  if categories is None:
    categories = sorted({c for m in methods for c in table[m]})
  categories = list(categories)
  if not categories:
    raise ValueError("markdown_table: no categories")
  values = {m: [table[m].get(c, {}).get(metric) for c in categories] for m in methods}
  if all(v is None for vals in values.values() for v in vals):
    raise ValueError(f"metric {metric!r} not found for any method/category")
  unit = "%" if percent else "fraction"
  if title is None:
    title = f"**{METRIC_NAMES.get(metric, metric)}** ({unit}, {decimals} decimal{'s' * (decimals != 1)})"
  lines = [title, "", "| Category | " + " | ".join(methods) + " |",
           "| --- | " + " | ".join("---:" for _ in methods) + " |"]
  for i, c in enumerate(categories):
    lines.append(f"| {c} | " + " | ".join(_fmt(values[m][i], percent, decimals) for m in methods) + " |")
  means, partial = [], False
  for m in methods:
    present = [v for v in values[m] if v is not None]
    if not present:
      means.append("–")
      continue
    mark = "*" if len(present) < len(categories) else ""
    partial |= bool(mark)
    means.append(_fmt(sum(present) / len(present), percent, decimals) + mark)
  lines.append("| **Mean** | " + " | ".join(means) + " |")
  if partial:
    lines += ["", "\\* mean over the categories available for that method."]
  return "\n".join(lines) + "\n"


def markdown_tables(table: Mapping[str, Mapping[str, Mapping[str, float]]],
                    metrics: Sequence[str] | None = None, **kwargs) -> str:
  """Several :func:`markdown_table` blocks separated by blank lines.

  Args:
    table: as in :func:`markdown_table`.
    metrics: metric keys (default: those of :data:`METRIC_NAMES` present in the table).
    **kwargs: passed to :func:`markdown_table`.

  Returns:
    Markdown text.
  """
  if metrics is None:
    present = {k for cats in table.values() for ms in cats.values() for k in ms}
    metrics = [k for k in METRIC_NAMES if k in present]
  if not metrics:
    raise ValueError("markdown_tables: no metrics to show")
  return "\n".join(markdown_table(table, m, **kwargs) for m in metrics)
