"""Covariance models: one entry per model in one table.

:mod:`jaxgmm.models.table` holds the table (scikit-learn's four names and
mclust's fourteen), :mod:`jaxgmm.models.storage` the four layouts the
kernels work on, :mod:`jaxgmm.models.msteps` the constrained M-steps and
:mod:`jaxgmm.models.eigen` the eigen-decomposition coordinates
``Σ_k = λ_k D_k A_k D_kᵀ``.
"""

from jaxgmm.models.storage import Storage
from jaxgmm.models.table import (
    COVARIANCE_MODELS,
    COVARIANCE_TYPES,
    MODELS,
    UNIVARIATE_MODELS,
    CovarianceModel,
    get_model,
)

__all__ = [
    "COVARIANCE_MODELS",
    "COVARIANCE_TYPES",
    "MODELS",
    "UNIVARIATE_MODELS",
    "CovarianceModel",
    "Storage",
    "get_model",
]
