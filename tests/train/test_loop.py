"""The training loop on one device: determinism, data order, checkpoints, resume, errors."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxad.models import conv_ae
from jaxad.train import loop, rng
from jaxad.train.checkpoint import Checkpointer, CheckpointMismatchError
from jaxad.train.mesh import make_mesh, to_host

from train_helpers import CFG, digest, images, leaves

DATA = images(24)  # 3 steps per epoch at batch 8


def _fit(**kw):
  args = dict(seed=0, epochs=2, batch_size=8, show_progress=False)
  args.update(kw)
  return loop.fit("conv_ae", CFG, DATA, **args)


def test_same_seed_is_bitwise_identical_and_seeds_differ():
  a, b, c = _fit(seed=3), _fit(seed=3), _fit(seed=4)
  assert len(a.history) == 6 and a.steps_per_epoch == 3
  for x, y in zip(leaves(a.state), leaves(b.state)):
    np.testing.assert_array_equal(x, y)
  assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
  assert digest(a.state.params) != digest(c.state.params)
  assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]
  # Training did something: the loss went down.
  assert a.history[-1]["loss"] < a.history[0]["loss"]


def test_data_order_depends_on_seed_and_epoch_only():
  data = loop.as_arrays(DATA)

  def order(seed, epoch, **kw):
    return np.concatenate([b["image"] for b in loop.epoch_batches(data, 8, seed=seed, epoch=epoch,
                                                                 **kw)])

  e0 = order(1, 0)
  np.testing.assert_array_equal(e0, order(1, 0))
  assert not np.array_equal(e0, order(1, 1)) and not np.array_equal(e0, order(2, 0))
  # One epoch is a permutation of the data (24 = 3 full batches, nothing dropped).
  np.testing.assert_array_equal(np.sort(e0.reshape(24, -1), axis=0),
                                np.sort(DATA.reshape(24, -1), axis=0))
  # Two processes' slices, interleaved per batch, give the single-process batches.
  p0 = list(loop.epoch_batches(data, 8, seed=1, epoch=0, process_index=0, process_count=2))
  p1 = list(loop.epoch_batches(data, 8, seed=1, epoch=0, process_index=1, process_count=2))
  joined = np.concatenate([np.concatenate([a["image"], b["image"]]) for a, b in zip(p0, p1)])
  np.testing.assert_array_equal(joined, e0)
  # Resuming at batch 2 yields the tail of the epoch.
  np.testing.assert_array_equal(order(1, 0, start=2), e0[16:])
  assert rng.data_seed(0) != rng.data_seed(1)


def test_resume_is_bit_exact_and_keeps_last_k(tmp_path):
  full = _fit(epochs=3, workdir=tmp_path / "full")
  part = _fit(epochs=3, workdir=tmp_path / "resumed", save_every=2, keep=2, max_steps=4)
  assert int(to_host(part.state.step)) == 4
  ckpt_dir = tmp_path / "resumed" / "checkpoints"
  assert sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) == [2, 4]
  with (tmp_path / "resumed" / "metrics.jsonl").open("a") as f:  # as if it crashed after step 5
    f.write(json.dumps({"step": 5, "epoch": 1, "loss": -1.0}) + "\n")
  with pytest.raises(CheckpointMismatchError, match="resume=False"):
    _fit(epochs=3, workdir=tmp_path / "resumed", resume=False)
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
  # restore_state rebuilds the final state from the workdir alone.
  restored, info = loop.restore_state("conv_ae", tmp_path / "resumed")
  assert info["method"] == "conv_ae" and info["seed"] == 0
  for x, y in zip(leaves(full.state), leaves(restored)):
    np.testing.assert_array_equal(x, y)
  # An older checkpoint restores the older state.
  older, _ = loop.restore_state("conv_ae", tmp_path / "resumed", step=8)
  assert int(to_host(older.step)) == 8


def test_incompatible_workdir_gives_clear_errors(tmp_path):
  _fit(epochs=1, workdir=tmp_path)
  other = conv_ae.Config(image_size=32, channels=3, features=(8, 32))
  with pytest.raises(CheckpointMismatchError, match=str(tmp_path)):
    loop.fit("conv_ae", other, DATA, seed=0, epochs=1, batch_size=8, workdir=tmp_path,
             show_progress=False)
  with pytest.raises(CheckpointMismatchError, match="seed"):
    _fit(epochs=1, seed=5, workdir=tmp_path)
  # Orbax-level check (bypassing run.json): shapes that do not fit the template.
  batch = next(loop.epoch_batches(loop.as_arrays(DATA), 8, seed=0, epoch=0))
  template = loop.init_state(conv_ae, other, batch, seed=0, mesh=make_mesh(1))
  with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointMismatchError, match="does not match"):
    ckpt.restore(template)
  with pytest.raises(FileNotFoundError, match="run.json"):
    loop.restore_state("conv_ae", tmp_path / "nothing")


def test_argument_errors():
  with pytest.raises(ValueError, match="larger than the number of training images"):
    _fit(batch_size=32)
  with pytest.raises(ValueError, match="image_size=64"):
    loop.fit("conv_ae", conv_ae.Config(image_size=64, features=(8, 16)), DATA, batch_size=8)
  with pytest.raises(ValueError, match="epochs"):
    _fit(epochs=0)
  with pytest.raises(TypeError, match="float32"):
    loop.fit("conv_ae", CFG, DATA.astype(np.float64), batch_size=8)
  with pytest.raises(ValueError, match="unknown method 'nope'"):
    loop.fit("nope", CFG, DATA)


def test_predict_dataset_pads_and_matches_direct_predict():
  state = _fit(epochs=1).state
  scores, maps = loop.predict_dataset("conv_ae", state, DATA[:7], batch_size=4)
  assert scores.shape == (7,) and maps.shape == (7, 32, 32)
  ref_scores, ref_maps = jax.jit(conv_ae.predict)(state, DATA[:7])
  np.testing.assert_allclose(scores, np.asarray(ref_scores), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(maps, np.asarray(ref_maps), rtol=1e-5, atol=1e-7)
