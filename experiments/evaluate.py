"""Evaluates a trained run: restores its checkpoint, scores the test split, writes metrics.

Example::

  python experiments/evaluate.py --workdir=runs/conv_ae_bottle

Reads ``<workdir>/run.json`` (method, config, data set written by
``experiments/train.py``), restores the latest checkpoint (or ``--step``),
predicts scores and maps for the test split and writes:

* ``<results_dir>/<method>/<category>.json`` via ``jaxad.results.write_results``
  (``--results_dir`` defaults to ``<workdir>/results``);
* ``<workdir>/results.md``: the Markdown metrics table (also printed);
* ``<workdir>/test_panels.png``: input | reconstruction | residual | heat map | mask
  for ``--num_panels`` test images.

Pixel metrics are computed when the data set has masks (``has_masks``).
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
flags.DEFINE_string("data_dir", None, "Override the data folder stored in the run.")
flags.DEFINE_string("results_dir", None, "Results root (default: <workdir>/results).")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: latest).")
flags.DEFINE_integer("batch_size", 32, "Images per prediction call.")
flags.DEFINE_integer("num_panels", 8, "Test images drawn into test_panels.png (0: none).")


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
                         "evaluate with jaxad.train.loop.predict_dataset + jaxad.metrics.evaluate")
  data_dir = FLAGS.data_dir or info.get("data_dir")
  if data_dir is not None and not Path(data_dir).is_dir():
    raise app.UsageError(f"data folder {data_dir} does not exist (pass --data_dir)")

  import numpy as np
  from jaxad import data, metrics, models, results, viz
  from jaxad.progress import log
  from jaxad.train import loop
  from jaxad.train.checkpoint import CheckpointMismatchError, quiet_orbax_logs

  quiet_orbax_logs()

  try:
    method = models.get(info["method"])
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  try:
    state, info = loop.restore_state(method, workdir, step=FLAGS.step)
  except (FileNotFoundError, CheckpointMismatchError) as e:
    raise app.UsageError(str(e)) from None
  log("restored %s at step %d", workdir, int(np.asarray(loop.to_host(state.step))))

  kwargs = dict(info.get("data_kwargs", {}))
  test = data.load(info["dataset"], data_dir, "test", **kwargs)
  scores, maps = loop.predict_dataset(method, state, test.images, batch_size=FLAGS.batch_size,
                                      desc="evaluate")
  has_masks = bool(getattr(test, "has_masks", True))
  values = metrics.evaluate(test.labels, scores, test.masks if has_masks else None,
                            maps if has_masks else None)
  category = kwargs.get("category") or kwargs.get("product") or (
      f"class_{kwargs['normal_class']}" if "normal_class" in kwargs else info["dataset"])
  results_dir = Path(FLAGS.results_dir) if FLAGS.results_dir else workdir / "results"
  path = results.write_results(results_dir, info["method"], str(category), values)
  table = results.markdown_tables(results.collect_results(results_dir))
  (workdir / "results.md").write_text(table + "\n")
  print(table)
  log("results: %s", path)
  if FLAGS.num_panels:
    # Test images in a fixed, class-mixed order: anomalous first, then normal.
    order = np.argsort(-np.asarray(test.labels), kind="stable")[:FLAGS.num_panels]
    recon = None
    if hasattr(method, "reconstruct"):
      import jax
      recon = np.clip(np.asarray(jax.jit(method.reconstruct)(state, test.images[order])), 0, 1)
    viz.save_panels(workdir / "test_panels.png", test.images[order], maps[order],
                    reconstructions=recon, masks=test.masks[order] if has_masks else None,
                    max_rows=len(order), vmin=float(maps.min()), vmax=float(maps.max()))
  print(json.dumps({"results": str(path), **values}))


if __name__ == "__main__":
  app.run(main)
