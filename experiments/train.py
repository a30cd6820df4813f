"""Trains a registered method on a data set; resumable, data-parallel, multi-host.

Example (single host, all local devices)::

  python experiments/train.py --config=experiments/configs/conv_ae.py --dataset=mvtec \
      --data_dir=path/to/mvtec_ad --category=bottle --config.image_size=128 \
      --batch_size=16 --epochs=50 --seed=0 --workdir=runs/conv_ae_bottle \
      --config.features=32,64,128,256 --config.learning_rate=5e-4

The method and its settings come from ``--config`` (``experiments/configs/<method>.py``,
an ``ml_collections`` config file: ``method`` plus the fields of the method's ``Config``);
``--config.<field>=<value>`` overrides any field. Running the same command again resumes
from the latest intact checkpoint in ``--workdir`` and continues bit-for-bit.

Multi-host: start one process per host with ``--coordinator_address=host:port
--num_processes=N --process_id=i`` (CPU processes use gloo collectives); every
process loads the data and reads its rows of each global batch.

Writes to ``--workdir``: ``config.json`` (flags and resolved config),
``run.json`` (what a resume must match), ``metrics.jsonl`` (one JSON line per
step), ``checkpoints/`` (Orbax), ``samples.png`` (inputs, reconstructions,
residuals, heat maps of a few training images, when the method has
``reconstruct``) and ``calibration.json`` (the decision threshold and score
normalisation of ``jaxad.train.calibrate``).

Calibration: ``--val_fraction`` (default 0.1) of the training images are held
out before training (``jaxad.data.train_val_split``, seeded by ``--seed``);
after training their scores give the threshold (the ``--threshold_quantile``
of the normal scores) and the normalisation (``--score_normalization``).
``--calibration_dir`` (a folder with ``normal/`` and ``abnormal/`` images,
not the test set) makes the threshold F1-optimal on those labelled images.
``--val_fraction=0`` trains on every image and stores no threshold; it is the
default of methods that normalise scores over a whole test set (SCGAN).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from absl import app, flags
from ml_collections import config_flags

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Method config file, e.g. experiments/configs/ramfae.py; override its "
    "fields with --config.<field>=<value>.")
flags.DEFINE_enum("dataset", "mvtec", ["mvtec", "btad", "folder", "elpv", "mnist", "fashion_mnist"],
                  "Data set reader of jaxad.data.load.")
flags.DEFINE_string("data_dir", None, "Data folder (optional for --dataset=elpv).")
flags.DEFINE_string("category", None, "MVTec category / BTAD product (when --data_dir holds several).")
flags.DEFINE_integer("normal_class", None, "MNIST / Fashion-MNIST normal class (0-9).")
flags.DEFINE_string("cache_dir", None, "Decoded-image cache folder of jaxad.data (optional).")
flags.DEFINE_string("workdir", None, "Output folder: checkpoints, metrics, samples, config.")
flags.DEFINE_integer("batch_size", 16, "Global batch size (divisible by the device count).")
flags.DEFINE_integer("epochs", 1, "Passes over the training data (SMCC: self-update epochs W, "
                     "0 = none).")
flags.DEFINE_integer("seed", 0, "The one seed of the run (init, data order, augmentation).")
flags.DEFINE_integer("save_every", 0, "Checkpoint every N steps (0: only at the end).")
flags.DEFINE_integer("keep", 3, "Number of checkpoints to keep.")
flags.DEFINE_integer("log_every", 10, "Steps between metric/progress updates.")
flags.DEFINE_integer("max_steps", 0, "Stop after this global step (0: no limit).")
flags.DEFINE_integer("num_devices", 0, "Devices in the data mesh (0: all).")
flags.DEFINE_integer("num_samples", 8, "Training images shown in samples.png (0: none).")
flags.DEFINE_float("val_fraction", 0.1, "Share of the training images held out (never trained on) "
                   "to choose the decision threshold; 0 = train on all, no threshold (always 0 "
                   "for methods that normalise over the test set, e.g. SCGAN).")
flags.DEFINE_float("threshold_quantile", 0.99, "Threshold = this quantile of the held-out normal "
                   "images' scores.")
flags.DEFINE_enum("score_normalization", "minmax", ["minmax", "quantile"], "Score normalisation "
                  "range from the held-out normal scores: min/max or their 1%/99% quantiles.")
flags.DEFINE_string("calibration_dir", None, "Optional labelled validation images (a folder with "
                    "normal/ and abnormal/, not the test set): F1-optimal threshold.")
flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator host:port.")
flags.DEFINE_integer("num_processes", 1, "Number of processes of the job.")
flags.DEFINE_integer("process_id", 0, "This process's index in [0, num_processes).")
flags.DEFINE_string("cpu_collectives", "gloo", "CPU collectives for multi-process CPU jobs.")
flags.DEFINE_enum("host_buffers", "auto", ["auto", "keep", "default"], "XLA:CPU step buffers: keep "
                  "them mapped between steps (jaxad.train.host_memory; auto = when JAX runs on the "
                  "CPU) or leave the process's allocator as it is (default).")


class FlagError(ValueError):
  """A bad flag or flag combination."""


def check_flags() -> None:
  """Validates flags before JAX or data are touched; raises :class:`FlagError`."""
  if _CONFIG.value is None:
    raise FlagError("--config is required (e.g. --config=experiments/configs/ramfae.py)")
  if "method" not in _CONFIG.value:
    raise FlagError("the --config file must set `method` (see experiments/configs/)")
  if not FLAGS.workdir:
    raise FlagError("--workdir is required")
  if FLAGS.data_dir is None and FLAGS.dataset not in ("elpv", "fashion_mnist"):
    raise FlagError(f"--data_dir is required for --dataset={FLAGS.dataset}")
  if FLAGS.data_dir is not None and not Path(FLAGS.data_dir).is_dir():
    raise FlagError(f"--data_dir={FLAGS.data_dir} does not exist or is not a directory")
  if FLAGS.dataset in ("mnist", "fashion_mnist") and FLAGS.normal_class is None:
    raise FlagError(f"--dataset={FLAGS.dataset} needs --normal_class=0..9")
  if FLAGS.dataset not in ("mnist", "fashion_mnist") and FLAGS.normal_class is not None:
    raise FlagError(f"--normal_class only applies to mnist/fashion_mnist, not --dataset={FLAGS.dataset}")
  if FLAGS.category and FLAGS.dataset not in ("mvtec", "btad"):
    raise FlagError(f"--category only applies to mvtec/btad, not --dataset={FLAGS.dataset}")
  if FLAGS.batch_size < 1:
    raise FlagError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
  for name in ("epochs", "save_every", "max_steps", "num_devices", "num_samples"):
    if getattr(FLAGS, name) < 0:
      raise FlagError(f"--{name} must be >= 0, got {getattr(FLAGS, name)}")
  if FLAGS.keep < 1 or FLAGS.log_every < 1:
    raise FlagError("--keep and --log_every must be >= 1")
  if not 0 <= FLAGS.seed < 2**32:
    raise FlagError(f"--seed must be in [0, 2**32), got {FLAGS.seed}")
  if FLAGS.num_processes < 1 or not 0 <= FLAGS.process_id < FLAGS.num_processes:
    raise FlagError(f"--process_id={FLAGS.process_id} must be in [0, --num_processes="
                    f"{FLAGS.num_processes})")
  if FLAGS.num_processes > 1 and not FLAGS.coordinator_address:
    raise FlagError("--num_processes > 1 needs --coordinator_address=host:port")
  if FLAGS.num_processes > 1 and FLAGS.num_devices:
    raise FlagError("--num_devices cannot be combined with --num_processes > 1 (all devices are used)")
  if FLAGS.batch_size % FLAGS.num_processes:
    raise FlagError(f"--batch_size={FLAGS.batch_size} must be divisible by --num_processes="
                    f"{FLAGS.num_processes}")
  workdir = Path(FLAGS.workdir)
  if workdir.exists() and not workdir.is_dir():
    raise FlagError(f"--workdir={workdir} exists and is not a directory")
  if not 0.0 <= FLAGS.val_fraction < 1.0:
    raise FlagError(f"--val_fraction must be in [0, 1), got {FLAGS.val_fraction}")
  if not 0.0 <= FLAGS.threshold_quantile <= 1.0:
    raise FlagError(f"--threshold_quantile must be in [0, 1], got {FLAGS.threshold_quantile}")
  if FLAGS.calibration_dir is not None:
    cal = Path(FLAGS.calibration_dir)
    if not ((cal / "normal").is_dir() and (cal / "abnormal").is_dir()):
      raise FlagError(f"--calibration_dir={cal} must hold normal/ and abnormal/ image folders")


def resolve_val_fraction(workdir: Path, method: Any) -> float:
  """``--val_fraction``, or the saved one of a resumed run when the flag is not given.

  A method that normalises its scores over a whole test set (a ``normalize`` hook: SCGAN's
  min-max) has no per-image threshold, so it holds out nothing unless asked: its default is 0.

  Raises:
    FlagError: the flag differs from the run being resumed (a different training set), or asks
      to hold out images for a method that cannot use them.
  """
  if hasattr(method, "normalize"):
    if FLAGS["val_fraction"].present and FLAGS.val_fraction > 0:
      name = getattr(method, "NAME", method.__name__)
      raise FlagError(f"--val_fraction={FLAGS.val_fraction}: {name} normalises its scores "
                      "over a whole test set (no per-image threshold to calibrate); use "
                      "--val_fraction=0 (its default)")
    return 0.0
  run_file = workdir / "run.json"
  if not run_file.is_file():
    return FLAGS.val_fraction
  saved = json.loads(run_file.read_text()).get("val_fraction", 0.0)
  if not FLAGS["val_fraction"].present:
    return float(saved)
  if float(saved) != FLAGS.val_fraction:
    raise FlagError(f"--val_fraction={FLAGS.val_fraction} but the run in {workdir} holds out "
                    f"{saved} of its training images; resume with --val_fraction={saved} or use "
                    "a fresh --workdir")
  return FLAGS.val_fraction


def write_calibration(method: Any, config: Any, state: Any, val: Any, workdir: Path,
                      kwargs: dict[str, Any], val_fraction: float) -> Any:
  """Scores the held-out (and labelled) validation images; writes ``calibration.json``."""
  from jaxad import data
  from jaxad.progress import log
  from jaxad.train import calibrate
  from jaxad.train.mesh import to_host
  labelled = labels = None
  if FLAGS.calibration_dir:
    keep = {k: v for k, v in kwargs.items() if k in ("image_size", "channels", "crop_size", "cache_dir")}
    cal_dir = Path(FLAGS.calibration_dir)
    split = data.load_folder(test_normal_dir=cal_dir / "normal",
                             test_abnormal_dir=cal_dir / "abnormal", split="test", **keep)
    labelled, labels = split.images, split.labels
    log("calibration set %s: %d normal, %d anomalous", cal_dir, int((labels == 0).sum()),
        int(labels.sum()))
  normal = val.images if val is not None else labelled[labels == 0]
  info = {"val_fraction": val_fraction, "num_val_images": 0 if val is None else len(val),
          "seed": FLAGS.seed, "step": int(to_host(state.step)),
          "calibration_dir": FLAGS.calibration_dir}
  cal = calibrate.calibrate_run(method, config, state, normal, labelled_images=labelled,
                                labels=labels, batch_size=FLAGS.batch_size,
                                quantile=FLAGS.threshold_quantile,
                                normalization=FLAGS.score_normalization, info=info)
  path = calibrate.write_calibration(workdir, cal)
  if cal.rule == "quantile" and cal.num_normal < 20:
    log("only %d held-out images: the q=%g quantile is close to their maximum; hold out more "
        "(--val_fraction) or give --calibration_dir for a steadier threshold", cal.num_normal,
        cal.quantile)
  log("calibration: threshold %.6g (%s), normalisation %s [%.6g, %.6g] -> %s", cal.threshold,
      f"F1 {cal.f1:.3f} on {FLAGS.calibration_dir}" if cal.rule == "f1" else
      f"q={cal.quantile} of {cal.num_normal} held-out normal images", cal.normalization, cal.low,
      cal.high, path)
  return cal


def init_distributed() -> None:
  """``jax.distributed.initialize`` from the flags (no-op for one process)."""
  import jax
  if FLAGS.num_processes == 1:
    return
  if FLAGS.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", FLAGS.cpu_collectives)
  jax.distributed.initialize(FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                             process_id=FLAGS.process_id)


def resolve_config(method: Any) -> Any:
  """The method's ``Config`` from ``--config`` (and its ``--config.*`` overrides)."""
  from experiments import configs
  try:
    return configs.to_method_config(method, _CONFIG.value)
  except (TypeError, ValueError) as e:
    raise FlagError(f"--config: {e}") from None


