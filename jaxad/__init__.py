"""jaxad: unsupervised industrial visual anomaly detection in JAX/Flax.

Importing the top-level package is cheap on purpose: it exposes the version and
nothing else. Sub-packages (``jaxad.losses``, ``jaxad.metrics``, ``jaxad.data`` ...)
are imported explicitly by the user, so ``import jaxad`` never pulls in
TensorFlow, PyTorch or any dataset code.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
