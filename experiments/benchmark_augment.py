"""Images/second: jitted batch transforms of jaxad.augment vs per-image NumPy/PIL loops.

Three modes (``--mode``), each comparing like with like:

* ``new`` (default; the issue's target): both sides return a new augmented batch
  (float32 [B, H, W, C]) and a float32 mask [B, H, W] and leave the input
  untouched. jax: ``jax.jit(fn)``. NumPy: the output batch is allocated once
  (``images.copy()``, ``np.zeros``), then a Python loop over the images draws the
  geometry with ``np.random.Generator`` (all patches of an image in one call) and
  writes only the rectangles with slice assignments.
* ``donate``: the caller gives up its input batch (as a data pipeline can). jax:
  ``jax.jit(fn, donate_argnums=1)`` with ``in_place=True`` for the copy-paste
  transforms, so XLA writes the augmented batch into the input's buffer; NumPy:
  the same loop writing into the given batch in place (no
  copy; sources are copied out before anything is written). Both sides get a fresh
  copy of the batch before every call, outside the timed region; the mask is a
  new array on both sides.
* ``fused``: augmentation inside a jitted step, as in a ``train_step``: jax jits
  ``fn`` followed by ``mean((augmented - images)^2)`` and ``mean(mask)`` (two
  scalars, no batch-sized output); NumPy runs the ``new`` reference and then the
  same two reductions (``d = out; d -= images; vdot(d, d) / d.size``, ``mask.mean()``).

The rotated and colour-jittered CutPaste reference converts only the patch to
uint8 PIL (ImageEnhance contrast/brightness/colour, HSV hue shift,
``rotate(expand=True)`` nearest neighbour), as the CutPaste reference code does,
and pastes it through its alpha.

The input batch is a jax device array (``jax.random.uniform``; ``np.asarray`` of it
for NumPy), so no host -> device transfer is timed. The first row ("copy floor")
is the cost of producing the two outputs at all: jax ``jnp.minimum(x, 1)`` plus a
zero mask vs NumPy ``images.copy()`` (``new``/``fused``; nothing in ``donate``) plus
``np.zeros``. Prints a Markdown table.

  python experiments/benchmark_augment.py \
      --batch 64 --size 256 --repeats 3 [--mode new|donate|fused]
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
flags.DEFINE_list("cases", [], "Run only these rows (names as in the table); empty = all.")
flags.DEFINE_enum("mode", "new", ["new", "donate", "fused"],
                  "new: both sides return a new batch; donate: jax donates the input batch, "
                  "NumPy writes in place; fused: augmentation + MSE/mask-mean reductions in one "
                  "jitted step vs NumPy augmentation + the same reductions.")


# ------------------------------------------------------------------ NumPy / PIL references
# Each reference writes image b into out[b] (a copy of the input, or the input itself in
# --mode donate) and mask[b] (zeros); source pixels are copied out before any write.


def _rect_size(rng, height, width, area, aspect):
  a = rng.uniform(*area) * height * width
  asp = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
  h = int(np.clip(round(math.sqrt(a / asp)), 1, height))
  w = int(np.clip(round(math.sqrt(a * asp)), 1, width))
  return h, w


def _moved(rng, height, width, h, w, sy, sx):
  """Destinations [N] for sources [N] (same size h x w), never at the source position."""
  dy = rng.integers(0, height - h + 1, size=np.shape(sy))
  dx = rng.integers(0, width - w + 1, size=np.shape(sx))
  same = (dy == sy) & (dx == sx)
  while same.any() and (h, w) != (height, width):  # rare: redraw the few that did not move
    dy[same] = rng.integers(0, height - h + 1, size=same.sum())
    dx[same] = rng.integers(0, width - w + 1, size=same.sum())
    same = (dy == sy) & (dx == sx)
  return dy, dx


def np_copy_paste(rng, img, out, mask, num_patches=30, area_ratio=0.01):
  height, width, _ = img.shape
  s = A.patch_side(height, width, area_ratio)
  sy = rng.integers(0, height - s + 1, size=num_patches)
  sx = rng.integers(0, width - s + 1, size=num_patches)
  dy, dx = _moved(rng, height, width, s, s, sy, sx)
  patches = [img[a:a + s, b:b + s].copy() for a, b in zip(sy.tolist(), sx.tolist())]
  for patch, c, d in zip(patches, dy.tolist(), dx.tolist()):
    out[c:c + s, d:d + s] = patch
    mask[c:c + s, d:d + s] = 1


def np_cut_paste(rng, img, out, mask, area=(0.02, 0.15), aspect=(0.3, 3.3), delete=False):
  height, width, _ = img.shape
  h, w = _rect_size(rng, height, width, area, aspect)
  sy, sx = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
  dy, dx = (int(v) for v in _moved(rng, height, width, h, w, sy, sx))
  patch = img[sy:sy + h, sx:sx + w].copy()
  if delete:
    out[sy:sy + h, sx:sx + w] = 0
    mask[sy:sy + h, sx:sx + w] = 1
  out[dy:dy + h, dx:dx + w] = patch
  mask[dy:dy + h, dx:dx + w] = 1


def pil_cut_paste_rot_jitter(rng, img, out, mask, area=(0.02, 0.15), aspect=(0.3, 3.3),
                             rotation=45.0, jitter=0.1):
  """CutPaste-reference style on the patch only: PIL jitter, rotate(expand), paste via alpha."""
  height, width, _ = img.shape
  h, w = _rect_size(rng, height, width, area, aspect)
  sy, sx = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
  patch = Image.fromarray((img[sy:sy + h, sx:sx + w] * 255).round().astype(np.uint8))
  f = rng.uniform(1 - jitter, 1 + jitter, size=3)
  patch = ImageEnhance.Contrast(patch).enhance(f[0])
  patch = ImageEnhance.Brightness(patch).enhance(f[1])
  patch = ImageEnhance.Color(patch).enhance(f[2])
  hsv = np.array(patch.convert("HSV"))
  hsv[..., 0] += np.uint8(int(rng.uniform(-jitter, jitter) * 255) % 256)  # wraps mod 256
  patch = Image.fromarray(hsv, "HSV").convert("RGB")
  angle = rng.uniform(-rotation, rotation)
  patch = patch.rotate(angle, expand=True, resample=Image.NEAREST)
  alpha = np.asarray(Image.new("L", (w, h), 255).rotate(angle, expand=True,
                                                         resample=Image.NEAREST)) > 0
  bh, bw = alpha.shape
  dy, dx = rng.integers(0, height - bh + 1), rng.integers(0, width - bw + 1)
  win = out[dy:dy + bh, dx:dx + bw]
  win[alpha] = np.asarray(patch, np.float32)[alpha] / 255.0
  mask[dy:dy + bh, dx:dx + bw] = alpha


def np_cutout(rng, img, out, mask, num_patches=30, area_ratio=0.01):
  height, width, _ = img.shape
  s = A.patch_side(height, width, area_ratio)
  ys = rng.integers(0, height - s + 1, size=num_patches).tolist()
  xs = rng.integers(0, width - s + 1, size=num_patches).tolist()
  for y, x in zip(ys, xs):
    out[y:y + s, x:x + s] = 0
    mask[y:y + s, x:x + s] = 1


def np_random_erasing(rng, img, out, mask, area=(0.02, 0.4), aspect=(0.3, 3.3)):
  height, width, channels = img.shape
  h, w = _rect_size(rng, height, width, area, aspect)
  y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
  out[y:y + h, x:x + w] = rng.random((h, w, channels), np.float32)
  mask[y:y + h, x:x + w] = 1


def np_confetti(rng, img, out, mask, num_patches=30, size=(0.02, 0.06)):
  height, width, channels = img.shape
  hs = np.clip(np.round(rng.uniform(*size, num_patches) * height), 1, height).astype(int)
  ws = np.clip(np.round(rng.uniform(*size, num_patches) * width), 1, width).astype(int)
  ys = rng.integers(0, height - hs + 1)
  xs = rng.integers(0, width - ws + 1)
  colours = rng.random((num_patches, channels), np.float32)
  for y, x, h, w, c in zip(ys.tolist(), xs.tolist(), hs.tolist(), ws.tolist(), colours):
    out[y:y + h, x:x + w] = c
    mask[y:y + h, x:x + w] = 1


def np_floor(rng, img, out, mask):
  del rng, img, out, mask  # the batch copy and the zero mask are the whole work


# ------------------------------------------------------------------ timing


def jax_floor(key, x):
  del key
  return jnp.minimum(x, 1.0), jnp.zeros(x.shape[:3], jnp.float32)


def _fused(fn):
  """fn followed by the step's reductions: (mean squared change, mean mask)."""
  def step(key, x):
    aug, mask = fn(key, x)
    return jnp.mean(jnp.square(aug - x)), jnp.mean(mask)
  return step


