"""Training engine: states, mesh and sharding, checkpoints, the loop and prediction.

* :mod:`jaxad.train.state` — ``TrainState``/``GANState`` pytrees (arrays only) and ``step_key``.
* :mod:`jaxad.train.mesh` — 1-D ``"data"`` mesh, replication, host copies.
* :mod:`jaxad.train.rng` — every random stream derived from one seed.
* :mod:`jaxad.train.checkpoint` — Orbax checkpoints; damaged ones are reported and skipped.
* :mod:`jaxad.train.compile` — per-backend XLA compiler options of the jitted steps.
* :mod:`jaxad.train.run_files` — ``run.json`` and ``metrics.jsonl`` of a workdir.
* :mod:`jaxad.train.loop` — ``fit`` (train any registered method) and ``restore``.
* :mod:`jaxad.train.predict` — ``predict_dataset`` (sharded ``predict`` + ``normalize``).

Submodules are imported explicitly (``from jaxad.train import loop``).
"""
