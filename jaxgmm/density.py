"""Log-densities of a Gaussian mixture, in log space throughout.

With ``U_k`` the upper Cholesky factor of the precision ``Σ_k⁻¹ = U_k U_kᵀ``,

    log N(x | μ_k, Σ_k) = -½ (D log 2π + ‖(x − μ_k)ᵀ U_k‖²) + log det U_k.

Mahalanobis terms are formed from the differences ``x − μ_k`` rather than by
expanding ``‖x‖² − 2xᵀμ + ‖μ‖²``, so data far from the origin do not cancel
catastrophically in float32. All functions take one parameter set and one
data set; batch them with ``jax.vmap``.
"""

import math

import jax
import jax.numpy as jnp

from jaxgmm.models import get_model
from jaxgmm.params import GMMParams


def squared_mahalanobis(diff: jax.Array, prec_chol: jax.Array, covariance_type: str) -> jax.Array:
    """``‖(x_n − μ_k)ᵀ U_k‖²`` from ``diff (N, K, D) = x_n − μ_k``; returns ``(N, K)``."""
    return get_model(covariance_type).storage.squared_mahalanobis(diff, prec_chol)


def component_log_norm(params: GMMParams, prec_chol: jax.Array) -> jax.Array:
    """The sample-independent part ``log α_k + log det U_k − (D/2) log 2π``, shape ``(K,)``."""
    n_features = params.means.shape[-1]
    log_det = params.model.storage.log_det_precision_cholesky(prec_chol, n_features)
    return jnp.log(params.weights) + log_det - 0.5 * n_features * math.log(2 * math.pi)


def component_log_prob_from_diff(diff: jax.Array, params: GMMParams, prec_chol: jax.Array) -> jax.Array:
    """``log α_k + log N(x_n | μ_k, Σ_k)`` from ``diff (N, K, D) = x_n − μ_k``; returns ``(N, K)``."""
    maha = squared_mahalanobis(diff, prec_chol, params.covariance_type)
    return component_log_norm(params, prec_chol) - 0.5 * maha


def _incomplete(params: GMMParams, X, missing: str):
    """``X`` as :class:`~jaxgmm.incomplete.IncompleteData` where it is to be marginalised and holds a NaN;
    otherwise ``None`` (complete rows)."""
    from jaxgmm.incomplete import IncompleteData, as_incomplete, check_missing_option

    check_missing_option(missing)
    if missing == "marginalize" or isinstance(X, IncompleteData):
        data = as_incomplete(X, None, params.covariance_type)
        if isinstance(data, IncompleteData):
            return data
    return None


def weighted_log_prob(params: GMMParams, X: jax.Array, missing: str = "raise") -> jax.Array:
    r"""Per-sample, per-component weighted log-densities ``log α_k + log N(x_n | μ_k, Σ_k)``.

    Parameters
    ----------
    params : GMMParams
    X : array, shape (N, D)
    missing : {"raise", "marginalize"}
        ``"marginalize"``: NaN entries are missing values, and each row's
        density is the marginal density of its observed values (a row with
        none observed gets ``log α_k``). See :func:`jaxgmm.e_step`.

    Returns
    -------
    array, shape (N, K)

    See Also
    --------
    log_prob : their log-sum-exp over components.
    predict_proba : the responsibilities, normalised across components.

    Notes
    -----
    .. math::

       \log \alpha_k + \log \mathcal{N}(x_n \mid \mu_k, \Sigma_k)
       = \log \alpha_k - \tfrac{1}{2}\bigl(D \log 2\pi + \log\lvert\Sigma_k\rvert
       + (x_n - \mu_k)^\top \Sigma_k^{-1} (x_n - \mu_k)\bigr)

    computed from the precision's Cholesky factor, never from
    :math:`\Sigma_k^{-1}` itself.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxgmm import GMMParams, weighted_log_prob
    >>> p = GMMParams(jnp.array([0.25, 0.75]), jnp.array([[0.0], [3.0]]), jnp.ones(2), "spherical")
    >>> weighted_log_prob(p, jnp.zeros((5, 1))).shape      # log α_k + log N(x_n | μ_k, Σ_k)
    (5, 2)
    """
    data = _incomplete(params, X, missing)
    if data is not None:
        from jaxgmm import missing_kernels

        return missing_kernels.weighted_log_prob(params, data)
    diff = X[:, None, :] - params.means[None, :, :]
    return component_log_prob_from_diff(diff, params, params.precisions_cholesky)


