"""The engine with memory-bank methods (``method.fit``) and run-length-dependent configs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jaxad.models import smcc
from jaxad.train import loop
from jaxad.train.mesh import to_host

from train_helpers import images, leaves

# Random ResNet18 at 32 px, 8x8 patch grid, one self-update epoch (as tests/models/test_smcc.py).
SMCC_CFG = smcc.Config(image_size=32, backbone="resnet18", layers=("layer1", "layer2"),
                       pretrained=False, feature_stride=4, batch_size=4, gmm_k=3, epochs=1,
                       knn_k=2, sigma=1.0, learning_rate=1e-4)
DATA = images(8, seed=1)  # 2 full batches of 4


def test_engine_calls_method_fit_and_resume_restores_it(tmp_path):
  a = loop.fit("smcc", SMCC_CFG, DATA, seed=0, batch_size=4, workdir=tmp_path / "run",
               show_progress=False)
  centres = np.asarray(to_host(a.state.centres))
  # fit ran: GMM centres were computed (init leaves them at zero) and W=1 epoch of 2 steps ran.
  assert np.abs(centres).max() > 0 and np.all(np.isfinite(centres))
  assert [h["step"] for h in a.history] == [1, 2]
  assert all(np.isfinite(h["loss"]) for h in a.history)
  rows = [json.loads(line) for line in (tmp_path / "run" / loop.METRICS_FILE).read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2]
  # Resume: the checkpoint already holds the fitted state; nothing is refitted.
  c = loop.fit("smcc", SMCC_CFG, DATA, seed=0, batch_size=4, workdir=tmp_path / "run",
               show_progress=False)
  assert c.history == []
  for x, y in zip(leaves(a.state), leaves(c.state)):
    np.testing.assert_array_equal(x, y)
  # The restored state scores images like the fitted one.
  restored, info = loop.restore_state("smcc", tmp_path / "run")
  assert info["method"] == "smcc"
  s1, m1 = loop.predict_dataset("smcc", a.state, DATA[:4], batch_size=4)
  s2, m2 = loop.predict_dataset("smcc", restored, DATA[:4], batch_size=4)
  np.testing.assert_array_equal(s1, s2)
  np.testing.assert_array_equal(m1, m2)


def test_method_fit_rejects_engine_epochs_and_max_steps():
  with pytest.raises(ValueError, match="its own `fit`"):
    loop.fit("smcc", SMCC_CFG, DATA, batch_size=4, epochs=2, show_progress=False)
  with pytest.raises(ValueError, match="max_steps"):
    loop.fit("smcc", SMCC_CFG, DATA, batch_size=4, max_steps=1, show_progress=False)


@dataclasses.dataclass(frozen=True)
class _Sched:
  decay_steps: int | None = None
  learning_rate: float = 1e-3


@dataclasses.dataclass(frozen=True)
class _NoSched:
  learning_rate: float = 1e-3


def test_with_run_length_fills_only_unset_decay_steps():
  assert loop.with_run_length(_Sched(), 130) == _Sched(decay_steps=130)
  assert loop.with_run_length(_Sched(decay_steps=7), 130) == _Sched(decay_steps=7)
  assert loop.with_run_length(_NoSched(), 130) == _NoSched()


def test_ramfae_cli_config_anneals_over_the_run_length():
  from experiments.configs import ramfae as ramfae_cli
  from jaxad.models import ramfae
  cfg = ramfae_cli.get_config()
  assert cfg.decay_steps is None
  with pytest.raises(ValueError, match="decay_steps is None"):
    ramfae.learning_rate_schedule(cfg)
  sched = ramfae.learning_rate_schedule(loop.with_run_length(cfg, 130))
  np.testing.assert_allclose(float(sched(0)), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(float(sched(65)), (1e-4 + 1e-6) / 2, rtol=1e-5)  # cosine midpoint
  np.testing.assert_allclose(float(sched(130)), 1e-6, rtol=1e-5)
