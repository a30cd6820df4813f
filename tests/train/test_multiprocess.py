"""Two CPU processes on localhost (jax.distributed) train in lockstep to identical params."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from conftest import run_jax_subprocess
from jaxad.train import loop

from train_helpers import CFG, images

WORKER = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize("127.0.0.1:{port}", num_processes=2, process_id={pid})
sys.path[:0] = ["tests", "tests/train"]
from train_helpers import CFG, images, digest
from jaxad import data as data_lib
from jaxad.train import loop
data = images(32)
r = loop.fit("conv_ae", CFG, data, seed=5, epochs=2, batch_size=8, workdir={workdir!r},
             save_every=4, show_progress=False)
restored = loop.restore({workdir!r}).state
first = next(data_lib.batches(data_lib.as_split(data), 8, seed=5, epoch=0,
                              process_index=jax.process_index(), process_count=2))
print("RESULT" + json.dumps({{
    "pid": jax.process_index(), "devices": jax.device_count(), "local": jax.local_device_count(),
    "loss": [h["loss"] for h in r.history], "params": digest(r.state.params),
    "state": digest(r.state), "restored": digest(restored),
    "first_rows": float(first["image"].sum()), "n_rows": int(first["image"].shape[0])}}))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_in_lockstep(tmp_path):
  port = _free_port()
  codes = [WORKER.format(port=port, pid=pid, workdir=str(tmp_path / "run")) for pid in (0, 1)]
  with ThreadPoolExecutor(2) as pool:
    outs = list(pool.map(lambda c: run_jax_subprocess(c, devices=2, timeout=400), codes))
  r0, r1 = (json.loads(o.split("RESULT", 1)[1]) for o in outs)
  assert (r0["pid"], r1["pid"]) == (0, 1)
  assert r0["devices"] == r1["devices"] == 4 and r0["local"] == 2
  # Each process read a different half of each global batch ...
  assert r0["n_rows"] == r1["n_rows"] == 4 and r0["first_rows"] != r1["first_rows"]
  # ... yet both saw the same global steps and ended with identical params/state.
  assert len(r0["loss"]) == 8 and r0["loss"] == r1["loss"]
  assert r0["params"] == r1["params"] and r0["state"] == r1["state"]
  assert r0["restored"] == r0["state"] == r1["restored"]  # the shared checkpoint is the final state
  # Same global batches as a single-process run: same loss curve (different reductions).
  single = loop.fit("conv_ae", CFG, images(32), seed=5, epochs=2, batch_size=8, show_progress=False)
  np.testing.assert_allclose(r0["loss"], [h["loss"] for h in single.history], rtol=0, atol=1e-5)
