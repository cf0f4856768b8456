"""Weighted sufficient statistics: the seam between the E-step and the M-step.

They add up over rows, so sample weights, zero-weight padding, row blocks,
streamed data and data sharded over devices all reduce to summing
statistics before one M-step.
"""

import dataclasses

import jax
import jax.numpy as jnp

from jaxgmm.matmul_precision import float32_matmuls
from jaxgmm.models import get_model


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SuffStats:
    """Weighted sufficient statistics of each component (an additive pytree).

    With responsibilities ``r_nk``, sample weights ``w_n`` and centres ``c_k``:

    * ``counts``   ``(K,)``    ``Σ_n w_n r_nk``
    * ``sums``     ``(K, D)``  ``Σ_n w_n r_nk (x_n − c_k)``
    * ``scatters`` ``Σ_n w_n r_nk (x_n − c_k)(x_n − c_k)ᵀ`` reduced to what the
      covariance model's layout needs: ``(K, D, D)`` full, ``(D, D)`` tied
      (summed over components), ``(K, D)`` diag (diagonal only), ``(K,)``
      spherical (trace). Every covariance model's M-step is a function of
      these (mclust's models included).
    * ``centers``  ``(K, D)``  the ``c_k``; statistics with the same centres add.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxgmm import stats_from_responsibilities
    >>> X = jnp.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    >>> resp = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> stats = stats_from_responsibilities(X, resp, jnp.zeros((2, 2)), "diag")
    >>> stats.counts.tolist()
    [2.0, 2.0]
    """

    counts: jax.Array
    sums: jax.Array
    scatters: jax.Array
    centers: jax.Array
    covariance_type: str = dataclasses.field(default="full", metadata=dict(static=True))

    def __add__(self, other: "SuffStats") -> "SuffStats":
        """Statistics of the union of two row sets (same centres assumed)."""
        return dataclasses.replace(
            self,
            counts=self.counts + other.counts,
            sums=self.sums + other.sums,
            scatters=self.scatters + other.scatters,
        )


@float32_matmuls
def stats_from_responsibilities(
    X: jax.Array, weighted_resp: jax.Array, centers: jax.Array, covariance_type: str
) -> SuffStats:
    """Sufficient statistics of rows ``X (N, D)`` with weighted responsibilities ``(N, K)``.

    ``weighted_resp[n, k] = w_n r_nk``; ``centers (K, D)`` are the ``c_k``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxgmm import m_step, stats_from_responsibilities
    >>> X = jnp.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    >>> resp = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])   # hard labels, weight 1
    >>> stats = stats_from_responsibilities(X, resp, X[jnp.array([0, 2])], "diag")  # moments about a row of each
    >>> params = m_step(stats, reg_covar=0.0)
    >>> import numpy as np
    >>> np.round(np.asarray(params.means, float), 3).tolist(), np.round(np.asarray(params.covariances, float), 3).tolist()
    ([[1.0, 0.0], [11.0, 10.0]], [[1.0, 0.0], [1.0, 0.0]])
    """
    diff = X[:, None, :] - centers[None, :, :]
    return stats_from_diff(diff, weighted_resp, centers, covariance_type)


def stats_from_diff(diff, weighted_resp, centers, covariance_type) -> SuffStats:
    """:class:`SuffStats` of differences ``diff (N, K, D) = x_n − c_k`` with weighted responsibilities ``(N, K)``."""
    return SuffStats(
        counts=jnp.sum(weighted_resp, axis=0),
        sums=jnp.sum(weighted_resp[:, :, None] * diff, axis=0),  # a sum over rows: see Storage.scatter
        scatters=get_model(covariance_type).storage.scatter(weighted_resp, diff),
        centers=centers,
        covariance_type=covariance_type,
    )


@float32_matmuls
def recenter(stats: SuffStats, centers: jax.Array) -> SuffStats:
    """The same statistics about new centres ``c'`` ``(K, D)``.

    With ``e_k = c_k − c'_k``: ``S1' = S1 + n e`` and
    ``S2' = S2 + S1 eᵀ + e S1ᵀ + n e eᵀ``, reduced as the covariance type
    stores ``S2`` (summed over components for tied, diagonal for diag,
    trace for spherical).
    """
    e = stats.centers - centers
    n, s1 = stats.counts, stats.sums
    extra = get_model(stats.covariance_type).storage.shift_scatter(n, s1, e)
    return dataclasses.replace(stats, sums=s1 + n[:, None] * e, scatters=stats.scatters + extra, centers=centers)


@float32_matmuls
def complete_log_likelihood(stats: SuffStats, params, log_weights: jax.Array | None = None) -> jax.Array:
    """``Σ_n w_n Σ_k r_nk [log α_k + log N(x_n | μ_k, Σ_k)]`` from the statistics alone (any centres).

    EM's ``Q`` (times ``Σ w``) for the responsibilities that made ``stats`` and the parameters
    ``params``; ``log_weights (K,)`` replace ``log params.weights`` (variational Bayes' expected
    log-weights, which need not sum to one). The Mahalanobis terms come from the scatters about
    ``params.means``: ``Σ_n w r_nk ‖U_kᵀ(x_n − μ_k)‖² = tr(S_k Σ_k⁻¹)``.
    """
    import math

    storage = get_model(stats.covariance_type).storage
    n_components, n_features = stats.sums.shape
    if log_weights is None:
        log_weights = jnp.log(params.weights)
    prec_chol = params.precisions_cholesky
    about_means = stats.scatters + storage.shift_scatter(stats.counts, stats.sums, stats.centers - params.means)
    log_det = jnp.broadcast_to(storage.log_det_precision_cholesky(prec_chol, n_features), (n_components,))
    per_component = jnp.where(stats.counts > 0, stats.counts * (
        log_weights + log_det - 0.5 * n_features * math.log(2 * math.pi)), 0.0)
    return jnp.sum(per_component) - 0.5 * jnp.sum(storage.trace_with_precision(about_means, prec_chol))
