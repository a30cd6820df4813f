"""Draws a PNG grid of every jaxad.augment transform on real images.

Rows: images (two MVTec AD bottle train images when ``--data`` names a folder holding
``mvtec_ad/bottle``, plus scikit-image sample photos). Columns: original, copy_paste, copy_paste + jitter,
cut_paste, cut_paste + rotation + jitter, delete_paste, cutout (black), cutout
(random colour), random_erasing, confetti, color_jitter. Masks of the anomaly
transforms are outlined in red.

  python experiments/show_augmentations.py --data=path/to/data --out docs/figures/augmentations.png
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from jaxad import augment as A

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "docs/figures/augmentations.png", "Output PNG.")
flags.DEFINE_string("data", None, "Optional folder holding mvtec_ad/bottle (adds two bottle rows).")
flags.DEFINE_integer("size", 96, "Image side in pixels.")
flags.DEFINE_integer("seed", 0, "PRNG seed.")

COLUMNS = [
    ("original", None),
    ("copy_paste", A.copy_paste),
    ("copy_paste jitter", functools.partial(A.copy_paste, jitter=0.3)),
    ("cut_paste", A.cut_paste),
    ("cut_paste rot+jit", functools.partial(A.cut_paste, rotation=45.0, jitter=0.1)),
    ("delete_paste", A.delete_paste),
    ("cutout", A.cutout),
    ("cutout colour", functools.partial(A.cutout, fill="random")),
    ("random_erasing", A.random_erasing),
    ("confetti", A.confetti),
    ("color_jitter", None),
]


def load_images(size: int, data: Path | None) -> tuple[np.ndarray, list[str]]:
  """Returns float32 [B, size, size, 3] in [0, 1] and a name per image."""
  imgs, names = [], []
  bottle = data / "mvtec_ad" / "bottle" / "train" / "good" if data is not None else None
  if bottle is not None and not bottle.is_dir():
    raise FileNotFoundError(f"--data={data}: no MVTec AD bottle training images at {bottle}")
  for path in (sorted(bottle.glob("*.png"))[:2] if bottle is not None else []):
    imgs.append(Image.open(path).convert("RGB"))
    names.append(f"bottle/{path.name}")
  from skimage import data as skdata  # sample photos shipped with scikit-image
  for name in ("astronaut", "coffee"):
    imgs.append(Image.fromarray(getattr(skdata, name)()).convert("RGB"))
    names.append(f"skimage.{name}")
  out = []
  for im in imgs:
    s = min(im.size)
    left, top = (im.size[0] - s) // 2, (im.size[1] - s) // 2
    im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.BILINEAR)
    out.append(np.asarray(im, np.float32) / 255.0)
  return np.stack(out), names


def outline(tile: Image.Image, mask: np.ndarray) -> Image.Image:
  """Draws the boundary of ``mask`` in red on ``tile``."""
  m = mask > 0
  edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
  arr = np.asarray(tile).copy()
  arr[edge] = (255, 0, 0)
  return Image.fromarray(arr)


def main(argv: list[str]) -> None:
  del argv
  images, names = load_images(FLAGS.size, Path(FLAGS.data) if FLAGS.data else None)
  x = jnp.asarray(images)
  key = jax.random.key(FLAGS.seed)
  size, pad, label_h = FLAGS.size, 4, 14
  rows, cols = len(names), len(COLUMNS)
  # two tiles per transform cell: augmented image and, beneath, the same with the mask outlined
  canvas = Image.new("RGB", (cols * (size + pad) + pad, label_h + rows * 2 * (size + pad) + pad),
                     "white")
  draw = ImageDraw.Draw(canvas)
  for c, (title, fn) in enumerate(COLUMNS):
    k = jax.random.fold_in(key, c)
    if title == "original":
      aug, mask = x, jnp.zeros(x.shape[:3])
    elif title == "color_jitter":
      aug = A.color_jitter(k, x, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
      mask = jnp.zeros(x.shape[:3])
    else:
      aug, mask = jax.jit(fn)(k, x)
    aug = np.asarray(aug)
    mask = np.asarray(mask)
    x0 = pad + c * (size + pad)
    draw.text((x0 + 2, 1), title, fill="black")
    for r in range(rows):
      tile = Image.fromarray((aug[r] * 255).round().astype(np.uint8))
      y0 = label_h + r * 2 * (size + pad)
      canvas.paste(tile, (x0, y0))
      canvas.paste(outline(tile, mask[r]), (x0, y0 + size + pad))
  out = Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  # a 256-colour palette keeps the grid small (< 500 KB) at little visible cost
  canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
  print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB, {rows} images x {cols} columns: "
        f"{', '.join(names)})")


if __name__ == "__main__":
  app.run(main)
