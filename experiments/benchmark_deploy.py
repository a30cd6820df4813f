"""Exported-model size, load + first-call time and throughput per method (Markdown table).

Example::

  python experiments/benchmark_deploy.py --methods=conv_ae,ramfae,smcc --out=path/to/bench_deploy

For each method a state is built without data (``init``; SMCC: ``prepare`` on random images, so
the memory bank has its trained size for ``--bank_images``), exported with
:func:`jaxad.train.export.export_predict` to ``<out>/<method>.jaxad``, then a fresh Python process
times ``jaxad.deploy.load`` + the first call on ``--batch_size`` images (compilation included)
and the images/s of further calls. Weights are random: sizes and times equal a trained model's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", ["conv_ae", "ramfae", "smcc"], "Methods to export.")
flags.DEFINE_string("out", None, "Folder for the exported files.")
flags.DEFINE_integer("batch_size", 16, "Images per call.")
flags.DEFINE_integer("calls", 3, "Timed calls after the first one.")
flags.DEFINE_integer("bank_images", 16, "SMCC: training images in the memory bank.")

CONFIGS = {  # the paper's / README's settings, random weights
    "conv_ae": dict(image_size=128, features=(32, 64, 128, 256)),
    "ramfae": dict(image_size=256),
    "smcc": dict(image_size=224, backbone="wide_resnet50_2", pretrained=False),
}

_TIMER = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from jaxad import deploy
model = deploy.load(sys.argv[1])
t1 = time.perf_counter()
x = np.random.default_rng(0).random((int(sys.argv[2]),) + model.image_shape, dtype=np.float32)
model(x)  # numpy outputs: the call has finished
t2 = time.perf_counter()
calls = int(sys.argv[3])
for _ in range(calls):
  model(x)
t3 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "first_call_s": t2 - t1, "img_s": calls * len(x) / (t3 - t2)}))
"""


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.out:
    raise app.UsageError("--out is required")
  import jax
  import numpy as np
  from jaxad import deploy, models
  from jaxad.models.protocol import Run
  from jaxad.train import loop
  from jaxad.train.export import export_predict

  out = Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  rows = []
  for name in FLAGS.methods:
    method = models.get(name)
    cfg = method.Config(**CONFIGS.get(name, {}))
    s, c = cfg.image_size, cfg.channels
    x = np.random.default_rng(0).random((FLAGS.bank_images, s, s, c), dtype=np.float32)
    if hasattr(method, "prepare"):
      state = loop.fit(name, cfg, x, batch_size=FLAGS.bank_images, epochs=0,
                       show_progress=False).state
    else:
      batch = {"image": x[:1], "mask": np.zeros((1, s, s), np.float32),
               "label": np.zeros(1, np.int32), "valid": np.ones(1, bool)}
      state = method.init(cfg, Run(), jax.random.key(0), batch)
    t0 = time.perf_counter()
    serialized, variables, _ = export_predict(name, cfg, state, (s, s, c))
    export_s = time.perf_counter() - t0
    path = deploy.write(out / f"{name}.jaxad", serialized, variables,
                        {"method": name, "image_shape": [s, s, c], "calibration": None,
                         "preprocessing": {"image_size": [s, s], "crop_size": None, "channels": c}})
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", _TIMER, str(path), str(FLAGS.batch_size),
                           str(FLAGS.calls)], capture_output=True, text=True, env=env, check=True)
    timing = json.loads(proc.stdout.strip().splitlines()[-1])
    rows.append((name, f"{s}x{s}x{c}", path.stat().st_size / 2**20, export_s, timing))
  print(f"| method | input | file MiB | export s | load s | first call s (batch {FLAGS.batch_size}) "
        "| images/s |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for name, shape, mib, export_s, t in rows:
    print(f"| {name} | {shape} | {mib:.2f} | {export_s:.1f} | {t['load_s']:.1f} | "
          f"{t['first_call_s']:.1f} | {t['img_s']:.1f} |")


if __name__ == "__main__":
  app.run(main)