def time_jax(fn, key, x, repeats, mode):
  """Images/second over ``repeats`` batches (after one warm-up); donate: fresh copy per call."""
  if mode == "donate":
    f = jax.jit(fn, donate_argnums=1)
  else:
    f = jax.jit(_fused(fn) if mode == "fused" else fn)
  def arg():
    return jax.block_until_ready(jnp.copy(x)) if mode == "donate" else x
  jax.block_until_ready(f(key, arg()))  # compile + warm-up
  total = 0.0
  for i in range(repeats):
    xi = arg()
    t0 = time.perf_counter()
    out = jax.block_until_ready(f(jax.random.fold_in(key, i), xi))
    total += time.perf_counter() - t0
    del out, xi
  return repeats * x.shape[0] / total


def run_ref(fn, images, rng, mode):
  out = images if mode == "donate" else images.copy()
  mask = np.zeros(images.shape[:3], np.float32)
  for b in range(images.shape[0]):
    fn(rng, images[b], out[b], mask[b])
  if mode == "fused":
    d = out  # the augmented batch is not needed after the reduction
    d -= images
    flat = d.reshape(-1)
    return np.float32(np.vdot(flat, flat) / flat.size), mask.mean()
  return out, mask


def time_ref(fn, images, repeats, seed, mode):
  rng = np.random.default_rng(seed)
  run_ref(fn, images[:2].copy(), rng, mode)  # warm-up
  total = 0.0
  for _ in range(repeats):
    xi = images.copy() if mode == "donate" else images
    t0 = time.perf_counter()
    run_ref(fn, xi, rng, mode)
    total += time.perf_counter() - t0
    del xi
  return repeats * len(images) / total


