"""Score image files with a trained detector: a workdir or an exported model, CSV and overlays.

The library side of ``experiments/predict.py``. A *scorer* turns float32 images at the training
size into scores, maps and (when the run was calibrated, :mod:`jaxad.train.calibrate`)
normalised scores and decisions:

* :class:`WorkdirScorer`: restores a training workdir (Flax, Orbax) and runs
  :func:`jaxad.train.predict.predict_dataset`;
* :class:`ExportedScorer`: a file of ``experiments/export.py`` through :func:`jaxad.deploy.load`
  (JAX + NumPy only).

:func:`score_files` reads the files like training did (``jaxad.data.image_io.decode_image``:
any size, grayscale or RGB, bilinear antialiased resize, optional centre crop), scores them in
batches, writes ``scores.csv`` (``file, score, normalized_score, decision``) and one overlay PNG
per image (input | anomaly map, captioned with the score and the decision, one colour scale:
the normal validation maps' range), and reports unreadable files without stopping.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxad import deploy
from jaxad.data import image_io
from jaxad.progress import Progress, log
from jaxad.train import calibrate as calib_lib

__all__ = ["SCORES_FILE", "ERRORS_FILE", "OVERLAY_DIR", "OVERLAYS", "WorkdirScorer",
           "ExportedScorer", "open_scorer", "expand_inputs", "FileScores", "score_files"]

SCORES_FILE = "scores.csv"
ERRORS_FILE = "unreadable.csv"
OVERLAY_DIR = "overlays"
OVERLAYS = ("all", "anomalous", "none")


class WorkdirScorer:
  """Scores with a restored training workdir (``predict_dataset`` + ``calibration.json``)."""

  def __init__(self, workdir: str | os.PathLike, *, step: int | None = None,
               batch_size: int = 16) -> None:
    from jaxad.train import loop  # Flax, Orbax: only for workdirs
    self.source = Path(workdir)
    restored = loop.restore(self.source, step=step)
    self.method, self.config, self.state = restored.method, restored.config, restored.state
    if hasattr(self.method, "normalize"):
      raise NotImplementedError(f"{restored.info['method']} normalises scores over a whole test set "
                                "(`normalize`); score a labelled test set with experiments/evaluate.py")
    self.name = restored.info["method"]
    self.image_shape = tuple(int(v) for v in restored.info["image_shape"])
    self.preprocessing = deploy.preprocessing_from_run_info(restored.info)
    self.calibration = calib_lib.read_calibration(self.source)
    self.batch_size = batch_size

  def score(self, images: np.ndarray, threshold: float | None = None) -> dict[str, np.ndarray]:
    """``scores``, ``maps`` and, with a threshold, ``normalized`` and ``decisions`` (numpy)."""
    from jaxad.train.predict import predict_dataset
    scores, maps = predict_dataset(self.method, self.config, self.state, images,
                                   batch_size=self.batch_size, desc="score")
    out = {"scores": np.asarray(scores, np.float32), "maps": np.asarray(maps, np.float32)}
    cal = self.calibration
    if cal is not None or threshold is not None:
      t = cal.threshold if threshold is None else float(threshold)
      if cal is None:  # a threshold without a calibration: unit scale
        cal = calib_lib.Calibration(threshold=t, low=t - 0.5, high=t + 0.5)
      cal = dataclasses.replace(cal, threshold=t)
      out["normalized"] = calib_lib.normalize_scores(cal, out["scores"])
      out["decisions"] = calib_lib.decide(cal, out["scores"])
    return out


class ExportedScorer:
  """Scores with an exported model (:func:`jaxad.deploy.load`)."""

  def __init__(self, path: str | os.PathLike, *, batch_size: int = 16) -> None:
    self.source = Path(path)
    self.model = deploy.load(self.source)
    self.name = self.model.metadata["method"]
    self.image_shape = self.model.image_shape
    self.preprocessing = self.model.preprocessing
    cal = self.model.calibration
    self.calibration = None if cal is None else calib_lib.Calibration.from_dict(cal)
    self.batch_size = batch_size

  def score(self, images: np.ndarray, threshold: float | None = None) -> dict[str, np.ndarray]:
    """As :meth:`WorkdirScorer.score` (batches padded to ``batch_size``: one compilation)."""
    return self.model.predict(images, batch_size=self.batch_size, threshold=threshold, pad=True)


def open_scorer(source: str | os.PathLike, *, step: int | None = None,
                batch_size: int = 16) -> WorkdirScorer | ExportedScorer:
  """An :class:`ExportedScorer` for an exported file, else a :class:`WorkdirScorer`."""
  if deploy.is_exported(source):
    if step is not None:
      raise ValueError(f"step={step} applies to workdirs, but {source} is an exported model")
    return ExportedScorer(source, batch_size=batch_size)
  if Path(source).is_file():
    raise ValueError(f"{source} is a file but not an exported jaxad model (expected the output of "
                     "experiments/export.py, or a training workdir)")
  return WorkdirScorer(source, step=step, batch_size=batch_size)


def expand_inputs(spec: str | os.PathLike) -> list[Path]:
  """The files of ``spec``: one file, a folder (its image files, recursively) or a glob pattern.

  Returns:
    Sorted paths (a glob keeps every matched file, so non-images are reported as unreadable).
  Raises:
    FileNotFoundError: nothing matches.
  """
  text = str(spec)
  path = Path(text)
  if path.is_dir():
    files = image_io.list_images(path, recursive=True)
    if not files:
      raise FileNotFoundError(f"no image files ({', '.join(image_io.IMAGE_EXTENSIONS)}) in {path}")
    return files
  if path.is_file():
    return [path]
  files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
  if not files:
    raise FileNotFoundError(f"no files match {text!r} (a file, a folder or a glob pattern such as "
                            "'path/to/images/*.png')")
  return files


@dataclasses.dataclass
class FileScores:
  """What :func:`score_files` wrote.

  Attributes:
    rows: one dict per scored file (``file``, ``score``, ``normalized_score``, ``decision``).
    failed: ``{file: error message}`` of files that could not be read.
    csv_path: the ``scores.csv`` written.
    overlays: the overlay PNGs written.
  """
  rows: list[dict[str, Any]]
  failed: dict[str, str]
  csv_path: Path
  overlays: list[Path]


def _display_names(files: Sequence[Path]) -> list[str]:
  """Paths relative to the files' common folder (unique, readable)."""
  parents = [str(Path(f).resolve().parent) for f in files]
  root = Path(os.path.commonpath(parents)) if parents else Path(".")
  return [Path(f).resolve().relative_to(root).as_posix() for f in files]


