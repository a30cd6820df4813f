"""Images/second: jitted batch transforms of jaxad.augment vs per-image NumPy/PIL loops.

The references implement the same transforms the straightforward way (a Python
loop over images, NumPy slicing for the rectangles, PIL for rotation and colour
jitter as the CutPaste reference code does). Prints a Markdown table.

  flock /tmp/jaxad-bench.lock .venv/bin/python experiments/benchmark_augment.py
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image, ImageEnhance

from jaxad import augment as A
from jaxad.progress import progress

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 64, "Images per batch.")
flags.DEFINE_integer("size", 256, "Image side (pixels).")
flags.DEFINE_integer("repeats", 5, "Timed batches per transform (after one warm-up).")
flags.DEFINE_integer("seed", 0, "PRNG seed.")


# ------------------------------------------------------------------ NumPy / PIL references


def _rect_size(rng, height, width, area, aspect):
  a = rng.uniform(*area) * height * width
  asp = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
  h = int(np.clip(round(math.sqrt(a / asp)), 1, height))
  w = int(np.clip(round(math.sqrt(a * asp)), 1, width))
  return h, w


def _dst(rng, height, width, h, w, sy, sx):
  while True:  # any position except the source one
    dy, dx = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    if (dy, dx) != (sy, sx) or (h, w) == (height, width):
      return dy, dx


def np_copy_paste(rng, img, num_patches=30, area_ratio=0.01):
  height, width, _ = img.shape
  s = A.patch_side(height, width, area_ratio)
  out, mask = img.copy(), np.zeros((height, width), np.float32)
  for _ in range(num_patches):
    sy, sx = rng.integers(0, height - s + 1), rng.integers(0, width - s + 1)
    dy, dx = _dst(rng, height, width, s, s, sy, sx)
    out[dy:dy + s, dx:dx + s] = img[sy:sy + s, sx:sx + s]
    mask[dy:dy + s, dx:dx + s] = 1
  return out, mask


def np_cut_paste(rng, img, area=(0.02, 0.15), aspect=(0.3, 3.3), delete=False):
  height, width, _ = img.shape
  h, w = _rect_size(rng, height, width, area, aspect)
  sy, sx = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
  dy, dx = _dst(rng, height, width, h, w, sy, sx)
  out, mask = img.copy(), np.zeros((height, width), np.float32)
  if delete:
    out[sy:sy + h, sx:sx + w] = 0
    mask[sy:sy + h, sx:sx + w] = 1
  out[dy:dy + h, dx:dx + w] = img[sy:sy + h, sx:sx + w]
  mask[dy:dy + h, dx:dx + w] = 1
  return out, mask


def pil_cut_paste_rot_jitter(rng, img, area=(0.02, 0.15), aspect=(0.3, 3.3), rotation=45.0,
                             jitter=0.1):
  """CutPaste-reference style: PIL crop, colour jitter, rotate(expand), paste with a mask."""
  height, width, _ = img.shape
  h, w = _rect_size(rng, height, width, area, aspect)
  sy, sx = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
  pil = Image.fromarray((img * 255).round().astype(np.uint8))
  patch = pil.crop((sx, sy, sx + w, sy + h))
  f = rng.uniform(1 - jitter, 1 + jitter, size=3)
  patch = ImageEnhance.Contrast(patch).enhance(f[0])
  patch = ImageEnhance.Brightness(patch).enhance(f[1])
  patch = ImageEnhance.Color(patch).enhance(f[2])
  hsv = np.asarray(patch.convert("HSV")).copy()
  hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(rng.uniform(-jitter, jitter) * 255)) % 256
  patch = Image.fromarray(hsv, "HSV").convert("RGB")
  angle = rng.uniform(-rotation, rotation)
  patch = patch.rotate(angle, expand=True, resample=Image.NEAREST)
  alpha = Image.new("L", (w, h), 255).rotate(angle, expand=True, resample=Image.NEAREST)
  bw, bh = patch.size
  dy, dx = rng.integers(0, height - bh + 1), rng.integers(0, width - bw + 1)
  pil.paste(patch, (int(dx), int(dy)), alpha)
  mask = np.zeros((height, width), np.float32)
  mask[dy:dy + bh, dx:dx + bw] = np.asarray(alpha) > 0
  return np.asarray(pil, np.float32) / 255.0, mask


# ------------------------------------------------------------------ timing


def time_jax(fn, key, x, repeats):
  f = jax.jit(fn)
  jax.block_until_ready(f(key, x))  # compile + warm-up
  t0 = time.perf_counter()
  for i in range(repeats):
    jax.block_until_ready(f(jax.random.fold_in(key, i), x))
  return repeats * x.shape[0] / (time.perf_counter() - t0)


def time_ref(fn, images, repeats, seed):
  rng = np.random.default_rng(seed)
  for img in images[:2]:
    fn(rng, img)
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = [fn(rng, img) for img in images]
    np.stack([o[0] for o in out]), np.stack([o[1] for o in out])
  return repeats * len(images) / (time.perf_counter() - t0)


CASES = [
    ("copy_paste (N=30, 1%)", A.copy_paste, np_copy_paste),
    ("cut_paste", A.cut_paste, np_cut_paste),
    ("delete_paste", A.delete_paste, functools.partial(np_cut_paste, delete=True)),
    ("cut_paste rot45 + jitter 0.1", functools.partial(A.cut_paste, rotation=45.0, jitter=0.1),
     pil_cut_paste_rot_jitter),
]


def main(argv: list[str]) -> None:
  del argv
  key = jax.random.key(FLAGS.seed)
  x = jax.random.uniform(jax.random.fold_in(key, 1), (FLAGS.batch, FLAGS.size, FLAGS.size, 3))
  xn = np.asarray(x)
  rows = []
  for name, jfn, rfn in progress(CASES, desc="benchmark_augment", unit="case"):
    j = time_jax(jfn, key, x, FLAGS.repeats)
    r = time_ref(rfn, xn, FLAGS.repeats, FLAGS.seed)
    rows.append((name, j, r))
  print(f"\nbatch {FLAGS.batch} x {FLAGS.size}x{FLAGS.size}x3 float32, {FLAGS.repeats} timed batches, "
        f"jax {jax.__version__} backend {jax.default_backend()}\n")
  print("| transform | jaxad jit batch (img/s) | per-image NumPy/PIL (img/s) | ratio jax/ref |")
  print("| --- | ---: | ---: | ---: |")
  for name, j, r in rows:
    print(f"| {name} | {j:.0f} | {r:.0f} | {j / r:.2f}x |")


if __name__ == "__main__":
  app.run(main)