def log_prob(params: GMMParams, X: jax.Array, missing: str = "raise") -> jax.Array:
    r"""Per-sample log-density ``log p(x_n) = logsumexp_k (log α_k + log N(x_n | μ_k, Σ_k))``.

    Parameters
    ----------
    params : GMMParams
    X : array, shape (N, D)
    missing : {"raise", "marginalize"}
        ``"marginalize"``: the log-density of each row's observed values
        (0 for a row with none); see :func:`weighted_log_prob`.

    Returns
    -------
    array, shape (N,)

    See Also
    --------
    weighted_log_prob : the per-component terms.
    score : their (weighted) mean.

    Notes
    -----
    .. math::

       \log p(x_n) = \log \sum_{k=1}^K \alpha_k\, \mathcal{N}(x_n \mid \mu_k, \Sigma_k),

    evaluated with ``logsumexp`` so that no density underflows.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxgmm import GMMParams, log_prob
    >>> p = GMMParams(jnp.ones(1), jnp.zeros((1, 2)), jnp.eye(2)[None], "full")
    >>> float(log_prob(p, jnp.zeros((1, 2)))[0])  # -log(2π)
    -1.8378770...
    >>> float(log_prob(p, jnp.array([[0.0, jnp.nan]]), missing="marginalize")[0])  # -log(2π)/2
    -0.9189385...
    """
    return jax.nn.logsumexp(weighted_log_prob(params, X, missing), axis=-1)


def score_samples(params: GMMParams, X: jax.Array, missing: str = "raise") -> jax.Array:
    """Per-sample log-density, shape ``(N,)``; scikit-learn's name for :func:`log_prob`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxgmm import GMMParams, score_samples
    >>> p = GMMParams(jnp.ones(1), jnp.zeros((1, 1)), jnp.ones(1), "spherical")
    >>> round(float(score_samples(p, jnp.zeros((1, 1)))[0]), 4)   # log N(0 | 0, 1) = −log(2π)/2
    -0.9189
    """
    return log_prob(params, X, missing)


def predict_proba(params: GMMParams, X: jax.Array, missing: str = "raise") -> jax.Array:
    """Responsibilities ``p(z_n = k | x_n)``, shape ``(N, K)``, computed in log space (with
    ``missing="marginalize"`` given the observed values; the weights for a row with none).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxgmm import GMMParams, predict_proba
    >>> p = GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.0], [3.0]]), jnp.ones(2), "spherical")
    >>> proba = predict_proba(p, jnp.array([[1.5], [4.0]]))     # (N, K), rows sum to 1
    >>> [round(float(v), 3) for v in proba[0]]                 # halfway: even odds
    [0.5, 0.5]
    """
    return jax.nn.softmax(weighted_log_prob(params, X, missing), axis=-1)


def predict(params: GMMParams, X: jax.Array, missing: str = "raise") -> jax.Array:
    """Most probable component of each sample, shape ``(N,)`` (int).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxgmm import GMMParams, predict
    >>> p = GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.0], [3.0]]), jnp.ones(2), "spherical")
    >>> predict(p, jnp.array([[-1.0], [1.0], [4.0]])).tolist()
    [0, 0, 1]
    """
    return jnp.argmax(weighted_log_prob(params, X, missing), axis=-1)


def score(params: GMMParams, X: jax.Array, sample_weight: jax.Array | None = None, missing: str = "raise") -> jax.Array:
    """Mean per-sample log-likelihood (weighted mean when ``sample_weight (N,)`` is given); with
    ``missing="marginalize"`` of the observed values, over the rows with at least one.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxgmm import GMMParams, score
    >>> p = GMMParams(jnp.ones(1), jnp.zeros((1, 1)), jnp.ones(1), "spherical")
    >>> round(float(score(p, jnp.array([[-1.0], [1.0]]))), 4)     # −log(2π)/2 − 1/2
    -1.4189
    """
    data = _incomplete(params, X, missing)
    lp = log_prob(params, X if data is None else data)
    weight = jnp.ones_like(lp) if sample_weight is None else jnp.asarray(sample_weight, lp.dtype)
    if data is not None:
        weight = jnp.where(data.any_observed(), weight, 0.0)
    return jnp.sum(jnp.where(weight > 0, weight * lp, 0.0)) / jnp.sum(weight)
