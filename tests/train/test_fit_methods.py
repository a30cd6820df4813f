"""The engine with a ``prepare`` stage (SMCC): centres once, then self-update steps like any step."""

from __future__ import annotations

import json

import numpy as np

from jaxad.models import ramfae, smcc
from jaxad.models.protocol import Run
from jaxad.train import loop
from jaxad.train.mesh import to_host
from jaxad.train.predict import predict_dataset

from train_helpers import images, leaves

# Random ResNet18 at 32 px, 8x8 patch grid (as tests/models/test_smcc.py).
SMCC_CFG = smcc.Config(image_size=32, backbone="resnet18", layers=("layer1", "layer2"),
                       pretrained=False, feature_stride=4, gmm_k=3, knn_k=2, sigma=1.0,
                       learning_rate=1e-4)
DATA = images(10, seed=1)  # 2 full batches of 4 per epoch (2 images dropped), 3 batches to prepare


def _fit(**kw):
  args = dict(seed=0, batch_size=4, epochs=2, show_progress=False)
  args.update(kw)
  return loop.fit("smcc", SMCC_CFG, DATA, **args)


def test_smcc_self_update_runs_through_the_engine_and_resumes_bit_exact(tmp_path):
  full = _fit()
  centres = np.asarray(to_host(full.state.centres))
  # prepare ran (init leaves the centres at zero) and W=2 epochs of 2 self-update steps followed.
  assert np.abs(centres).max() > 0 and np.all(np.isfinite(centres))
  assert [h["step"] for h in full.history] == [1, 2, 3, 4]
  assert all(np.isfinite(h["loss"]) for h in full.history)
  # Interrupted after step 3 (checkpoints 0 = prepared, 1, 2, 3), resumed without re-preparing.
  wd = tmp_path / "run"
  part = _fit(workdir=wd, save_every=1, keep=5, max_steps=3)
  steps = sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [0, 1, 2, 3]
  rest = _fit(workdir=wd, save_every=1, keep=5)
  assert rest.start_step == 3 and [h["step"] for h in rest.history] == [4]
  for x, y in zip(leaves(full.state), leaves(rest.state)):
    np.testing.assert_array_equal(x, y)
  rows = [json.loads(line) for line in (wd / loop.run_files.METRICS_FILE).read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert [r["loss"] for r in rows] == [h["loss"] for h in part.history + rest.history]
  # The restored state scores images like the trained one.
  restored = loop.restore(wd)
  s1, m1 = predict_dataset("smcc", SMCC_CFG, full.state, DATA[:4], batch_size=4)
  s2, m2 = predict_dataset("smcc", restored.config, restored.state, DATA[:4], batch_size=4)
  np.testing.assert_array_equal(s1, s2)
  np.testing.assert_array_equal(m1, m2)


def test_zero_epochs_is_the_prepared_bank():
  r = _fit(epochs=0)
  assert r.history == [] and int(to_host(r.state.step)) == 0
  assert np.abs(np.asarray(to_host(r.state.centres))).max() > 0
  # The bank is the first batch's patches (fixed order: images 0..3), scored with the pretrained net.
  assert int(np.asarray(to_host(r.state.best_bank_valid)).sum()) == 4 * 8 * 8


def test_ramfae_schedule_spans_the_run_length():
  cfg = ramfae.Config(image_size=32, base_features=8, max_features=16)
  sched = ramfae.learning_rate_schedule(cfg, Run(total_steps=130))
  np.testing.assert_allclose(float(sched(0)), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(float(sched(65)), (1e-4 + 1e-6) / 2, rtol=1e-5)  # cosine midpoint
  np.testing.assert_allclose(float(sched(130)), 1e-6, rtol=1e-5)