def _overlay_names(names: Sequence[str]) -> list[str]:
  """``a/b.jpg`` -> ``a__b.png``; the full name (``a__b.jpg.png``) where two would collide."""
  flat = [n.replace("/", "__") for n in names]
  bases = [f.rsplit(".", 1)[0] if "." in f else f for f in flat]
  counts: dict[str, int] = {}
  for b in bases:
    counts[b] = counts.get(b, 0) + 1
  return [(b if counts[b] == 1 else f) + ".png" for b, f in zip(bases, flat)]


def _decode(path: Path, pre: dict[str, Any]) -> np.ndarray:
  return image_io.decode_image(path, image_size=pre["image_size"], crop_size=pre["crop_size"],
                               channels=pre["channels"])


def _enlarge(image: np.ndarray, amap: np.ndarray, min_side: int = 160
             ) -> tuple[np.ndarray, np.ndarray]:
  """Small images repeated to at least ``min_side`` pixels (integer factor) for legible overlays."""
  factor = -(-min_side // min(image.shape[:2]))
  if factor <= 1:
    return image, amap
  return (np.repeat(np.repeat(image, factor, 0), factor, 1),
          np.repeat(np.repeat(amap, factor, 0), factor, 1))


def score_files(scorer: WorkdirScorer | ExportedScorer, files: Sequence[str | os.PathLike],
                out_dir: str | os.PathLike, *, overlays: str = "all",
                threshold: float | None = None, chunk: int = 64, num_workers: int | None = None,
                show_progress: bool | None = None) -> FileScores:
  """Scores image files, writes ``scores.csv`` and overlays below ``out_dir``.

  Args:
    scorer: from :func:`open_scorer`.
    files: image files (any size, grayscale or RGB); unreadable ones are reported, not fatal.
    out_dir: output folder (created).
    overlays: ``"all"``, ``"anomalous"`` (only images decided anomalous) or ``"none"``.
    threshold: overrides the run's calibrated threshold.
    chunk: files decoded and scored together.
    num_workers: decoding threads (default ``min(4, cpu_count)``).
    show_progress: ``None`` auto, ``False`` quiet.
  Returns:
    :class:`FileScores`. ``scores.csv`` rows follow ``files`` (readable ones); unreadable files go
    to ``unreadable.csv`` (``file, error``) and are logged at the end.
  """
  if overlays not in OVERLAYS:
    raise ValueError(f"overlays must be one of {OVERLAYS}, got {overlays!r}")
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  from jaxad import viz
  files = [Path(f) for f in files]
  names = _display_names(files)
  overlay_names = _overlay_names(names)
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  pre = scorer.preprocessing
  cal = scorer.calibration
  thr = threshold if threshold is not None else (None if cal is None else cal.threshold)
  vmin = None if cal is None else cal.map_low
  vmax = None if cal is None else cal.map_high
  rows: list[dict[str, Any]] = []
  failed: dict[str, str] = {}
  written: list[Path] = []
  workers = num_workers or min(4, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool, \
      Progress(total=len(files), desc=f"predict {scorer.name}", unit="img",
               enabled=show_progress) as bar:
    for start in range(0, len(files), chunk):
      part = list(range(start, min(start + chunk, len(files))))
      futures = [pool.submit(_decode, files[i], pre) for i in part]
      good, images = [], []
      for i, fut in zip(part, futures):
        try:
          images.append(fut.result())
          good.append(i)
        except (OSError, ValueError) as e:  # missing, truncated, not an image, bad size
          failed[str(files[i])] = f"{type(e).__name__}: {e}"
      if good:
        batch = np.stack(images).astype(np.float32) / np.float32(255.0)
        out = scorer.score(batch, threshold=threshold)
        for j, i in enumerate(good):
          row = {"file": str(files[i]), "score": float(out["scores"][j]),
                 "normalized_score": float(out["normalized"][j]) if "normalized" in out else None,
                 "decision": (("anomalous" if out["decisions"][j] else "normal")
                              if "decisions" in out else None)}
          rows.append(row)
          if overlays == "all" or (overlays == "anomalous" and row["decision"] == "anomalous"):
            target = out_dir / OVERLAY_DIR / overlay_names[i]
            image, amap = _enlarge(batch[j], out["maps"][j])
            written.append(viz.save_panels(
                target, image[None], amap[None], names=[names[i]],
                scores=out["scores"][j:j + 1], threshold=thr, vmin=vmin, vmax=vmax))
      bar.update(len(part), failed=len(failed))
  csv_path = out_dir / SCORES_FILE
  with csv_path.open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "score", "normalized_score", "decision"])
    for r in rows:
      writer.writerow([r["file"], f"{r['score']:.9g}",
                       "" if r["normalized_score"] is None else f"{r['normalized_score']:.6f}",
                       r["decision"] or ""])
  errors = out_dir / ERRORS_FILE
  if failed:
    with errors.open("w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["file", "error"])
      writer.writerows(failed.items())
    log("%d of %d files could not be read (listed in %s):", len(failed), len(files), errors)
    for name, err in failed.items():
      log("  %s: %s", name, err)
  elif errors.exists():
    errors.unlink()  # a stale list from an earlier run into the same folder
  return FileScores(rows=rows, failed=failed, csv_path=csv_path, overlays=written)
