"""Scores new images with a trained detector: scores.csv, decisions and overlay PNGs.

Example::

  python experiments/predict.py --workdir=runs/conv_ae_bottle \
      --images='path/to/new_images/*.png' --out=path/to/predictions
  python experiments/predict.py --model=model.jaxad --images=path/to/new_images --out=path/to/predictions

``--workdir`` is a run of ``experiments/train.py`` (restored with its method); ``--model`` (or a
file given as ``--workdir``) is an exported model of ``experiments/export.py`` (JAX + NumPy only).
``--images`` is one file, a folder (its images, recursively) or a glob pattern. Every image is
read like the training images (any size, grayscale or RGB; resized and cropped to the training
size, converted to the training channels) and scored. Writes below ``--out``:

* ``scores.csv``: ``file, score, normalized_score, decision`` (raw score; score normalised with
  the run's calibration, 0.5 = threshold; ``anomalous`` when ``score >= threshold``). Runs trained
  with ``--val_fraction=0`` have no threshold: the last two columns stay empty unless
  ``--threshold`` is given.
* ``overlays/<name>.png``: input | anomaly map (one colour scale: the normal validation maps'
  range), captioned with the score and the decision; ``--overlays=anomalous`` writes only the
  anomalous ones, ``--overlays=none`` none.
* ``unreadable.csv``: files that could not be read (missing, truncated, not an image), listed at
  the end as well; the other files are scored.

Prints one JSON line: counts and the output folder.
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
flags.DEFINE_string("workdir", None, "Training workdir of experiments/train.py (or an exported "
                    "model file).")
flags.DEFINE_string("model", None, "Exported model of experiments/export.py (instead of --workdir).")
flags.DEFINE_string("images", None, "Image file, folder (recursive) or glob pattern (quote it).")
flags.DEFINE_string("out", None, "Output folder: scores.csv, overlays/, unreadable.csv.")
flags.DEFINE_integer("batch_size", 16, "Images per prediction call.")
flags.DEFINE_enum("overlays", "all", ["all", "anomalous", "none"], "Which overlay PNGs to write.")
flags.DEFINE_float("threshold", None, "Decision threshold on raw scores (default: the run's "
                   "calibrated threshold).")
flags.DEFINE_integer("step", None, "Checkpoint step of --workdir (default: latest).")
flags.DEFINE_enum("host_buffers", "auto", ["auto", "keep", "default"], "XLA:CPU prediction "
                  "buffers kept mapped between batches (jaxad.train.host_memory; auto = on CPU).")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if bool(FLAGS.workdir) == bool(FLAGS.model):
    raise app.UsageError("give exactly one of --workdir=RUN and --model=FILE.jaxad")
  if not FLAGS.images or not FLAGS.out:
    raise app.UsageError("--images and --out are required")
  if FLAGS.batch_size < 1:
    raise app.UsageError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
  source = Path(FLAGS.workdir or FLAGS.model)
  if not source.exists():
    raise app.UsageError(f"{source} does not exist")
  if FLAGS.model and not source.is_file():
    raise app.UsageError(f"--model={source} is not a file (a workdir goes in --workdir)")

  from jaxad.progress import log
  from jaxad.train import host_memory
  log(host_memory.apply_host_buffers(FLAGS.host_buffers))
  from jaxad import inference
  from jaxad.train.checkpoint import (CheckpointMismatchError, CheckpointUnreadableError,
                                      quiet_orbax_logs)

  quiet_orbax_logs()
  try:
    files = inference.expand_inputs(FLAGS.images)
  except FileNotFoundError as e:
    raise app.UsageError(f"--images: {e}") from None
  try:
    scorer = inference.open_scorer(source, step=FLAGS.step, batch_size=FLAGS.batch_size)
  except (ValueError, FileNotFoundError, RuntimeError, NotImplementedError,
          CheckpointMismatchError, CheckpointUnreadableError) as e:
    raise app.UsageError(str(e)) from None
  cal = scorer.calibration
  if cal is None and FLAGS.threshold is None:
    log("%s has no calibration (trained with --val_fraction=0): scores and maps only; pass "
        "--threshold for decisions", source)
  else:
    thr = FLAGS.threshold if FLAGS.threshold is not None else cal.threshold
    log("threshold %.6g (%s)", thr, "--threshold" if FLAGS.threshold is not None else
        f"calibrated: {cal.rule}" + (f" q={cal.quantile}" if cal.rule == "quantile" else ""))
  log("%d files, image size %s, %s", len(files), "x".join(map(str, scorer.image_shape)), source)
  result = inference.score_files(scorer, files, FLAGS.out, overlays=FLAGS.overlays,
                                 threshold=FLAGS.threshold)
  anomalous = sum(r["decision"] == "anomalous" for r in result.rows)
  log("scores: %s", result.csv_path)
  print(json.dumps({"out": str(Path(FLAGS.out).resolve()), "files": len(files),
                    "scored": len(result.rows), "anomalous": anomalous,
                    "unreadable": len(result.failed), "overlays": len(result.overlays)}))


if __name__ == "__main__":
  app.run(main)
