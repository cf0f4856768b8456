"""An unconstrained parameterisation of :class:`~jaxgmm.GMMParams`, for gradient methods.

Gradient ascent needs coordinates in which every real vector is a valid
mixture. :func:`to_unconstrained` maps ``GMMParams`` to
:class:`UnconstrainedParams` and :func:`from_unconstrained` maps back:

* **weights** → ``logits (K,)``, ``α = softmax(logits)``. Softmax ignores a
  common shift ``logits + c``; the shift is pinned by
  ``logits = log α − mean_k log α`` (the logits sum to zero), which keeps all
  components symmetric (no reference component).
* **means** stay as they are, ``(K, D)``.
* **full / tied**: the upper Cholesky factor ``U`` of the precision
  (``Σ⁻¹ = U Uᵀ``, scikit-learn's convention) with its diagonal replaced by
  ``log diag U``, packed row by row (``numpy.triu_indices``) into
  ``(K, D(D+1)/2)`` (full) or ``(D(D+1)/2,)`` (tied). Any real vector gives
  an upper-triangular ``U`` with positive diagonal, hence a positive-definite
  ``Σ``; ``log det U`` is the sum of the log-diagonal entries.
* **diag / spherical**: log-variances ``log σ²``, ``(K, D)`` or ``(K,)``.
* **mclust's constrained models** (all but VVV, EEE, VVI, VII, which are
  the four above): the eigen-decomposition coordinates of
  :mod:`jaxgmm.models.eigen` — log-volumes, centred log-shapes and
  orientation matrices, shared where the model shares them — a dict pytree.

The two maps are exact inverses: ``from_unconstrained(to_unconstrained(p))``
equals ``p`` for every ``p`` with positive weights, and
``to_unconstrained(from_unconstrained(u))`` equals ``u`` for every ``u``
whose logits sum to zero (for other ``u`` it returns ``u`` with the logits'
mean subtracted — the same mixture).
"""

import dataclasses

import jax
import jax.numpy as jnp

from jaxgmm.models import get_model
from jaxgmm.models.storage import pack_cholesky, unpack_cholesky
from jaxgmm.params import GMMParams

__all__ = ["UnconstrainedParams", "from_unconstrained", "pack_cholesky", "precisions_cholesky", "to_unconstrained",
           "unpack_cholesky"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class UnconstrainedParams:
    """A Gaussian mixture in unconstrained coordinates (an immutable pytree).

    Parameters
    ----------
    logits : array, shape (K,)
        ``weights = softmax(logits)``; :func:`to_unconstrained` returns
        logits that sum to zero.
    means : array, shape (K, D)
    cov_coords : array
        Packed upper Cholesky factor of the precision with log diagonal,
        ``(K, D(D+1)/2)`` for ``full`` and ``(D(D+1)/2,)`` for ``tied``;
        log-variances ``(K, D)`` for ``diag`` and ``(K,)`` for ``spherical``;
        mclust's models keep the eigen-decomposition coordinates of
        :mod:`jaxgmm.models.eigen`.
    covariance_type : str
        scikit-learn's four or one of mclust's 14 (:data:`~jaxgmm.COVARIANCE_MODELS`). Static structure.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> u = UnconstrainedParams(jnp.zeros(2), jnp.zeros((2, 3)), jnp.zeros((2, 6)), "full")
    >>> from_unconstrained(u).covariances.shape
    (2, 3, 3)
    """

    logits: jax.Array
    means: jax.Array
    cov_coords: jax.Array
    covariance_type: str = dataclasses.field(default="full", metadata=dict(static=True))

    def replace(self, **changes) -> "UnconstrainedParams":
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def to_unconstrained(params: GMMParams) -> UnconstrainedParams:
    """Unconstrained coordinates of ``params`` (see the module docstring for the math).

    Parameters
    ----------
    params : GMMParams
        Weights must be positive (their logarithms are coordinates).

    Returns
    -------
    UnconstrainedParams
        Logits summing to zero, the means, and the covariance coordinates.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxgmm import GMMParams
    >>> p = GMMParams(jnp.array([0.25, 0.75]), jnp.zeros((2, 1)), jnp.array([1.0, 4.0]), "spherical")
    >>> u = to_unconstrained(p)
    >>> [round(float(v), 4) for v in u.cov_coords]  # log-variances
    [0.0, 1.3863]
    >>> bool(jnp.allclose(from_unconstrained(u).weights, p.weights))
    True
    """
    log_weights = jnp.log(params.weights)
    logits = log_weights - jnp.mean(log_weights, axis=-1, keepdims=True)
    cov_coords = params.model.coords_from_covariances(params.covariances, params.n_components, params.n_features)
    return UnconstrainedParams(logits, params.means, cov_coords, params.covariance_type)


def precisions_cholesky(uparams: UnconstrainedParams) -> jax.Array:
    """The precision Cholesky factor (``GMMParams.precisions_cholesky``'s shape) from unconstrained coordinates.

    ``U`` for full/tied, ``exp(−½ log σ²) = 1/σ`` for diag/spherical; no
    matrix inverse is involved.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> u = UnconstrainedParams(jnp.zeros(2), jnp.zeros((2, 1)), jnp.log(jnp.array([1.0, 4.0])), "spherical")
    >>> precisions_cholesky(u).tolist()
    [1.0, 0.5]
    """
    n_components, n_features = uparams.means.shape[-2:]
    return get_model(uparams.covariance_type).precision_cholesky_from_coords(uparams.cov_coords, n_components,
                                                                             n_features)


def from_unconstrained(uparams: UnconstrainedParams) -> GMMParams:
    """The mixture that unconstrained coordinates describe; inverse of :func:`to_unconstrained`.

    Parameters
    ----------
    uparams : UnconstrainedParams
        Any real values.

    Returns
    -------
    GMMParams
        ``weights = softmax(logits)``, the means, and ``Σ = (U Uᵀ)⁻¹``
        (full/tied) or ``exp(log σ²)`` (diag/spherical).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> u = UnconstrainedParams(jnp.zeros(2), jnp.zeros((2, 2)), jnp.zeros(3), "tied")
    >>> p = from_unconstrained(u)
    >>> p.weights.tolist(), p.covariances.tolist()  # U = I gives Σ = I
    ([0.5, 0.5], [[1.0, 0.0], [0.0, 1.0]])
    """
    weights = jax.nn.softmax(uparams.logits, axis=-1)
    n_components, n_features = uparams.means.shape[-2:]
    covariances = get_model(uparams.covariance_type).covariances_from_coords(uparams.cov_coords, n_components,
                                                                             n_features)
    return GMMParams(weights, uparams.means, covariances, uparams.covariance_type)
