"""TensorFlow Datasets builders for MVTec AD (``mvtec_ad``) and BTAD (``btad``) from a ``manual_dir``.

Optional (``pip install 'jaxad[data]'``); imported only on demand, never by
``import jaxad.data``. The builders reuse the plain readers' file listing and
preprocessing (:mod:`jaxad.data.image_io`), so an example's ``image / 255`` and
``mask`` equal the rows of :func:`jaxad.data.load_mvtec` / :func:`jaxad.data.load_btad`
with the same ``image_size`` / ``crop_size`` / ``channels``, in the same order.

Features: ``image`` uint8 ``[H,W,C]``, ``mask`` uint8 ``[H,W,1]`` in {0, 1} (both
zlib-compressed tensors: ``tfds.features.Image`` needs TensorFlow to encode PNG), ``label`` (0 normal, 1 anomalous), ``defect_type`` and ``name``
(strings) and ``index`` (row in the plain reader's order). TFDS prepares them without TensorFlow when ``file_format="array_record"``
is passed, and reads them back with ``builder.as_data_source(split)``.

Example::

  from jaxad.data import tfds_builders
  builder = tfds_builders.MvtecAd(config="bottle", data_dir="~/tensorflow_datasets")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir="/data/mvtec_ad"),
      file_format="array_record")
  test = tfds_builders.as_array_split(builder, "test")
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxad.data import btad as btad_lib
from jaxad.data import image_io
from jaxad.data import mvtec as mvtec_lib
from jaxad.data.split import ArraySplit

__all__ = ["MvtecAd", "MvtecAdConfig", "Btad", "BtadConfig", "as_array_split"]


@dataclasses.dataclass
class _ImageConfig(tfds.core.BuilderConfig):
  """Builder config: which folder and the preprocessing of the plain readers."""
  folder: str = ""
  image_size: int | None = 256
  crop_size: int | None = None
  channels: int = 3

  def out_shape(self) -> tuple[int | None, int | None]:
    side = self.crop_size or self.image_size
    return (side, side) if side is not None else (None, None)


@dataclasses.dataclass
class MvtecAdConfig(_ImageConfig):
  """``folder`` = MVTec AD category (``"bottle"``...)."""


@dataclasses.dataclass
class BtadConfig(_ImageConfig):
  """``folder`` = BTAD product (``"01"``, ``"02"``, ``"03"``)."""


def _features(config: _ImageConfig) -> tfds.features.FeaturesDict:
  h, w = config.out_shape()
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(h, w, config.channels), dtype=np.uint8,
                                    encoding=tfds.features.Encoding.ZLIB),
      "mask": tfds.features.Tensor(shape=(h, w, 1), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB),
      "label": tfds.features.ClassLabel(names=["normal", "anomalous"]),
      "defect_type": tfds.features.Text(),
      "name": tfds.features.Text(),
      "index": tfds.features.Scalar(dtype=np.int64),
  })


def _examples(cfg: _ImageConfig, base: Path, entries):
  for i, e in enumerate(entries):
    native = image_io._native_size(e.image)  # pylint: disable=protected-access
    image = image_io.decode_image(e.image, image_size=cfg.image_size, crop_size=cfg.crop_size,
                                  channels=cfg.channels)
    if e.mask is None:
      mask = np.zeros(image.shape[:2], np.uint8)
    else:
      mask = image_io.decode_mask(e.mask, image_size=cfg.image_size, crop_size=cfg.crop_size,
                                  expected_native=native)
    name = e.image.relative_to(base).as_posix()
    yield name, {"image": image, "mask": mask[..., None], "label": e.label,
                 "defect_type": e.defect_type, "name": name,
                 "index": i}


class MvtecAd(tfds.core.GeneratorBasedBuilder):
  """MVTec AD from a manual download, one config per category (256x256 RGB by default)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "jaxad preprocessing: bilinear resize, nearest masks, {0,1} masks."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download MVTec AD from https://www.mvtec.com/company/research/datasets/mvtec-ad, extract it and "
      "pass its folder (holding bottle/, cable/, ...) as manual_dir.")
  BUILDER_CONFIGS = [MvtecAdConfig(name=c, folder=c) for c in mvtec_lib.MVTEC_CATEGORIES]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=_features(self.builder_config), supervised_keys=("image", "label"),
        homepage="https://www.mvtec.com/company/research/datasets/mvtec-ad")

  def _split_generators(self, dl_manager):
    root = Path(dl_manager.manual_dir)
    return {split: self._generate_examples(root, split) for split in ("train", "test")}

  def _generate_examples(self, root: Path, split: str):
    base, entries = mvtec_lib.mvtec_entries(root, self.builder_config.folder, split)
    yield from _examples(self.builder_config, base, entries)


class Btad(tfds.core.GeneratorBasedBuilder):
  """BTAD from a manual download, one config per product (256x256 RGB by default)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "jaxad preprocessing: bilinear resize, nearest masks, {0,1} masks."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download BTAD (beanTech Anomaly Detection), extract it and pass its folder (holding 01/, 02/, "
      "03/) as manual_dir.")
  BUILDER_CONFIGS = [BtadConfig(name=f"product_{p}", folder=p) for p in btad_lib.BTAD_PRODUCTS]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=_features(self.builder_config),
                                          supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    root = Path(dl_manager.manual_dir)
    return {split: self._generate_examples(root, split) for split in ("train", "test")}

  def _generate_examples(self, root: Path, split: str):
    base, entries = btad_lib.btad_entries(root, self.builder_config.folder, split)
    yield from _examples(self.builder_config, base, entries)


def as_array_split(builder: tfds.core.DatasetBuilder, split: str) -> ArraySplit:
  """Reads a prepared split (array_record, no TensorFlow needed) into an :class:`ArraySplit`.

  Args:
    builder: a prepared :class:`MvtecAd` / :class:`Btad`.
    split: ``"train"`` or ``"test"``.

  Returns:
    The split with images ``/ 255`` as float32, exactly as the plain readers return it.
  """
  source = builder.as_data_source(split=split)
  rows = sorted((source[i] for i in range(len(source))), key=lambda r: int(r["index"]))
  names = [_str(r["name"]) for r in rows]
  images = np.stack([np.asarray(r["image"], np.uint8) for r in rows])
  masks = np.stack([np.asarray(r["mask"], np.uint8)[..., 0] for r in rows])
  defects = [_str(r["defect_type"]) for r in rows]
  return ArraySplit(images=image_io.to_float(images), masks=masks.astype(np.float32),
                    labels=np.array([int(r["label"]) for r in rows], np.int32),
                    names=tuple(names), defect_types=tuple(defects), has_masks=True)


def _str(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)
