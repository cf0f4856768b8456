"""The parameters of a Gaussian mixture, as an immutable pytree.

A mixture of ``K`` components in ``D`` dimensions is described by

* ``weights``     ``(K,)``   mixing proportions, non-negative, summing to one;
* ``means``       ``(K, D)`` component means;
* ``covariances`` with the shape of scikit-learn's covariance type:

  ============  ===============  =====================================
  type          shape            meaning
  ============  ===============  =====================================
  ``full``      ``(K, D, D)``    one full covariance matrix per component
  ``tied``      ``(D, D)``       one full covariance shared by all
  ``diag``      ``(K, D)``       one diagonal (variances) per component
  ``spherical`` ``(K,)``         one variance per component
  ============  ===============  =====================================

The covariance type is static pytree metadata (it selects code paths at trace
time); the three arrays are the leaves, so ``jax.jit``, ``jax.vmap``,
``jax.tree.map`` and ``jax.grad`` all see exactly the numbers.

The Cholesky factor of the precision, in scikit-learn's convention (upper
triangular ``U`` with ``Σ⁻¹ = U Uᵀ``), is derived on demand by
:attr:`GMMParams.precisions_cholesky`; it is what the density needs.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.matmul_precision import float32_matmuls

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GMMParams:
    """Parameters of a Gaussian mixture model (an immutable pytree).

    Parameters
    ----------
    weights : array, shape (K,)
        Mixing proportions.
    means : array, shape (K, D)
        Component means.
    covariances : array
        ``(K, D, D)`` for ``full``, ``(D, D)`` for ``tied``, ``(K, D)`` for
        ``diag`` and ``(K,)`` for ``spherical``.
    covariance_type : {"full", "tied", "diag", "spherical"}
        Static structure, not a traced value.

    The constructor does not validate (it must accept tracers); use
    :meth:`from_arrays` for parameters that come from a user.

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
    def precisions_cholesky(self) -> jax.Array:
        """Upper-triangular Cholesky factor ``U`` of each precision, ``Σ⁻¹ = U Uᵀ``.

        Same shape as :attr:`covariances`; for ``diag`` and ``spherical`` it
        is ``1 / sqrt(variance)``.
        """
        return precision_cholesky_from_covariance(self.covariances, self.covariance_type)

    @property
    @float32_matmuls
    def precisions(self) -> jax.Array:
        """Precision matrices ``Σ⁻¹`` (inverse variances for diag/spherical)."""
        u = self.precisions_cholesky
        if self.covariance_type in ("full", "tied"):
            return u @ jnp.swapaxes(u, -1, -2)
        return u**2

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
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"Invalid covariance_type {covariance_type!r}: expected one of {COVARIANCE_TYPES}."
        )
    return covariance_type


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple:
    """The shape of the covariances for a covariance type."""
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[check_covariance_type(covariance_type)]


def precision_cholesky_from_covariance(covariances: jax.Array, covariance_type: str) -> jax.Array:
    """scikit-learn's ``precisions_cholesky_`` from covariances.

    For full/tied: with ``Σ = L Lᵀ`` (``L`` lower triangular), ``U = L⁻ᵀ`` is
    upper triangular and ``Σ⁻¹ = U Uᵀ``. A covariance that is not positive
    definite gives NaN here; inputs are checked at the edges.
    """
    if covariance_type in ("full", "tied"):
        chol = jnp.linalg.cholesky(covariances)
        eye = jnp.broadcast_to(jnp.eye(chol.shape[-1], dtype=chol.dtype), chol.shape)
        inv_chol = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
        return jnp.swapaxes(inv_chol, -1, -2)
    return jax.lax.rsqrt(covariances)


@float32_matmuls
def covariance_from_precision_cholesky(prec_chol: jax.Array, covariance_type: str) -> jax.Array:
    """Inverse of :func:`precision_cholesky_from_covariance`: ``Σ = (U Uᵀ)⁻¹``."""
    if covariance_type in ("full", "tied"):
        eye = jnp.broadcast_to(jnp.eye(prec_chol.shape[-1], dtype=prec_chol.dtype), prec_chol.shape)
        # Σ = U⁻ᵀ U⁻¹ with U upper triangular.
        inv_u = jax.scipy.linalg.solve_triangular(prec_chol, eye, lower=False)
        return jnp.swapaxes(inv_u, -1, -2) @ inv_u
    return 1.0 / prec_chol**2


def log_det_precision_cholesky(prec_chol: jax.Array, covariance_type: str, n_features: int) -> jax.Array:
    """``log det U`` per component (a scalar for ``tied``): half the log-determinant of the precision."""
    if covariance_type in ("full", "tied"):
        return jnp.sum(jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)
    if covariance_type == "diag":
        return jnp.sum(jnp.log(prec_chol), axis=-1)
    return n_features * jnp.log(prec_chol)


def n_parameters(params_or_type, n_components: int | None = None, n_features: int | None = None) -> int:
    """Number of free parameters, as scikit-learn's ``GaussianMixture._n_parameters``.

    Call as ``n_parameters(params)`` or ``n_parameters(covariance_type, K, D)``.
    """
    if isinstance(params_or_type, GMMParams):
        covariance_type = params_or_type.covariance_type
        n_components, n_features = params_or_type.means.shape[-2:]
    else:
        covariance_type = check_covariance_type(params_or_type)
    k, d = int(n_components), int(n_features)
    cov_params = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
    return cov_params + k * d + k - 1


def to_numpy(params: GMMParams) -> dict:
    """The parameters as a dict of numpy arrays (weights, means, covariances, precisions_cholesky)."""
    return {
        "weights": np.asarray(params.weights),
        "means": np.asarray(params.means),
        "covariances": np.asarray(params.covariances),
        "precisions_cholesky": np.asarray(params.precisions_cholesky),
        "covariance_type": params.covariance_type,
    }