IN_PLACE = functools.partial(functools.partial, in_place=True)
# (row name, jax transform, jax transform for --mode donate, NumPy/PIL reference)
CASES = [
    ("copy floor", jax_floor, jax_floor, np_floor),
    ("copy_paste (N=30, 1%)", A.copy_paste, IN_PLACE(A.copy_paste), np_copy_paste),
    ("cut_paste", A.cut_paste, IN_PLACE(A.cut_paste), np_cut_paste),
    ("delete_paste", A.delete_paste, IN_PLACE(A.delete_paste),
     functools.partial(np_cut_paste, delete=True)),
    ("cut_paste rot45 + jitter 0.1", functools.partial(A.cut_paste, rotation=45.0, jitter=0.1),
     functools.partial(A.cut_paste, rotation=45.0, jitter=0.1), pil_cut_paste_rot_jitter),
    ("cutout (N=30, black)", A.cutout, A.cutout, np_cutout),
    ("random_erasing", A.random_erasing, A.random_erasing, np_random_erasing),
    ("confetti (N=30)", A.confetti, A.confetti, np_confetti),
]


def main(argv: list[str]) -> None:
  del argv
  key = jax.random.key(FLAGS.seed)
  x = jax.random.uniform(jax.random.fold_in(key, 1), (FLAGS.batch, FLAGS.size, FLAGS.size, 3))
  xn = np.asarray(x)
  cases = [c for c in CASES if not FLAGS.cases or c[0].split(" (")[0] in FLAGS.cases]
  rows = []
  for name, jfn, jfn_donate, rfn in progress(cases, desc="benchmark_augment", unit="case"):
    j = time_jax(jfn_donate if FLAGS.mode == "donate" else jfn, key, x, FLAGS.repeats, FLAGS.mode)
    r = time_ref(rfn, xn, FLAGS.repeats, FLAGS.seed, FLAGS.mode)
    rows.append((name, j, r))
  labels = {"new": ("jaxad jit batch", "per-image NumPy/PIL"),
            "donate": ("jaxad jit, input donated", "per-image NumPy/PIL in place"),
            "fused": ("jaxad jit augment+reduce", "NumPy/PIL augment + NumPy reduce")}
  jl, rl = labels[FLAGS.mode]
  print(f"\nmode {FLAGS.mode}: batch {FLAGS.batch} x {FLAGS.size}x{FLAGS.size}x3 float32, "
        f"{FLAGS.repeats} timed batches, jax {jax.__version__} backend {jax.default_backend()}\n")
  print(f"| transform | {jl} (img/s) | {rl} (img/s) | ratio jax/ref |")
  print("| --- | ---: | ---: | ---: |")
  for name, j, r in rows:
    print(f"| {name} | {j:.0f} | {r:.0f} | {j / r:.2f}x |")


if __name__ == "__main__":
  app.run(main)
