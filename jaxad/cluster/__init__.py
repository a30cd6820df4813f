"""Clustering and memory banks in JAX: k-means, GMM-EM, coresets and exact kNN.

Every public function validates its (concrete) inputs in Python, then runs one jitted core with
static shapes. The ``*_core`` functions take padded arrays and static sizes and can be called
inside other jitted code (import them from the submodules, e.g.
``from jaxad.cluster.kmeans import kmeans_core``; note that ``jaxad.cluster.kmeans`` and
``jaxad.cluster.knn`` as attributes of this package are the functions, not the modules).
Randomness is key-first: the same ``jax.random.key`` gives bit-identical results.

This package imports only JAX and NumPy (no torch, TensorFlow or scikit-learn).
"""

from jaxad.cluster.coreset import (Coreset, greedy_coreset, greedy_coreset_core, sensitivity_coreset,
                                   sensitivity_coreset_core)
from jaxad.cluster.gmm import GMMParams, GMMResult, gmm_em, gmm_em_core, log_prob, log_prob_core
from jaxad.cluster.kmeans import KMeansResult, kmeans, kmeans_core, kmeans_plusplus
from jaxad.cluster.knn import KNNResult, knn, knn_core

__all__ = [
  "Coreset", "GMMParams", "GMMResult", "KMeansResult", "KNNResult", "gmm_em", "gmm_em_core",
  "greedy_coreset", "greedy_coreset_core", "kmeans", "kmeans_core", "kmeans_plusplus", "knn",
  "knn_core", "log_prob", "log_prob_core", "sensitivity_coreset", "sensitivity_coreset_core",
]
