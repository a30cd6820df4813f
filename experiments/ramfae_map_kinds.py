"""RAMFAE anomaly-map kinds on a trained run, on both pixel-AUROC protocols.

Restores a workdir of ``experiments/train.py`` (read only: nothing is written there), scores its
test split with each anomaly map of the paper's Sect. 4.3 (``msgms``, ``ssim``, ``gmsd``; same
smoothing as the run's config) and reports, per kind, ``jaxad.metrics.evaluate``'s image AUROC,
AUPRO@0.3, the pooled pixel AUROC (all pixels of all test images: MVTec AD's protocol) and the
mean of per-image pixel AUROCs (RAMFAE's protocol: "A ROC AUC score is calculated for each image
by pixel, and an average score is calculated"; only images with defect and normal pixels count,
their number is printed). Writes ``<out>/results.json`` and ``<out>/table.md``.

Usage::

  .venv/bin/python experiments/ramfae_map_kinds.py --workdir=runs/ramfae_bottle64 \\
      --out=runs/ramfae_map_kinds
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import app, flags

import jax
import numpy as np

from jaxad import data, metrics
from jaxad.models import ramfae
from jaxad.train import loop

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of a RAMFAE run of experiments/train.py.",
                    required=True)
flags.DEFINE_string("data_dir", None, "Override the data folder stored in the run.")
flags.DEFINE_list("kinds", list(ramfae.MAP_KINDS), "Anomaly-map kinds to score.")
flags.DEFINE_integer("batch_size", 16, "Images per prediction call.")
flags.DEFINE_string("out", "runs/ramfae_map_kinds", "Output folder (results.json, table.md).")

# The paper's bottle pixel AUROC per map (Table 3) and of the full model (Table 4).
PAPER_TABLE3_BOTTLE = {"msgms": 94.3, "ssim": 95.2, "gmsd": 92.3}
PAPER_TABLE4_BOTTLE = 95.2


def score(config: ramfae.Config, state, images: np.ndarray, kind: str,
          batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """``(scores [N], maps [N, H, W])`` of ``images`` with anomaly map ``kind``."""
  fn = jax.jit(ramfae.predict, static_argnums=0, static_argnames=("anomaly_map",))
  out_s, out_m = [], []
  for i in range(0, len(images), batch_size):
    s, m = fn(config, state, images[i:i + batch_size], anomaly_map=kind)
    out_s.append(np.asarray(s))
    out_m.append(np.asarray(m))
  return np.concatenate(out_s), np.concatenate(out_m)


def main(argv: list[str]) -> None:
  del argv
  restored = loop.restore(FLAGS.workdir)
  if restored.info["method"] != "ramfae":
    raise app.UsageError(f"--workdir: a RAMFAE run expected, got {restored.info['method']!r}")
  info = restored.info
  data_dir = FLAGS.data_dir or info["data_dir"]
  test = data.load(info["dataset"], data_dir, "test", **dict(info.get("data_kwargs", {})))
  out = Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  records = []
  for kind in FLAGS.kinds:
    scores, maps = score(restored.config, restored.state, test.images, kind, FLAGS.batch_size)
    res = metrics.evaluate(test.labels, scores, test.masks, maps)
    records.append({"kind": kind, **res})
    print(json.dumps(records[-1]))
  lines = ["| map | pixel AUROC, pooled | pixel AUROC, per-image mean (images) | AUPRO@0.3 | "
           "image AUROC | paper Table 3 (bottle pixel AUROC) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
  for r in records:
    lines.append(f"| {r['kind']} | {100 * r['pixel_auroc']:.1f} | "
                 f"{100 * r['pixel_auroc_per_image']:.1f} ({r['pixel_auroc_images']}) | "
                 f"{100 * r['aupro']:.1f} | {100 * r['image_auroc']:.1f} | "
                 f"{PAPER_TABLE3_BOTTLE.get(r['kind'], float('nan')):.1f} |")
  table = "\n".join(lines)
  (out / "results.json").write_text(json.dumps(records, indent=1) + "\n")
  (out / "table.md").write_text(table + "\n")
  print(f"{FLAGS.workdir} (step {int(jax.device_get(restored.state.step))}); paper Table 4 "
        f"(full model, bottle pixel AUROC): {PAPER_TABLE4_BOTTLE}")
  print(table)


if __name__ == "__main__":
  app.run(main)
