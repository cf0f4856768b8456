"""The parameters of a Gaussian mixture, as an immutable pytree.

A mixture of ``K`` components in ``D`` dimensions is described by

* ``weights``     ``(K,)``   mixing proportions, non-negative, summing to one;
* ``means``       ``(K, D)`` component means;
* ``covariances`` in the layout of its covariance model (:mod:`jaxgmm.models`):

  ==========================================  ===============  ==================================
  covariance_type                             shape            meaning
  ==========================================  ===============  ==================================
  ``full``, VVV, VEV, EVV, EEV, VVE, EVE, VEE  ``(K, D, D)``   one matrix per component
  ``tied``, EEE                               ``(D, D)``       one matrix shared by all
  ``diag``, VVI, EVI, VEI, EEI                ``(K, D)``       one diagonal (variances) per component
  ``spherical``, VII, EII (``V``, ``E``)      ``(K,)``         one variance per component
  ==========================================  ===============  ==================================

The covariance type is static pytree metadata (it selects code paths at trace
time); the three arrays are the leaves, so ``jax.jit``, ``jax.vmap``,
``jax.tree.map`` and ``jax.grad`` all see exactly the numbers.
:attr:`GMMParams.model` is the type's entry in the model table, and
:attr:`GMMParams.covariance_matrices` gives ``(K, D, D)`` matrices whatever
the model.

The Cholesky factor of the precision, in scikit-learn's convention (upper
triangular ``U`` with ``Σ⁻¹ = U Uᵀ``), is derived on demand by
:attr:`GMMParams.precisions_cholesky`; it is what the density needs.
"""

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxgmm.models import COVARIANCE_MODELS, COVARIANCE_TYPES, MODELS, CovarianceModel, get_model

__all__ = [
    "COVARIANCE_MODELS", "COVARIANCE_TYPES", "MODELS", "GMMParams", "check_covariance_type",
    "covariance_from_precision_cholesky", "covariance_shape", "log_det_precision_cholesky", "n_parameters",
    "precision_cholesky_from_covariance", "to_numpy",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GMMParams:
    """Parameters of a Gaussian mixture model (an immutable pytree).

    The constructor does not validate (it must accept tracers); use
    :meth:`from_arrays` for parameters that come from a user.

    Parameters
    ----------
    weights : array, shape (K,)
        Mixing proportions.
    means : array, shape (K, D)
        Component means.
    covariances : array
        In the model's layout: ``(K, D, D)`` for ``full`` (and mclust's
        full-matrix models), ``(D, D)`` for ``tied``/EEE, ``(K, D)`` for
        ``diag`` and the diagonal models, ``(K,)`` for ``spherical``, VII, EII.
    covariance_type : str
        scikit-learn's four (:data:`jaxgmm.COVARIANCE_TYPES`), mclust's 14
        (:data:`jaxgmm.COVARIANCE_MODELS`), or ``E``/``V`` for one feature. Static structure, not a traced value.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> p = GMMParams(jnp.array([0.5, 0.5]), jnp.zeros((2, 3)),
    ...               jnp.ones((2,)), "spherical")
    >>> p.precisions_cholesky.shape
    (2,)
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    covariance_type: str = dataclasses.field(default="full", metadata=dict(static=True))

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def n_features(self) -> int:
        return self.means.shape[-1]

    @property
    def dtype(self):
        return self.means.dtype

    @property
    def model(self) -> CovarianceModel:
        """The covariance model's entry in :data:`jaxgmm.models.MODELS`."""
        return get_model(self.covariance_type)

    @property
    def covariance_matrices(self) -> jax.Array:
        """The ``(K, D, D)`` covariance matrices, whatever the model's layout."""
        return self.model.storage.matrices(self.covariances, self.n_components, self.n_features)

    @property
    def precisions_cholesky(self) -> jax.Array:
        """Upper-triangular Cholesky factor ``U`` of each precision, ``Σ⁻¹ = U Uᵀ``.

        Same shape as ``covariances``; for ``diag`` and ``spherical`` it
        is ``1 / sqrt(variance)``.
        """
        return precision_cholesky_from_covariance(self.covariances, self.covariance_type)

    @property
    def precisions(self) -> jax.Array:
        """Precision matrices ``Σ⁻¹`` (inverse variances for diag/spherical)."""
        return self.model.storage.precisions(self.precisions_cholesky)

    def replace(self, **changes: Any) -> "GMMParams":
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_arrays(cls, weights, means, covariances, covariance_type: str = "full") -> "GMMParams":
        """Validated parameters from user arrays (numpy or JAX, not traced).

        Raises ``ValueError`` naming the problem: unknown covariance type,
        wrong shapes, non-finite values, weights that are negative or do not
        sum to 1, or covariances that are not symmetric positive definite.
        """
        from jaxgmm.validation import check_params

        return check_params(weights, means, covariances, covariance_type)


def check_covariance_type(covariance_type: str) -> str:
    """Return ``covariance_type`` or raise ``ValueError`` listing the valid ones."""
    get_model(covariance_type)
    return covariance_type


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple:
    """The shape of the covariances for a covariance type."""
    return get_model(covariance_type).storage.shape(n_components, n_features)


def precision_cholesky_from_covariance(covariances: jax.Array, covariance_type: str) -> jax.Array:
    """scikit-learn's ``precisions_cholesky_`` from covariances (see :class:`jaxgmm.models.Storage`)."""
    return get_model(covariance_type).storage.precision_cholesky(covariances)


def covariance_from_precision_cholesky(prec_chol: jax.Array, covariance_type: str) -> jax.Array:
    """Inverse of :func:`precision_cholesky_from_covariance`: ``Σ = (U Uᵀ)⁻¹``."""
    return get_model(covariance_type).storage.covariance_from_precision_cholesky(prec_chol)


def log_det_precision_cholesky(prec_chol: jax.Array, covariance_type: str, n_features: int) -> jax.Array:
    """``log det U`` per component (a scalar for ``tied``): half the log-determinant of the precision."""
    return get_model(covariance_type).storage.log_det_precision_cholesky(prec_chol, n_features)


def n_parameters(params_or_type, n_components: int | None = None, n_features: int | None = None) -> int:
    """Number of free parameters: covariances (mclust's ``nVarParams``), means and weights.

    Call as ``n_parameters(params)`` or ``n_parameters(covariance_type, K, D)``.
    For scikit-learn's four types this is ``GaussianMixture._n_parameters``.

    Examples
    --------
    >>> n_parameters("full", 3, 2), n_parameters("VEV", 3, 2)
    (17, 15)
    """
    if isinstance(params_or_type, GMMParams):
        model = params_or_type.model
        n_components, n_features = params_or_type.means.shape[-2:]
    else:
        model = get_model(params_or_type)
    return model.n_parameters(n_components, n_features)


def to_numpy(params: GMMParams) -> dict:
    """The parameters as a dict of numpy arrays (weights, means, covariances, precisions_cholesky)."""
    return {
        "weights": np.asarray(params.weights),
        "means": np.asarray(params.means),
        "covariances": np.asarray(params.covariances),
        "precisions_cholesky": np.asarray(params.precisions_cholesky),
        "covariance_type": params.covariance_type,
    }
