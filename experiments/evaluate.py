"""Evaluates a trained run: restores its checkpoint, scores the test split, writes metrics.

Example::

  python experiments/evaluate.py --workdir=runs/conv_ae_bottle

Reads ``<workdir>/run.json`` (method, config, data set written by
``experiments/train.py``), restores the latest checkpoint (or ``--step``),
predicts scores and maps for the test split and writes:

* ``<results_dir>/<method>/<name>.json`` via ``jaxad.results.write_results``
  (``--results_dir`` defaults to ``<workdir>/results``); ``<name>`` is ``--name``, else the
  MVTec category / BTAD product, else the data folder's name (``jaxad.results.dataset_name``);
* ``<workdir>/results.md``: the Markdown metrics table (also printed);
* ``<workdir>/test_panels.png`` (``jaxad.report.save_test_panels``): input | reconstruction |
  residual | anomaly map | mask for ``--num_panels`` test images of both classes
  (``jaxad.viz.select_examples``), each row captioned with its file name, ground truth, score and
  the decision at the image F1-max threshold of this test set; one colour scale (the test set's map
  range) with a colour bar.

Pixel metrics are computed when the data set has masks (``has_masks``).

``--score_field=<field>=<value>`` (repeatable) evaluates the same checkpoint with a config field
changed that only affects scoring (e.g. ``--score_field=image_score=map_max`` for SCGAN / AFF-GAN,
``--score_field=knn_k=3`` for SMCC); a field that changes the networks fails at prediction.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of a run of experiments/train.py.")
flags.DEFINE_multi_string("score_field", [], "field=value: evaluate with this config field changed "
                          "(scoring options only, e.g. image_score=map_max).")
flags.DEFINE_string("data_dir", None, "Override the data folder stored in the run.")
flags.DEFINE_string("results_dir", None, "Results root (default: <workdir>/results).")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: latest).")
flags.DEFINE_integer("batch_size", 32, "Images per prediction call.")
flags.DEFINE_integer("num_panels", 8, "Test images drawn into test_panels.png, half anomalous and "
                     "half normal (0: none).")
flags.DEFINE_enum("host_buffers", "auto", ["auto", "keep", "default"], "XLA:CPU prediction "
                  "buffers kept mapped between batches (jaxad.train.host_memory; auto = on CPU).")
flags.DEFINE_string("name", None, "Name of the evaluated data in the results (default: the "
                    "category / product, else the data folder's name).")


def with_fields(config, assignments: list[str]):
  """``config`` (a frozen dataclass) with ``field=value`` assignments (values as Python literals,
  else strings); the config's own validation runs. Raises ``ValueError`` on unknown fields."""
  import ast
  import dataclasses
  names = {f.name for f in dataclasses.fields(config)}
  changes = {}
  for item in assignments:
    field, sep, raw = item.partition("=")
    if not sep or field not in names:
      raise ValueError(f"{item!r}: expected <field>=<value> with a field of "
                       f"{type(config).__module__}.Config ({', '.join(sorted(names))})")
    try:
      changes[field] = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      changes[field] = raw
  return dataclasses.replace(config, **changes) if changes else config


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  workdir = Path(FLAGS.workdir).resolve()
  run_file = workdir / "run.json"
  if not run_file.is_file():
    raise app.UsageError(f"{run_file} not found: --workdir={FLAGS.workdir} is not a training "
                         "workdir of experiments/train.py")
  if FLAGS.batch_size < 1:
    raise app.UsageError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
  info = json.loads(run_file.read_text())
  if "dataset" not in info:
    raise app.UsageError(f"{run_file} has no data set (trained from Python, not train.py); "
                         "evaluate with jaxad.train.predict.predict_dataset + jaxad.metrics.evaluate")
  data_dir = FLAGS.data_dir or info.get("data_dir")
  if data_dir is not None and not Path(data_dir).is_dir():
    raise app.UsageError(f"data folder {data_dir} does not exist (pass --data_dir)")

  from jaxad.progress import log
  from jaxad.train import host_memory
  log(host_memory.apply_host_buffers(FLAGS.host_buffers))
  from jaxad import data, metrics, report, results
  from jaxad.train import loop
  from jaxad.train.checkpoint import (CheckpointMismatchError, CheckpointUnreadableError,
                                      quiet_orbax_logs)
  from jaxad.train.mesh import to_host
  from jaxad.train.predict import predict_dataset

  quiet_orbax_logs()

  try:
    restored = loop.restore(workdir, step=FLAGS.step)
  except (ValueError, FileNotFoundError, CheckpointMismatchError, CheckpointUnreadableError) as e:
    raise app.UsageError(str(e)) from None
  method, config, state = restored.method, restored.config, restored.state
  try:
    config = with_fields(config, FLAGS.score_field)
  except ValueError as e:
    raise app.UsageError(f"--score_field: {e}") from None
  log("restored %s at step %d", workdir, int(to_host(state.step)))

  kwargs = dict(info.get("data_kwargs", {}))
  test = data.load(info["dataset"], data_dir, "test", **kwargs)
  scores, maps = predict_dataset(method, config, state, test.images, batch_size=FLAGS.batch_size,
                                 desc="evaluate")
  has_masks = bool(getattr(test, "has_masks", True))
  values = metrics.evaluate(test.labels, scores, test.masks if has_masks else None,
                            maps if has_masks else None)
  name = FLAGS.name or results.dataset_name(info["dataset"], data_dir, **kwargs)
  results_dir = Path(FLAGS.results_dir) if FLAGS.results_dir else workdir / "results"
  try:
    path = results.write_results(results_dir, info["method"], name, values, dataset=info["dataset"])
  except ValueError as e:
    raise app.UsageError(f"--name: {e}") from None
  table = results.markdown_tables(results.collect_results(results_dir))
  (workdir / "results.md").write_text(table + "\n")
  print(table)
  log("results: %s", path)
  if FLAGS.num_panels:
    panels = report.save_test_panels(
        workdir / "test_panels.png", test.images, scores, maps, labels=test.labels,
        names=test.names, masks=test.masks if has_masks else None,
        title=f"{info['method']} on {name}", num_panels=FLAGS.num_panels, method=method,
        config=config, state=state)
    log("panels: %s", panels)
  print(json.dumps({"results": str(path), **values}))


if __name__ == "__main__":
  app.run(main)
