"""One-class MNIST with RAMFAE (paper Table 5): each digit in turn is the normal class.

Protocol (RAMFAE Sect. 4.1, via :func:`jaxad.data.one_class_mnist`): 80% of the normal
digit's images train the model; the test set is the other 20% plus anomalies drawn from
the other digits (``--anomaly_ratio`` of the test set, default 0.5; the paper says
"10-50%"). Images are resized to ``--image_size`` (divisible by 8; 32 for the 28x28
digits) and kept grayscale; widths are capped (paper: 128).

For every digit the script trains with :func:`jaxad.train.loop.fit`, scores the test set
with ``ramfae.predict`` (max of the smoothed anomaly map, the method's score) and also
reports the mean squared reconstruction error per image (the paper notes MNIST "can be
well modeled by simply using MSE"), then prints a Markdown table beside Table 5 and
writes JSON.

Usage (CPU-feasible sizes; ``--data_dir`` holds the MNIST IDX files):
  python experiments/ramfae_mnist.py --data_dir=path/to/mnist --epochs=5 --learning_rate=1e-3 \
      --base_features=16 --max_features=64 --out=runs/ramfae_mnist/results.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

flags.DEFINE_string("data_dir", None, "MNIST IDX folder (*-images-idx3-ubyte[.gz] + labels)")
flags.mark_flag_as_required("data_dir")
flags.DEFINE_string("digits", "0,1,2,3,4,5,6,7,8,9", "normal classes to run")
flags.DEFINE_integer("image_size", 32, "resize target (divisible by 8)")
flags.DEFINE_integer("epochs", 5, "training epochs per digit")
flags.DEFINE_integer("batch_size", 16, "batch size (paper: 16)")
flags.DEFINE_integer("base_features", 64, "first width (paper: 64)")
flags.DEFINE_integer("max_features", 128, "width cap (paper's MNIST variant: 128)")
flags.DEFINE_float("learning_rate", 1e-4, "initial Adam learning rate (paper: 1e-4)")
flags.DEFINE_float("anomaly_ratio", 0.5, "share of anomalies in the test set")
flags.DEFINE_string("anomaly_map", "msgms", "msgms, ssim or gmsd")
flags.DEFINE_integer("smooth_kernel", 5, "Gaussian kernel length at this image size")
flags.DEFINE_float("smooth_sigma", 1.0, "Gaussian sigma")
flags.DEFINE_integer("seed", 0, "seed of the run (split, init, order, augmentation)")
flags.DEFINE_string("out", "runs/ramfae_mnist/results.json", "JSON output path")
FLAGS = flags.FLAGS

# RAMFAE Table 5 ("Ours"), ROC AUC per normal digit.
PAPER = {0: 0.998, 1: 0.999, 2: 0.958, 3: 0.971, 4: 0.970, 5: 0.955, 6: 0.995, 7: 0.981,
         8: 0.960, 9: 0.991}


def main(argv) -> None:
  del argv
  import jax
  import numpy as np

  from jaxad import data, metrics
  from jaxad.models import ramfae
  from jaxad.progress import log
  from jaxad.train import loop, run_files
  from jaxad.train.predict import predict_dataset

  digits = [int(d) for d in FLAGS.digits.split(",") if d.strip()]
  rows = []
  out = Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  for d in digits:
    train, test = data.one_class_mnist(FLAGS.data_dir, d, train_fraction=0.8,
                                       anomaly_ratio=FLAGS.anomaly_ratio, seed=FLAGS.seed,
                                       image_size=FLAGS.image_size, channels=1)
    steps = FLAGS.epochs * (len(train.images) // FLAGS.batch_size)
    # The cosine schedule spans each digit's run (its length is a static argument of the
    # step, so digits with different training-set sizes compile their own step).
    cfg = ramfae.Config(image_size=FLAGS.image_size, channels=1, base_features=FLAGS.base_features,
                        max_features=FLAGS.max_features, learning_rate=FLAGS.learning_rate,
                        min_learning_rate=min(1e-6, FLAGS.learning_rate),
                        anomaly_map=FLAGS.anomaly_map, smooth_kernel=FLAGS.smooth_kernel,
                        smooth_sigma=FLAGS.smooth_sigma)
    t0 = time.perf_counter()
    result = loop.fit(ramfae, cfg, train, seed=FLAGS.seed, epochs=FLAGS.epochs,
                      batch_size=FLAGS.batch_size, show_progress=False, log_every=50)
    train_s = time.perf_counter() - t0
    scores, _ = predict_dataset(ramfae, cfg, result.state, test.images, batch_size=64)
    recon_fn = jax.jit(ramfae.reconstruct, static_argnums=0)
    mse = []
    for s in range(0, len(test.images), 64):
      chunk = test.images[s:s + 64]
      recon = np.asarray(recon_fn(cfg, result.state, chunk))
      mse.append(np.mean((recon - chunk) ** 2, axis=(1, 2, 3)))
    mse = np.concatenate(mse)
    row = {"digit": d, "train_images": int(len(train.images)), "test_images": int(len(test.images)),
           "test_anomalies": int(np.sum(test.labels)), "steps": steps,
           "auroc_map_max": metrics.auroc(test.labels, scores),
           "auroc_mse": metrics.auroc(test.labels, mse), "paper": PAPER[d],
           "final_loss": result.history[-1]["loss"] if result.history else None,
           "train_seconds": train_s}
    log("digit %d: %s", d, row)
    rows.append(row)
    out.write_text(json.dumps({"flags": {k: FLAGS[k].value for k in (
        "image_size", "epochs", "batch_size", "base_features", "max_features", "learning_rate",
        "anomaly_ratio", "anomaly_map", "smooth_kernel", "smooth_sigma", "seed")},
        "config": run_files.config_to_dict(cfg), "rows": rows}, indent=2) + "\n")

  print(f"\nRAMFAE one-class MNIST, {FLAGS.image_size}px, widths {ramfae.widths(cfg)}, "
        f"{FLAGS.epochs} epochs, batch {FLAGS.batch_size}, map {FLAGS.anomaly_map}\n")
  print("| normal digit | train / test (anomalies) | image AUROC (map max) | image AUROC (MSE) | paper |")
  print("| --- | --- | --- | --- | --- |")
  for r in rows:
    print(f"| {r['digit']} | {r['train_images']} / {r['test_images']} ({r['test_anomalies']}) | "
          f"{r['auroc_map_max']:.3f} | {r['auroc_mse']:.3f} | {r['paper']:.3f} |")
  if rows:
    mean = lambda k: float(np.mean([r[k] for r in rows]))
    print(f"| mean | | {mean('auroc_map_max'):.3f} | {mean('auroc_mse'):.3f} | {mean('paper'):.3f} |")


if __name__ == "__main__":
  app.run(main)
