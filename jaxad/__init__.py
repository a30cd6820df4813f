"""jaxad: unsupervised industrial visual anomaly detection in JAX/Flax.

Importing the top-level package is cheap on purpose: it exposes the version and
nothing else. Sub-packages (``jaxad.losses``, ``jaxad.metrics``, ``jaxad.data`` ...)
are imported explicitly by the user, so ``import jaxad`` never pulls in
TensorFlow, PyTorch or any dataset code.

One side effect: JAX's INFO line "Unable to initialize backend 'tpu': ... Failed to open
libtpu.so ..." (JAX probes for a TPU on every machine; absl-based programs print INFO
lines) is dropped. Every other JAX message, including an installed TPU or GPU backend
that fails, still shows.
"""

import logging as _logging

__version__ = "0.1.0"

__all__ = ["__version__"]


def _drop_absent_tpu_probe(record: _logging.LogRecord) -> bool:
  """Logging filter: False for JAX's "libtpu is not installed" INFO record."""
  if record.levelno > _logging.INFO:
    return True
  try:
    text = record.getMessage()
  except Exception:  # A malformed record is not ours to judge.
    return True
  return not (text.startswith("Unable to initialize backend 'tpu'")
              and "Failed to open libtpu" in text)


_logging.getLogger("jax._src.xla_bridge").addFilter(_drop_absent_tpu_probe)
