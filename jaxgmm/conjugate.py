"""Conjugate priors on a Gaussian mixture and their posterior given the sufficient statistics.

The prior (:class:`ConjugatePrior`) is the Normal–(inverse-)Wishart of
Fraley & Raftery (2007) and of Bishop (2006, §10.2) on each component, with
a Dirichlet on the weights::

    Σ_k          ~ inverse Wishart(ν, Λ)          (precision: Wishart)
    μ_k | Σ_k    ~ N(μ₀, Σ_k / κ)
    π            ~ Dirichlet(α, …, α)

Given the weighted statistics of a component (count ``n_k``, sample mean
``x̄_k``, scatter ``W_k`` about it — :class:`jaxgmm.SuffStats`), the
posterior is again Normal–Wishart (:func:`conjugate_posterior`)::

    β_k = κ + n_k
    m_k = (κ μ₀ + n_k x̄_k) / β_k
    ν_k = ν + n_k
    Ψ_k = Λ + W_k + κ n_k / β_k · (x̄_k − μ₀)(x̄_k − μ₀)ᵀ

MAP-EM (``prior=`` on :func:`jaxgmm.m_step` and the drivers) stores its
mode, each covariance model with mclust's pseudo-counts
(:mod:`jaxgmm.models.priors`); variational Bayes (:mod:`jaxgmm.vb`) stores
its expectation. This module is the one place both take it from.

Units of the scale: ``Λ`` is added to the statistics' scatters, so it has
their layout — ``(D, D)`` for full and tied storage, the ``(D,)`` diagonal for
diagonal storage, and for spherical storage a scalar added to the *trace*
(mclust's ``ς``; scikit-learn's spherical ``covariance_prior`` is ``ς / D``).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.matmul_precision import float32_matmuls
from jaxgmm.models import get_model
from jaxgmm.stats import SuffStats
from jaxgmm.validation import float_dtype, is_traced

__all__ = ["ConjugatePrior", "NormalWishartPosterior", "check_prior", "conjugate_posterior", "default_prior", "log_prior"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ConjugatePrior:
    """A Normal–(inverse-)Wishart prior on every component and a Dirichlet on the weights (a pytree).

    Every field is a traced leaf: a new prior of the same shapes does not
    recompile, and priors can be ``vmap``-ped over.

    Parameters
    ----------
    mean : array, shape (D,)
        ``μ₀``, the prior mean of the component means.
    shrinkage : scalar
        ``κ ≥ 0``: the prior's weight on ``μ₀``, in rows. 0: no prior on the means.
    dof : scalar
        ``ν``, the degrees of freedom of the inverse Wishart (mclust's ``dof``).
    scale : array
        ``Λ``, in the units of the statistics' scatters (see the module
        docstring): ``(D, D)`` for full and tied storage, ``(D,)`` for
        diagonal storage, a scalar (added to the trace) for spherical storage.
    weight_concentration : scalar
        ``α`` of the symmetric Dirichlet on the weights; 1 adds nothing
        (mclust's default), larger values pull the weights towards ``1/K``.

    Notes
    -----
    The constructor does not validate (it must accept tracers); the drivers
    check a prior against the data with :func:`jaxgmm.conjugate.check_prior`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> prior = ConjugatePrior(mean=jnp.zeros(2), shrinkage=0.01, dof=4.0, scale=jnp.eye(2))
    >>> prior.replace(dof=5.0).dof
    5.0
    """

    mean: jax.Array
    shrinkage: jax.Array
    dof: jax.Array
    scale: jax.Array
    weight_concentration: jax.Array = 1.0

    def replace(self, **changes) -> "ConjugatePrior":
        """A copy with some fields changed; a new value takes the dtype of the array it replaces (so a
        Python float in place of an array does not make a compiled function trace again)."""
        for name, value in changes.items():
            old = getattr(self, name)
            if isinstance(old, jax.Array) and jnp.issubdtype(old.dtype, jnp.floating):
                changes[name] = jnp.asarray(value, old.dtype)
        return dataclasses.replace(self, **changes)


class NormalWishartPosterior(NamedTuple):
    """The Normal–Wishart posterior of each component given its statistics.

    Attributes
    ----------
    counts : array, shape (K,)
        ``n_k`` (with scikit-learn's ``10·eps``, so an empty component stays finite).
    mean_precision : array, shape (K,)
        ``β_k = κ + n_k``.
    means : array, shape (K, D)
        ``m_k = (κ μ₀ + n_k x̄_k) / β_k``.
    degrees_of_freedom : array, shape (K,)
        ``ν_k = ν + n_k``.
    scatter : array
        ``Ψ_k = s_k Λ + W_k + n_k·reg_covar·I + κ n_k/β_k (x̄_k − μ₀)(x̄_k − μ₀)ᵀ`` in the
        layout of the statistics' scatters (summed over components for ``tied``).
    """

    counts: jax.Array
    mean_precision: jax.Array
    means: jax.Array
    degrees_of_freedom: jax.Array
    scatter: jax.Array


@float32_matmuls
def conjugate_posterior(
    stats: SuffStats, prior: ConjugatePrior, *, reg_covar=0.0, scale_weights: jax.Array | None = None
) -> NormalWishartPosterior:
    """The Normal–Wishart posterior of each component given its sufficient statistics (pure, jit/vmap-safe).

    Parameters
    ----------
    stats : SuffStats
        Weighted statistics of ``K`` components (any centres).
    prior : ConjugatePrior
        Its ``scale`` in the layout of ``stats.scatters`` (see the module docstring).
    reg_covar : scalar
        ``n_k·reg_covar·I`` joins each scatter, as in :func:`jaxgmm.m_step` and
        scikit-learn's ``BayesianGaussianMixture``.
    scale_weights : array, shape (K,), optional
        ``s_k``, how many times the prior's scale joins component ``k``'s scatter
        (default 1 each; ``1/K`` each adds it once to a model that shares it).

    Returns
    -------
    NormalWishartPosterior

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxgmm import stats_from_responsibilities
    >>> X = jnp.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    >>> stats = stats_from_responsibilities(X, jnp.ones((4, 1)), jnp.zeros((1, 2)), "full")
    >>> prior = ConjugatePrior(mean=jnp.zeros(2), shrinkage=4.0, dof=3.0, scale=jnp.eye(2))
    >>> post = conjugate_posterior(stats, prior)
    >>> post.means.round(4).tolist(), post.degrees_of_freedom.round(4).tolist()   # (4·0 + 4·(1, 1)) / 8
    ([[0.5, 0.5]], [7.0])
    >>> post.scatter[0].round(4).tolist()   # I + W + (4·4/8) (1, 1)(1, 1)ᵀ
    [[7.0, 2.0], [2.0, 7.0]]
    """
    storage = get_model(stats.covariance_type).storage
    dtype = stats.sums.dtype
    n_features = stats.sums.shape[-1]
    counts = stats.counts + 10 * jnp.finfo(dtype).eps
    delta = stats.sums / counts[:, None]
    sample_means = stats.centers + delta
    shrinkage = jnp.asarray(prior.shrinkage, dtype)
    mean_precision = shrinkage + counts
    prior_mean = jnp.asarray(prior.mean, dtype)
    means = (shrinkage * prior_mean + counts[:, None] * sample_means) / mean_precision[:, None]
    # W_k + n_k·reg·I from the moments about the centres, in the scatters' units.
    regularised = storage.add_to_diagonal(storage.ml_covariances(stats.scatters, counts, delta), reg_covar)
    within = storage.scatter_of_covariances(counts, regularised, n_features)
    offset = sample_means - prior_mean
    between = storage.shift_scatter(shrinkage * counts / mean_precision, jnp.zeros_like(offset), offset)
    if scale_weights is None:
        scale_weights = jnp.ones_like(counts)
    prior_scatter = storage.per_component_sum(scale_weights, jnp.asarray(prior.scale, dtype))
    return NormalWishartPosterior(
        counts=counts,
        mean_precision=mean_precision,
        means=means,
        degrees_of_freedom=jnp.asarray(prior.dof, dtype) + counts,
        scatter=within + between + prior_scatter,
    )


def stack_priors(priors, dtype) -> ConjugatePrior:
    """Priors of the same shapes stacked on a new leading axis (one per data set, or per K), in ``dtype``."""
    return jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(leaf, dtype) for leaf in leaves]), *priors)


# ----------------------------------------------------------------------------- MAP-EM (mclust's rules)


def map_prior_terms(covariance_type: str, prior: ConjugatePrior, active: jax.Array | None, n_components: int,
                    n_features: int, dtype):
    """The model's prior rule (:mod:`jaxgmm.models.priors`) for each component: the scale weights ``s_k``
    and the extra counts ``a_k``, both ``(K,)`` and 0 for switched-off components. Raises ``ValueError``
    (while tracing) for a model without a prior."""
    rule = get_model(covariance_type).check_prior_supported()
    if active is None:
        active = jnp.ones(n_components, bool)
    n_active = jnp.sum(active).astype(dtype)
    has_mean_prior = (jnp.asarray(prior.shrinkage, dtype) > 0).astype(dtype)
    extra = rule.pseudo_count(jnp.asarray(prior.dof, dtype), has_mean_prior, n_active, n_features)
    return (jnp.where(active, rule.scale_share(n_active), 0.0).astype(dtype),
            jnp.where(active, extra, 0.0).astype(dtype))


@float32_matmuls
def log_prior(params, prior: ConjugatePrior, active: jax.Array | None = None) -> jax.Array:
    """The log prior density of ``params`` that MAP-EM maximises with the log-likelihood (up to a constant).

    ``Σ_k [(α − 1) log π_k − ½ (a_k log|Σ_k| + s_k tr(Λ Σ_k⁻¹) + κ (μ_k − μ₀)ᵀ Σ_k⁻¹ (μ_k − μ₀))]`` over
    the active components, with the model's ``a_k``, ``s_k`` (:mod:`jaxgmm.models.priors`): the
    Normal–inverse-Wishart kernel without its normalising constant, which depends on the
    hyperparameters only. MAP-EM never decreases ``log-likelihood + log_prior``.

    Parameters
    ----------
    params : GMMParams
    prior : ConjugatePrior
    active : array of bool, shape (K,), optional
        Components that count (default: those of positive weight).

    Returns
    -------
    array, shape ()

    Examples
    --------
    >>> import jax, jax.numpy as jnp, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> prior = jaxgmm.default_prior(X, 2)
    >>> params = jaxgmm.fit(jax.random.key(0), X, 2, prior=prior).params
    >>> bool(jnp.isfinite(jaxgmm.log_prior(params, prior)))
    True
    """
    storage = params.model.storage
    dtype = params.means.dtype
    n_components, n_features = params.means.shape
    if active is None:
        active = params.weights > 0
    scale_weights, extra = map_prior_terms(params.covariance_type, prior, active, n_components, n_features, dtype)
    prec_chol = params.precisions_cholesky
    log_det = jnp.broadcast_to(-2 * storage.log_det_precision_cholesky(prec_chol, n_features), (n_components,))
    trace = storage.trace_with_precision(storage.per_component_sum(scale_weights, jnp.asarray(prior.scale, dtype)),
                                         prec_chol)
    offset = params.means - jnp.asarray(prior.mean, dtype)
    mahalanobis = storage.squared_mahalanobis(offset[None], prec_chol)[0]
    log_weights = jnp.log(jnp.where(active, params.weights, 1.0))
    concentration = jnp.asarray(prior.weight_concentration, dtype)
    return (concentration - 1) * jnp.sum(log_weights) - 0.5 * (
        jnp.sum(extra * log_det) + jnp.sum(trace)
        + jnp.asarray(prior.shrinkage, dtype) * jnp.sum(jnp.where(active, mahalanobis, 0.0))
    )


# ----------------------------------------------------------------------------- edges (numpy, before tracing)


def default_prior(X, n_components: int, covariance_type: str = "full", *, sample_weight=None) -> ConjugatePrior:
    """mclust's ``defaultPrior``: a weak prior centred on the data.

    ``shrinkage = 0.01``, ``mean`` = the data's mean, ``dof = D + 2``, and the
    scale from the data's covariance ``S`` (denominator ``n − 1``, as R's
    ``var``) shrunk by ``K^(−2/D)`` — the spread of one of ``K`` equal
    clusters: ``K^(−2/D) S`` for full and tied storage (its diagonal when
    ``n ≤ D``), and for diagonal and spherical storage the scalar
    ``K^(−2/D) tr(S) / D`` (on every diagonal entry, or added to the trace).
    No prior on the weights (``weight_concentration = 1``).

    Parameters
    ----------
    X : array-like, shape (N, D)
    n_components : int
    covariance_type : str
        Any model with a prior (not VEE, EVE, VVE, EVV).
    sample_weight : array-like, shape (N,), optional
        Frequency weights: the mean and covariance of the weighted rows, ``n = Σ w``.

    Returns
    -------
    ConjugatePrior
        In JAX's float dtype for ``X``.

    Examples
    --------
    >>> import jaxgmm
    >>> prior = default_prior(jaxgmm.load_faithful(), 3, "VVV")
    >>> round(float(prior.shrinkage), 6), float(prior.dof), prior.scale.shape
    (0.01, 4.0, (2, 2))
    """
    from jaxgmm.validation import check_array, check_n_components, check_sample_weight

    n_components = check_n_components(n_components)
    model = get_model(covariance_type)
    model.check_prior_supported()
    X_checked = check_array(X, min_samples=2)
    if is_traced(X_checked):
        raise ValueError("default_prior needs concrete data (numpy), not a traced array.")
    dtype = X_checked.dtype
    data = np.asarray(X_checked, np.float64)
    n_rows, n_features = data.shape
    weights = np.ones(n_rows) if sample_weight is None else np.asarray(
        check_sample_weight(sample_weight, n_rows, dtype, min_positive=2), np.float64)
    total = weights.sum()
    mean = weights @ data / total
    centred = data - mean
    covariance = (weights[:, None] * centred).T @ centred / (total - 1)
    factor = float(n_components) ** (-2.0 / n_features)
    storage = model.storage
    if storage.is_matrix:
        scale = factor * (covariance if total > n_features else np.diag(np.diag(covariance)))
    else:
        scale = factor * np.trace(covariance) / n_features
        if storage.kind == "diag":
            scale = np.full(n_features, scale)
    return ConjugatePrior(mean=jnp.asarray(mean, dtype), shrinkage=jnp.asarray(0.01, dtype),
                          dof=jnp.asarray(n_features + 2.0, dtype), scale=jnp.asarray(scale, dtype),
                          weight_concentration=jnp.asarray(1.0, dtype))


def _finite_scalar(value, name: str, minimum: float | None = None) -> float:
    try:
        number = float(np.asarray(value, np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"prior.{name} must be a number; got {value!r}.") from None
    if not np.isfinite(number):
        raise ValueError(f"prior.{name} must be finite; got {number}.")
    if minimum is not None and number < minimum:
        raise ValueError(f"prior.{name} must be >= {minimum:g}; got {number:g}.")
    return number


def check_prior(prior, covariance_type: str, n_components: int, n_features: int, dtype, *,
                for_map: bool = True) -> ConjugatePrior:
    """A validated copy of ``prior`` in ``dtype`` for ``K`` components of ``covariance_type`` on ``D`` features.

    Checks the shapes (a scalar ``scale`` is accepted for matrix and diagonal
    storage, meaning ``scale·I``; a ``(D, D)`` matrix for diagonal and spherical
    storage, reduced as their scatters are: to its diagonal, or its trace), finiteness, ``shrinkage ≥ 0``, a positive
    semi-definite (or non-negative) scale, and for MAP-EM (``for_map``) that
    the model takes a prior, that ``weight_concentration ≥ 1`` (below 1 the
    posterior has no mode) and that ``dof`` leaves every pseudo-count
    non-negative. Raises ``ValueError`` naming the problem.
    """
    if not isinstance(prior, ConjugatePrior):
        raise TypeError(f"prior must be a jaxgmm.ConjugatePrior, 'default' or None; got {type(prior).__name__}.")
    model = get_model(covariance_type)
    if for_map:
        rule = model.check_prior_supported()
    leaves = [prior.mean, prior.shrinkage, prior.dof, prior.scale, prior.weight_concentration]
    if is_traced(*leaves):
        return prior
    mean = np.asarray(prior.mean, np.float64)
    if mean.shape != (n_features,) or not np.all(np.isfinite(mean)):
        raise ValueError(f"prior.mean must be a finite array of shape ({n_features},); got shape {mean.shape}.")
    shrinkage = _finite_scalar(prior.shrinkage, "shrinkage", 0.0)
    dof = _finite_scalar(prior.dof, "dof")
    concentration = _finite_scalar(prior.weight_concentration, "weight_concentration", 1.0 if for_map else None)
    if not for_map and concentration <= 0:
        raise ValueError(f"prior.weight_concentration must be > 0; got {concentration:g}.")
    storage = model.storage
    scale = np.asarray(prior.scale, np.float64)
    expected = {"full": (n_features, n_features), "tied": (n_features, n_features), "diag": (n_features,),
                "spherical": ()}[storage.kind]
    if scale.shape == () and expected != ():
        scale = scale * (np.eye(n_features) if storage.is_matrix else np.ones(n_features))
    elif scale.shape == (n_features, n_features) and not storage.is_matrix:
        # A matrix reduced as the layout's scatters are: its diagonal, or its trace.
        if not np.all(np.isfinite(scale)) or np.linalg.eigvalsh((scale + scale.T) / 2).min() < -1e-10 * max(
                1.0, np.abs(scale).max()):
            raise ValueError("prior.scale is not a finite positive semi-definite matrix.")
        scale = np.diag(scale) if storage.kind == "diag" else np.trace(scale)
    if scale.shape != expected:
        raise ValueError(f"prior.scale for covariance_type={covariance_type!r} must have shape {expected} "
                         f"(or be a scalar); got {scale.shape}.")
    if not np.all(np.isfinite(scale)):
        raise ValueError("prior.scale contains NaN or infinite values.")
    if storage.is_matrix:
        if not np.allclose(scale, scale.T, rtol=1e-6, atol=1e-12 * max(1.0, np.abs(scale).max())):
            raise ValueError("prior.scale is not symmetric.")
        if np.linalg.eigvalsh(scale).min() < -1e-10 * max(1.0, np.abs(scale).max()):
            raise ValueError("prior.scale is not positive semi-definite.")
    elif np.any(scale < 0):
        raise ValueError("prior.scale must be non-negative.")
    if for_map:
        extra = float(rule.pseudo_count(dof, float(shrinkage > 0), float(n_components), n_features))
        if extra < 0:
            raise ValueError(
                f"prior.dof = {dof:g} gives covariance_type={covariance_type!r} a negative pseudo-count "
                f"({extra:g} rows per component); increase dof.")
    return ConjugatePrior(mean=jnp.asarray(mean, dtype), shrinkage=jnp.asarray(shrinkage, dtype),
                          dof=jnp.asarray(dof, dtype), scale=jnp.asarray(scale, dtype),
                          weight_concentration=jnp.asarray(concentration, dtype))
