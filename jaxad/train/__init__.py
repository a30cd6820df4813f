"""Training engine: train state, device mesh and sharding, checkpoints, loops.

* :mod:`jaxad.train.state` — ``TrainState``/``GANState`` pytrees and ``step_key``.
* :mod:`jaxad.train.mesh` — 1-D ``"data"`` mesh, batch sharding, replication.
* :mod:`jaxad.train.rng` — every random stream derived from one seed.
* :mod:`jaxad.train.checkpoint` — Orbax ``CheckpointManager`` wrapper.
* :mod:`jaxad.train.compile` — per-backend XLA compiler options of the jitted steps.
* :mod:`jaxad.train.loop` — ``fit`` (train any registered method), ``predict_dataset``,
  ``restore_state``.

Submodules are imported explicitly (``from jaxad.train import loop``).
"""
