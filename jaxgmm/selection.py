"""Information criteria for choosing the number of components and covariance type."""

import math

import jax

from jaxgmm.density import score
from jaxgmm.params import GMMParams, n_parameters


def bic(params: GMMParams, X: jax.Array) -> jax.Array:
    """Bayesian information criterion, ``-2 log L + p log N`` (lower is better).

    ``X (N, D)``; ``p`` is :func:`jaxgmm.n_parameters`. Same definition as
    scikit-learn's ``GaussianMixture.bic``.
    """
    n_samples = X.shape[0]
    return -2 * score(params, X) * n_samples + n_parameters(params) * math.log(n_samples)


def aic(params: GMMParams, X: jax.Array) -> jax.Array:
    """Akaike information criterion, ``-2 log L + 2p`` (lower is better); ``X (N, D)``."""
    return -2 * score(params, X) * X.shape[0] + 2 * n_parameters(params)
