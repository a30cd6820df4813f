"""The engine on one device: determinism, checkpoints, resume, damaged checkpoints, errors."""

from __future__ import annotations

import json
import logging

import jax
import numpy as np
import pytest

from jaxad.models import conv_ae
from jaxad.models.protocol import Run
from jaxad.train import loop
from jaxad.train.checkpoint import Checkpointer, CheckpointMismatchError, CheckpointUnreadableError
from jaxad.train.mesh import make_mesh, to_host
from jaxad.train.predict import predict_dataset

from train_helpers import CFG, digest, images, leaves

DATA = images(24)  # 3 steps per epoch at batch 8


def _fit(**kw):
  args = dict(seed=0, epochs=2, batch_size=8, show_progress=False)
  args.update(kw)
  return loop.fit("conv_ae", CFG, DATA, **args)


def test_same_seed_is_bitwise_identical_and_seeds_differ():
  a, b, c = _fit(seed=3), _fit(seed=3), _fit(seed=4)
  assert len(a.history) == 6 and a.run == Run(total_steps=6, steps_per_epoch=3, batch_size=8)
  for x, y in zip(leaves(a.state), leaves(b.state)):
    np.testing.assert_array_equal(x, y)
  assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
  assert digest(a.state.params) != digest(c.state.params)
  assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]
  # Training did something: the loss went down.
  assert a.history[-1]["loss"] < a.history[0]["loss"]


def test_resume_is_bit_exact_and_keeps_last_k(tmp_path):
  full = _fit(epochs=3, workdir=tmp_path / "full")
  part = _fit(epochs=3, workdir=tmp_path / "resumed", save_every=2, keep=2, max_steps=4)
  assert int(to_host(part.state.step)) == 4
  ckpt_dir = tmp_path / "resumed" / "checkpoints"
  assert sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) == [2, 4]
  with (tmp_path / "resumed" / "metrics.jsonl").open("a") as f:  # as if it crashed after step 5
    f.write(json.dumps({"step": 5, "epoch": 1, "loss": -1.0}) + "\n")
  rest = _fit(epochs=3, workdir=tmp_path / "resumed", save_every=2, keep=2)
  assert rest.start_step == 4 and len(rest.history) == 5
  for x, y in zip(leaves(full.state), leaves(rest.state)):
    np.testing.assert_array_equal(x, y)
  full_losses = [h["loss"] for h in full.history]
  assert [h["loss"] for h in part.history] + [h["loss"] for h in rest.history] == full_losses
  assert sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) == [8, 9]
  # One JSON line per step across both calls.
  lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == list(range(1, 10))
  # restore rebuilds the method, config and final state from the workdir alone.
  restored = loop.restore(tmp_path / "resumed")
  assert restored.method is conv_ae and restored.config == CFG
  assert restored.info["seed"] == 0 and restored.info["total_steps"] == 9
  for x, y in zip(leaves(full.state), leaves(restored.state)):
    np.testing.assert_array_equal(x, y)
  # An older checkpoint restores the older state.
  assert int(to_host(loop.restore(tmp_path / "resumed", step=8).state.step)) == 8


def _garble(step_dir, *, metadata: bool):
  """Overwrites a checkpoint's array data (and its tree metadata) with random bytes."""
  rng = np.random.default_rng(0)
  hit = 0
  for path in step_dir.rglob("*"):
    data = path.parent.name == "d" or path.name == "manifest.ocdbt"
    if path.is_file() and (data or (metadata and path.name == "_METADATA")):
      path.write_bytes(rng.bytes(max(path.stat().st_size, 64)))
      hit += 1
  assert hit


def test_damaged_latest_checkpoint_is_unreadable_and_run_resumes_from_intact_one(tmp_path, caplog):
  full = _fit(epochs=2, workdir=tmp_path / "full")
  wd = tmp_path / "run"
  _fit(epochs=2, workdir=wd, save_every=1, keep=3, max_steps=4)  # checkpoints 2, 3, 4
  _garble(wd / "checkpoints" / "4", metadata=True)   # unreadable before any array is read
  _garble(wd / "checkpoints" / "3", metadata=False)  # layout readable, arrays damaged
  template = loop.init_state(conv_ae, CFG, full.run, {"image": DATA[:8]}, seed=0, mesh=make_mesh(1))
  with Checkpointer(wd) as ckpt:
    with pytest.raises(CheckpointUnreadableError, match="step 4 .* unreadable") as err:
      ckpt.restore(template, step=4)
    assert "does not match" not in str(err.value)
  with caplog.at_level(logging.WARNING):
    rest = _fit(epochs=2, workdir=wd, save_every=1, keep=3)
  warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
  assert "checkpoint step 4" in warnings and "checkpoint step 3" in warnings
  assert "unreadable" in warnings and "does not match" not in warnings
  assert "Traceback" not in caplog.text and "asyncio" not in caplog.text
  assert rest.start_step == 2 and (wd / "unreadable_checkpoints" / "4").is_dir()
  assert (wd / "unreadable_checkpoints" / "3").is_dir()
  for x, y in zip(leaves(full.state), leaves(rest.state)):
    np.testing.assert_array_equal(x, y)
  lines = (wd / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == list(range(1, 7))


def test_incompatible_workdir_gives_clear_errors(tmp_path):
  _fit(epochs=1, workdir=tmp_path)
  other = conv_ae.Config(image_size=32, channels=3, features=(8, 32))
  with pytest.raises(CheckpointMismatchError, match=str(tmp_path)):
    loop.fit("conv_ae", other, DATA, seed=0, epochs=1, batch_size=8, workdir=tmp_path,
             show_progress=False)
  with pytest.raises(CheckpointMismatchError, match="seed"):
    _fit(epochs=1, seed=5, workdir=tmp_path)
  # Checkpoint-level check (bypassing run.json): shapes that do not fit the template.
  template = loop.init_state(conv_ae, other, Run(), {"image": DATA[:8]}, seed=0, mesh=make_mesh(1))
  with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointMismatchError, match="does not match"):
    ckpt.restore(template)
  with pytest.raises(FileNotFoundError, match="run.json"):
    loop.restore(tmp_path / "nothing")


def test_argument_errors():
  with pytest.raises(ValueError, match="larger than the number of training images"):
    _fit(batch_size=32)
  with pytest.raises(ValueError, match="image_size=64"):
    loop.fit("conv_ae", conv_ae.Config(image_size=64, features=(8, 16)), DATA, batch_size=8)
  with pytest.raises(ValueError, match="epochs"):
    _fit(epochs=-1)
  with pytest.raises(TypeError, match="float32"):
    loop.fit("conv_ae", CFG, DATA.astype(np.float64), batch_size=8)
  with pytest.raises(ValueError, match="unknown method 'nope'"):
    loop.fit("nope", CFG, DATA)
  with pytest.raises(TypeError, match="conv_ae.Config"):
    loop.fit("ramfae", CFG, DATA)


def test_predict_dataset_pads_and_matches_direct_predict():
  state = _fit(epochs=1).state
  scores, maps = predict_dataset("conv_ae", CFG, state, DATA[:7], batch_size=4)
  assert scores.shape == (7,) and maps.shape == (7, 32, 32)
  ref_scores, ref_maps = jax.jit(conv_ae.predict, static_argnums=0)(CFG, state, DATA[:7])
  np.testing.assert_allclose(scores, np.asarray(ref_scores), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(maps, np.asarray(ref_maps), rtol=1e-5, atol=1e-7)
