"""Decoding, resizing, cropping and caching (synthetic files; reference: PyTorch antialiased bilinear)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from jaxad.data import image_io


@pytest.fixture(autouse=True)
def _fresh_memory_cache():
  image_io.clear_memory_cache()
  yield
  image_io.clear_memory_cache()


def _write(path, array, mode=None):
  Image.fromarray(array, mode).save(path)
  return path


def _photo(h=90, w=120, seed=0):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], -1) * 200
  return np.uint8(np.clip(base + rng.normal(0, 20, base.shape), 0, 255))


def test_resize_matches_torch_antialiased_bilinear(tmp_path):
  torch = pytest.importorskip("torch")
  arr = _photo()
  path = _write(tmp_path / "a.png", arr)
  ours = image_io.decode_image(path, image_size=(30, 40), channels=3).astype(np.float64)
  ref = torch.nn.functional.interpolate(torch.tensor(arr, dtype=torch.float64).permute(2, 0, 1)[None],
                                        size=(30, 40), mode="bilinear", antialias=True,
                                        align_corners=False)[0].permute(1, 2, 0).numpy()
  # Pillow rounds to uint8 and uses fixed-point weights: within 1 grey level.
  assert np.abs(ours - ref).max() <= 1.0
  assert ours.shape == (30, 40, 3)


def test_channels_conversion_and_crop(tmp_path):
  gray = _photo()[..., 0]
  path = _write(tmp_path / "g.png", gray)
  rgb = image_io.decode_image(path, image_size=None, channels=3)
  assert rgb.shape == (90, 120, 3)
  np.testing.assert_array_equal(rgb[..., 0], gray)
  np.testing.assert_array_equal(rgb[..., 2], gray)
  color = _photo()
  luma = image_io.decode_image(_write(tmp_path / "c.png", color), image_size=None, channels=1)[..., 0]
  ref = color @ np.array([0.299, 0.587, 0.114])
  assert np.abs(luma - ref).max() <= 1.0
  full = image_io.decode_image(path, image_size=(64, 80), channels=1)
  crop = image_io.decode_image(path, image_size=(64, 80), crop_size=(32, 40), channels=1)
  np.testing.assert_array_equal(crop, full[16:48, 20:60])
  with pytest.raises(ValueError, match="crop_size .* larger"):
    image_io.decode_image(path, image_size=32, crop_size=40)


def test_mask_is_nearest_and_binary(tmp_path):
  mask = np.zeros((90, 120), np.uint8)
  mask[30:60, 40:100] = 255
  path = _write(tmp_path / "m.png", mask)
  out = image_io.decode_mask(path, image_size=(45, 60), expected_native=(90, 120))
  assert set(np.unique(out).tolist()) == {0, 1}
  np.testing.assert_array_equal(out, (mask[::2, ::2] > 0).astype(np.uint8))
  with pytest.raises(ValueError, match="mask .* has size 120x90 but its image has size 100x90"):
    image_io.decode_mask(path, image_size=32, expected_native=(90, 100))


def test_errors_name_the_file(tmp_path):
  bad = tmp_path / "broken.png"
  bad.write_bytes(b"not a png")
  with pytest.raises(ValueError, match="cannot read image file .*broken.png"):
    image_io.decode_image(bad)
  with pytest.raises(FileNotFoundError, match="missing.png"):
    image_io.load_arrays([tmp_path / "missing.png"])
  a = _write(tmp_path / "a.png", _photo(32, 32))
  b = _write(tmp_path / "b.png", _photo(32, 40))
  with pytest.raises(ValueError, match="inconsistent image sizes: .*b.png is 40x32"):
    image_io.load_arrays([a, b], image_size=None)
  images, _ = image_io.load_arrays([a, b], image_size=16)
  assert images.shape == (2, 16, 16, 3)
  with pytest.raises(ValueError, match="channels must be 1"):
    image_io.load_arrays([a], channels=2)
  with pytest.raises(TypeError, match="image_size must be"):
    image_io.load_arrays([a], image_size=1.5)


def test_memory_and_npz_cache_hit_and_invalidate(tmp_path):
  paths = [_write(tmp_path / f"{i}.png", _photo(40, 40, seed=i)) for i in range(3)]
  cache = tmp_path / "cache"
  first = image_io.load_arrays(paths, image_size=20, cache_dir=cache, desc="t")
  files = list(cache.glob("t-*.npz"))
  assert len(files) == 1
  assert image_io.load_arrays(paths, image_size=20, cache_dir=cache, desc="t")[0] is first[0]
  assert not first[0].flags.writeable
  image_io.clear_memory_cache()
  from_npz = image_io.load_arrays(paths, image_size=20, cache_dir=cache, desc="t")
  assert from_npz[0] is not first[0]
  np.testing.assert_array_equal(from_npz[0], first[0])
  # Another parameter -> another entry.
  image_io.load_arrays(paths, image_size=24, cache_dir=cache, desc="t")
  assert len(list(cache.glob("t-*.npz"))) == 2
  # A changed file (new content and mtime) misses both caches and is decoded again.
  _write(paths[1], 255 - _photo(40, 40, seed=1))
  st = os.stat(paths[1])
  os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  changed = image_io.load_arrays(paths, image_size=20, cache_dir=cache, desc="t")
  np.testing.assert_array_equal(changed[0][0], first[0][0])
  assert not np.array_equal(changed[0][1], first[0][1])
  np.testing.assert_array_equal(changed[0][1], image_io.decode_image(paths[1], image_size=20))
  assert len(list(cache.glob("t-*.npz"))) == 3


def test_corrupt_npz_cache_is_ignored(tmp_path):
  paths = [_write(tmp_path / "0.png", _photo(40, 40))]
  cache = tmp_path / "cache"
  good = image_io.load_arrays(paths, image_size=20, cache_dir=cache, desc="t")[0].copy()
  (npz,) = cache.glob("t-*.npz")
  npz.write_bytes(b"garbage")
  image_io.clear_memory_cache()
  np.testing.assert_array_equal(image_io.load_arrays(paths, image_size=20, cache_dir=cache, desc="t")[0],
                                good)


def test_memory_cache_limit_evicts(tmp_path):
  paths = [_write(tmp_path / "0.png", _photo(40, 40))]
  try:
    image_io.set_memory_cache_limit(0)
    a = image_io.load_arrays(paths, image_size=20)[0]
    assert image_io.load_arrays(paths, image_size=20)[0] is not a
  finally:
    image_io.set_memory_cache_limit(2 << 30)