def data_kwargs(config: Any) -> dict[str, Any]:
  """Keyword arguments of ``jaxad.data.load`` for the flags and config."""
  kwargs: dict[str, Any] = {}
  if hasattr(config, "image_size"):
    kwargs["image_size"] = config.image_size
  if hasattr(config, "channels"):
    kwargs["channels"] = config.channels
  if FLAGS.cache_dir and FLAGS.dataset not in ("mnist", "fashion_mnist"):
    kwargs["cache_dir"] = FLAGS.cache_dir
  if FLAGS.category:
    kwargs["category" if FLAGS.dataset == "mvtec" else "product"] = FLAGS.category
  if FLAGS.dataset in ("mnist", "fashion_mnist"):
    kwargs["normal_class"] = FLAGS.normal_class
    kwargs["seed"] = FLAGS.seed
  return kwargs


def save_samples(method: Any, config: Any, state: Any, images: Any, path: Path) -> Path | None:
  """samples.png: input | reconstruction | residual | heat map of a few images."""
  import numpy as np
  from jaxad import viz
  from jaxad.train.predict import predict_dataset
  _, maps = predict_dataset(method, config, state, images, batch_size=len(images), desc="samples")
  recon = None
  if hasattr(method, "reconstruct"):
    import jax
    recon = np.asarray(jax.jit(method.reconstruct, static_argnums=0)(config, state, images),
                       np.float32)
    recon = np.clip(recon, 0.0, 1.0)
  return viz.save_panels(path, images, maps, reconstructions=recon, max_rows=len(images))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    check_flags()
  except FlagError as e:
    raise app.UsageError(str(e)) from None
  from jaxad.progress import log
  from jaxad.train import host_memory
  log(host_memory.apply_host_buffers(FLAGS.host_buffers))
  init_distributed()

  import jax
  from jaxad import data, models
  from jaxad.train import loop, mesh as mesh_lib, run_files
  from jaxad.train.checkpoint import CheckpointMismatchError, quiet_orbax_logs

  quiet_orbax_logs()

  try:
    method = models.get(_CONFIG.value.method)
  except ValueError as e:
    raise app.UsageError(f"--config: {e}") from None
  try:
    config = resolve_config(method)
  except FlagError as e:
    raise app.UsageError(str(e)) from None

  kwargs = data_kwargs(config)
  try:
    train = data.load(FLAGS.dataset, FLAGS.data_dir, "train", **kwargs)
  except FileNotFoundError as e:
    raise app.UsageError(f"cannot load --dataset={FLAGS.dataset} from --data_dir="
                         f"{FLAGS.data_dir}: {e}") from None
  try:
    val_fraction = resolve_val_fraction(Path(FLAGS.workdir), method)
  except FlagError as e:
    raise app.UsageError(str(e)) from None
  val = None
  if val_fraction > 0:
    try:
      train, val = data.train_val_split(train, val_fraction, seed=FLAGS.seed)
    except ValueError as e:
      raise app.UsageError(f"--val_fraction={val_fraction}: {e}") from None
    log("train split: %d images %s, %d held out for the threshold", len(train.images),
        tuple(train.images.shape[1:]), len(val.images))
  else:
    log("train split: %d images %s (--val_fraction=0: no threshold)", len(train.images),
        tuple(train.images.shape[1:]))

  mesh = mesh_lib.make_mesh(FLAGS.num_devices or None)
  try:
    mesh_lib.check_batch_size(FLAGS.batch_size, mesh)
  except ValueError as e:
    raise app.UsageError(f"--batch_size: {e}") from None

  workdir = Path(FLAGS.workdir).resolve()
  resolved = {"flags": {name: FLAGS[name].value for name in (
      "dataset", "data_dir", "category", "normal_class", "cache_dir", "workdir",
      "batch_size", "epochs", "seed", "save_every", "keep", "log_every", "max_steps",
      "num_devices", "num_processes", "val_fraction", "threshold_quantile",
      "score_normalization", "calibration_dir")},
              "config_file": FLAGS["config"].config_filename, "data_kwargs": kwargs,
              "method": _CONFIG.value.method, "config": run_files.config_to_dict(config),
              "num_devices": mesh.devices.size,
              "jax_version": jax.__version__, "backend": jax.default_backend()}
  try:
    result = loop.fit(method, config, train, seed=FLAGS.seed, epochs=FLAGS.epochs,
                      batch_size=FLAGS.batch_size, workdir=workdir, mesh=mesh,
                      save_every=FLAGS.save_every or None, keep=FLAGS.keep,
                      max_steps=FLAGS.max_steps or None, log_every=FLAGS.log_every,
                      extra_info={"dataset": FLAGS.dataset, "data_dir": FLAGS.data_dir,
                                  "data_kwargs": kwargs, "val_fraction": val_fraction,
                                  "num_val_images": 0 if val is None else len(val)})
  except CheckpointMismatchError as e:
    raise app.UsageError(str(e)) from None
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(json.dumps(resolved, indent=2, default=str) + "\n")
  last = result.history[-1] if result.history else {}
  log("done: step %d, %s", int(mesh_lib.to_host(result.state.step)),
      {k: v for k, v in last.items() if k not in ("step", "epoch")})
  if FLAGS.num_samples and jax.process_count() == 1:
    path = save_samples(method, config, result.state, train.images[:FLAGS.num_samples],
                        workdir / "samples.png")
    log("samples: %s", path)
  threshold = None
  if (val is not None or FLAGS.calibration_dir) and jax.process_count() == 1:
    try:
      threshold = write_calibration(method, config, result.state, val, workdir, kwargs,
                                    val_fraction).threshold
    except NotImplementedError as e:
      log("no calibration: %s", e)
  elif val is not None:
    log("no calibration: scoring the held-out images runs in one process (multi-process run)")
  print(json.dumps({"workdir": str(workdir), "step": int(mesh_lib.to_host(result.state.step)),
                    **{k: v for k, v in last.items() if k not in ("step", "epoch")},
                    "threshold": threshold}))


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors for unknown ``--config.<field>`` overrides."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
    sys.exit(1)
  except (AttributeError, KeyError) as e:  # config_flags: a field the config file lacks
    name = str(e).strip("\"'")
    print(f"FATAL Flags parsing error: --config has no field '{name}'; see the config file's "
          "fields (experiments/configs/<method>.py)", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
