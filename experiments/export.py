"""Exports a trained run as one portable file (``jax.export`` + variables + threshold).

Example::

  python experiments/export.py --workdir=runs/conv_ae_bottle --out=model.jaxad

Restores the run (latest checkpoint, or ``--step``), serializes its ``predict`` with
``jax.export`` (symbolic batch dimension; images -> scores, maps, normalised scores, decisions),
and writes the variables it reads, the calibration of ``<workdir>/calibration.json`` (threshold,
normalisation) and the preprocessing of the training images into ``--out``. Load it with
``jaxad.deploy.load(path)`` (JAX + NumPy only) or score files with
``experiments/predict.py --model=model.jaxad``. Prints one JSON line (path, size, method, step,
threshold).
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
flags.DEFINE_string("workdir", None, "Training workdir of experiments/train.py.")
flags.DEFINE_string("out", None, "Output file (e.g. model.jaxad).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
flags.DEFINE_list("platforms", None, "jax.export lowering platforms, e.g. cpu,cuda (default: "
                  "this JAX's backend).")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir or not FLAGS.out:
    raise app.UsageError("--workdir and --out are required")
  workdir, out = Path(FLAGS.workdir), Path(FLAGS.out)
  if not (workdir / "run.json").is_file():
    raise app.UsageError(f"{workdir / 'run.json'} not found: --workdir={workdir} is not a "
                         "training workdir of experiments/train.py")
  if out.is_dir():
    raise app.UsageError(f"--out={out} is a folder; give a file name such as model.jaxad")

  from jaxad.progress import log
  from jaxad.train.checkpoint import (CheckpointMismatchError, CheckpointUnreadableError,
                                      quiet_orbax_logs)
  from jaxad.train.export import export_run

  quiet_orbax_logs()
  try:
    path, meta = export_run(workdir, out, step=FLAGS.step,
                            platforms=tuple(FLAGS.platforms) if FLAGS.platforms else None)
  except (ValueError, FileNotFoundError, NotImplementedError, CheckpointMismatchError,
          CheckpointUnreadableError) as e:
    raise app.UsageError(str(e)) from None
  cal = meta["calibration"]
  if cal is None:
    log("%s has no calibration.json (trained with --val_fraction=0): the exported model returns "
        "scores and maps, decisions only with an explicit threshold", workdir)
  print(json.dumps({"path": str(path.resolve()), "bytes": path.stat().st_size,
                    "method": meta["method"], "step": meta["step"],
                    "threshold": None if cal is None else cal["threshold"],
                    "platforms": meta["platforms"]}))


if __name__ == "__main__":
  app.run(main)
