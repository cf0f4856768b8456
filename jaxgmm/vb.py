"""Variational Bayes for Gaussian mixtures (scikit-learn's ``BayesianGaussianMixture``) as pure JAX functions.

The model puts the conjugate prior of :mod:`jaxgmm.conjugate` on every
component — ``Λ_k ~ Wishart``, ``μ_k | Λ_k ~ N(m₀, (β₀ Λ_k)⁻¹)`` — and on the
weights either a Dirichlet distribution (``"dirichlet_distribution"``,
concentration ``γ``) or a truncated Dirichlet process in its stick-breaking
form (``"dirichlet_process"``: ``π_k = v_k Π_{j<k} (1 − v_j)``,
``v_k ~ Beta(1, γ)``). The mean-field posterior
``q(Z) q(π) Π_k q(μ_k, Λ_k)`` (Bishop 2006, §10.2; Blei & Jordan 2006) is
found by coordinate ascent, one pair of steps per iteration:

* :func:`vb_e_step` — responsibilities from the expected log-weights and
  log-densities, reduced to the same :class:`~jaxgmm.SuffStats` as EM (so
  the E-step's fast kernels, sample weights and zero-weight padding carry
  over);
* :func:`vb_m_step` — the posterior of every component from those statistics
  (:func:`jaxgmm.conjugate.conjugate_posterior`, the same update MAP-EM uses)
  and of the weights.

Everything follows scikit-learn's formulas, including its treatment of the
tied, diagonal and spherical types (one Wishart-like factor with the data's
``D`` for each; the tied posterior is the average of the components'), so
from the same starting responsibilities every iterate equals scikit-learn's
in float64. Lower bounds are scikit-learn's: the evidence lower bound
without the terms that depend only on the prior and the data's size
(:func:`jaxgmm.vb.lower_bound`; :func:`elbo` adds them back for full covariances).

Precision: an exact match of scikit-learn's iterates needs float64
(``jax_enable_x64``; tested to 1e-8, measured 1e-11). In float32, jaxgmm's
default, 30 iterations on Old Faithful from the same start stay within about
1e-4 of scikit-learn's parameters (relative to the largest) and 5e-6 of its
bound (tested in the float32 pass).

Only structure is static (covariance type, weight-prior type, shapes,
``max_iter``); the prior's values, ``tol`` and ``reg_covar`` are traced.
"""

import dataclasses
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln

from jaxgmm.conjugate import ConjugatePrior, check_prior, conjugate_posterior, stack_priors
from jaxgmm.em import e_step
from jaxgmm.matmul_precision import float32_matmuls
from jaxgmm.models import get_model
from jaxgmm.params import COVARIANCE_TYPES, GMMParams
from jaxgmm.stats import SuffStats, complete_log_likelihood
from jaxgmm.xla_options import jit

__all__ = [
    "VBFitResult", "VBPosterior", "VBResult", "WEIGHT_PRIORS", "bayesian_mixture_prior", "effective_n_components",
    "elbo", "fit_vb", "fit_vb_many", "lower_bound", "vb_e_step", "vb_initialize", "vb_loop", "vb_m_step",
]

WEIGHT_PRIORS = ("dirichlet_process", "dirichlet_distribution")
"""The two priors on the weights: stick-breaking (scikit-learn's default) and a Dirichlet distribution."""


def check_vb_covariance_type(covariance_type: str) -> str:
    """Variational Bayes follows scikit-learn's treatment of its four covariance types (not mclust's models)."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"variational Bayes takes scikit-learn's covariance types {COVARIANCE_TYPES}; got "
                         f"{covariance_type!r}.")
    return covariance_type


def check_weight_prior(weight_prior: str) -> str:
    if weight_prior not in WEIGHT_PRIORS:
        raise ValueError(f"Invalid weight_prior {weight_prior!r}: expected one of {WEIGHT_PRIORS}.")
    return weight_prior


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VBPosterior:
    """The variational posterior of a Bayesian Gaussian mixture (a pytree; scikit-learn's fitted attributes).

    Attributes
    ----------
    weight_concentration : array, shape (K,) or (2, K)
        Dirichlet: the concentrations ``α_k``. Dirichlet process: the Beta
        parameters ``(a_k, b_k)`` of the sticks (scikit-learn's tuple, stacked).
    mean_precision : array, shape (K,)
        ``β_k``: the means' posterior is ``N(m_k, (β_k Λ_k)⁻¹)``.
    means : array, shape (K, D)
        ``m_k``.
    degrees_of_freedom : array, shape (K,)
        ``ν_k`` of the Wishart (equal entries for ``tied``, whose posterior is shared).
    covariances : array
        scikit-learn's ``covariances_``, ``(ν_k W_k)⁻¹`` — the inverse of the
        expected precision — in the covariance type's layout.
    covariance_type : str
        ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"`` (static).
    weight_prior : str
        ``"dirichlet_process"`` or ``"dirichlet_distribution"`` (static).

    Examples
    --------
    >>> import jax, jaxgmm
    >>> post = jaxgmm.fit_vb(jax.random.key(0), jaxgmm.load_faithful(), 4).posterior
    >>> post.means.shape, post.weight_concentration.shape, round(float(post.weights.sum()), 5)
    ((4, 2), (2, 4), 1.0)
    """

    weight_concentration: jax.Array
    mean_precision: jax.Array
    means: jax.Array
    degrees_of_freedom: jax.Array
    covariances: jax.Array
    covariance_type: str = dataclasses.field(default="full", metadata=dict(static=True))
    weight_prior: str = dataclasses.field(default="dirichlet_process", metadata=dict(static=True))

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def n_features(self) -> int:
        return self.means.shape[-1]

    @property
    def precisions_cholesky(self) -> jax.Array:
        """scikit-learn's ``precisions_cholesky_`` (of ``covariances``)."""
        return get_model(self.covariance_type).storage.precision_cholesky(self.covariances)

    @property
    def weights(self) -> jax.Array:
        """scikit-learn's ``weights_``: the expected weights, ``(K,)``."""
        concentration = self.weight_concentration
        if self.weight_prior == "dirichlet_distribution":
            return concentration / jnp.sum(concentration)
        a, b = concentration
        total = a + b
        remaining = jnp.concatenate([jnp.ones_like(a[:1]), jnp.cumprod(b / total)[:-1]])
        weights = a / total * remaining
        return weights / jnp.sum(weights)

    @property
    def expected_log_weights(self) -> jax.Array:
        """``E_q[log π_k]``, ``(K,)``."""
        concentration = self.weight_concentration
        if self.weight_prior == "dirichlet_distribution":
            return digamma(concentration) - digamma(jnp.sum(concentration))
        a, b = concentration
        digamma_total = digamma(a + b)
        stick_rest = jnp.concatenate([jnp.zeros_like(a[:1]), jnp.cumsum(digamma(b) - digamma_total)[:-1]])
        return digamma(a) - digamma_total + stick_rest

    @property
    def log_weight_terms(self) -> jax.Array:
        """The variational E-step's per-component constants, ``(K,)``:
        ``E[log π_k] + ½(E[log|Λ_k|] − log|ν_k W_k| − D/β_k)`` (scikit-learn's ``_estimate_log_weights`` plus
        the sample-free part of its ``_estimate_log_prob``), so that
        ``E[log π_k + log N(x | μ_k, Λ_k⁻¹)] = log_weight_terms_k + log N(x | m_k, covariances_k)``."""
        nu, d = self.degrees_of_freedom, self.n_features
        log_lambda = d * math.log(2.0) + jnp.sum(digamma(_half_dof_terms(nu, d)), axis=0)
        return self.expected_log_weights - 0.5 * d * jnp.log(nu) + 0.5 * (log_lambda - d / self.mean_precision)

    @property
    def params(self) -> GMMParams:
        """The point estimate scikit-learn samples from: expected weights, ``m_k`` and ``covariances``."""
        return GMMParams(self.weights, self.means, self.covariances, self.covariance_type)

    @property
    def variational_params(self) -> GMMParams:
        """``GMMParams(exp(log_weight_terms), means, covariances)``: its weighted log-densities are the
        variational E-step's, ``E[log π_k + log N(x | μ_k, Λ_k⁻¹)]`` — what scikit-learn's ``predict``,
        ``predict_proba`` and ``score_samples`` use (its weights need not sum to one)."""
        return GMMParams(jnp.exp(self.log_weight_terms), self.means, self.covariances, self.covariance_type)


def _half_dof_terms(degrees_of_freedom, n_features: int):
    """``½(ν_k − i)`` for ``i = 0..D−1``, shape ``(D, K)``."""
    return 0.5 * (degrees_of_freedom - jnp.arange(n_features, dtype=degrees_of_freedom.dtype)[:, None])


def vb_e_step(posterior: VBPosterior, X: jax.Array, sample_weight: jax.Array | None = None, *,
              block_size: int | None = None) -> tuple[SuffStats, jax.Array]:
    """Variational E-step: responsibilities ``r_nk ∝ exp(E[log π_k] + E[log N(x_n | μ_k, Λ_k⁻¹)])`` as statistics.

    Parameters
    ----------
    posterior : VBPosterior
    X : array, shape (N, D)
    sample_weight : array, shape (N,), optional
    block_size : int, optional
        Rows per block, as in :func:`jaxgmm.e_step` (static).

    Returns
    -------
    stats : SuffStats
        The weighted statistics of the responsibilities (about ``posterior.means``).
    entropy : array, shape ()
        ``−Σ_n w_n Σ_k r_nk log r_nk``, the responsibilities' part of the lower bound.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, jaxgmm
    >>> X = jnp.asarray(jaxgmm.load_faithful())
    >>> prior = jaxgmm.bayesian_mixture_prior(X, 3)
    >>> stats, entropy = jaxgmm.vb_e_step(jaxgmm.vb_initialize(jax.random.key(0), X, 3, prior), X)
    >>> round(float(stats.counts.sum())), bool(entropy >= 0)     # soft counts sum to N; an entropy is ≥ 0
    (272, True)
    """
    # The expectation is a Gaussian log-density with the covariances (ν_k W_k)⁻¹ plus per-component
    # constants: EM's E-step with those constants as (normalised) weights.
    log_weights = jax.nn.log_softmax(posterior.log_weight_terms)
    pseudo = GMMParams(jnp.exp(log_weights), posterior.means, posterior.covariances, posterior.covariance_type)
    stats, log_norm_sum = e_step(pseudo, X, sample_weight, block_size=block_size)
    # Σ w Σ r log r = Σ w Σ r (log w_k + log N) − Σ w log Σ_k(w_k N): both from what the E-step returned.
    return stats, log_norm_sum - complete_log_likelihood(stats, pseudo)


@float32_matmuls
def vb_m_step(stats: SuffStats, prior: ConjugatePrior, *, reg_covar=1e-6,
              weight_prior: str = "dirichlet_process") -> VBPosterior:
    """Variational M-step: the posterior of the weights and of each component from the statistics.

    Parameters
    ----------
    stats : SuffStats
        Of scikit-learn's four covariance types.
    prior : ConjugatePrior
        ``weight_concentration`` is ``γ``; ``shrinkage`` ``β₀``; ``dof`` ``ν₀``;
        ``scale`` the inverse of the Wishart's scale, ``W₀⁻¹``, in the
        statistics' units (scikit-learn's spherical ``covariance_prior`` times ``D``).
    reg_covar : scalar
        ``n_k·reg_covar·I`` joins each scatter, as in scikit-learn.
    weight_prior : {"dirichlet_process", "dirichlet_distribution"}
        Static.

    Returns
    -------
    VBPosterior

    Examples
    --------
    >>> import jax, jax.numpy as jnp, jaxgmm
    >>> X = jnp.asarray(jaxgmm.load_faithful())
    >>> prior = jaxgmm.bayesian_mixture_prior(X, 3)
    >>> stats, _ = jaxgmm.vb_e_step(jaxgmm.vb_initialize(jax.random.key(0), X, 3, prior), X)
    >>> post = jaxgmm.vb_m_step(stats, prior)
    >>> post.degrees_of_freedom.shape, bool(jnp.allclose(post.degrees_of_freedom, prior.dof + stats.counts))
    ((3,), True)
    """
    check_weight_prior(weight_prior)
    storage = get_model(stats.covariance_type).storage
    post = conjugate_posterior(stats, prior, reg_covar=reg_covar)
    counts = post.counts
    gamma = jnp.asarray(prior.weight_concentration, counts.dtype)
    if weight_prior == "dirichlet_process":
        tail = jnp.concatenate([jnp.cumsum(counts[::-1])[::-1][1:], jnp.zeros_like(counts[:1])])  # Σ_{j>k} n_j
        concentration = jnp.stack([1.0 + counts, gamma + tail])
    else:
        concentration = gamma + counts
    dof = post.degrees_of_freedom
    # Ψ_k / ν_k; the tied posterior pools the components' (scikit-learn's ν₀ + N/K).
    covariances = storage.ml_covariances(post.scatter, dof, jnp.zeros_like(post.means))
    if not storage.per_component:
        dof = jnp.broadcast_to(jnp.mean(dof), dof.shape)
    return VBPosterior(concentration, post.mean_precision, post.means, dof, covariances, stats.covariance_type,
                       weight_prior)


def _log_beta(a, b):
    """``log B(a, b)`` as a sum of ``gammaln``: ``jax.scipy.special.betaln`` loses ~1e-6 in float64 near 8."""
    return gammaln(a) + gammaln(b) - gammaln(a + b)


def lower_bound(posterior: VBPosterior, entropy: jax.Array) -> jax.Array:
    """scikit-learn's lower bound ``L(q)``: the ELBO without the terms that depend only on the prior and ``N``.

    For the responsibilities of one E-step (``entropy`` from :func:`vb_e_step`)
    and the posterior the M-step made from them:
    ``−Σ r log r − Σ_k log B(W_k, ν_k) − log C(q(π)) − (D/2) Σ_k log β_k``
    (scikit-learn's ``_compute_lower_bound``; ``B`` the Wishart normaliser
    without its ``π`` term, ``C`` the Dirichlet's, or the sticks' Beta normalisers).
    Coordinate ascent never decreases it.
    """
    storage = get_model(posterior.covariance_type).storage
    d, k = posterior.n_features, posterior.n_components
    nu = posterior.degrees_of_freedom
    log_det_chol = storage.log_det_precision_cholesky(posterior.precisions_cholesky, d) - 0.5 * d * jnp.log(nu)
    log_det_chol = jnp.broadcast_to(log_det_chol, (k,))  # tied: K equal factors, as scikit-learn counts them
    log_wishart = -jnp.sum(nu * log_det_chol + nu * d * 0.5 * math.log(2.0)
                           + jnp.sum(gammaln(_half_dof_terms(nu, d)), axis=0))
    concentration = posterior.weight_concentration
    if posterior.weight_prior == "dirichlet_process":
        log_norm_weight = -jnp.sum(_log_beta(concentration[0], concentration[1]))
    else:
        log_norm_weight = gammaln(jnp.sum(concentration)) - jnp.sum(gammaln(concentration))
    return entropy - log_wishart - log_norm_weight - 0.5 * d * jnp.sum(jnp.log(posterior.mean_precision))


def elbo(posterior: VBPosterior, entropy: jax.Array, prior: ConjugatePrior, total_weight) -> jax.Array:
    """The evidence lower bound itself, ``E_q[log p(X, Z, π, μ, Λ) − log q(Z, π, μ, Λ)]`` (full covariances).

    :func:`jaxgmm.vb.lower_bound` plus what scikit-learn leaves out: the prior's
    normalisers ``log C(γ)`` (or ``K log γ`` for the sticks), ``K log B(W₀, ν₀)``,
    ``(D K / 2) log β₀``, the Wishart's ``π`` terms and ``−(N D / 2) log 2π``.
    Valid where the posterior is the M-step's from the responsibilities of
    ``entropy`` with ``reg_covar=0`` (as after every iteration of :func:`vb_loop`).
    Tested against a Monte Carlo estimate. Raises ``ValueError`` (while
    tracing) for the other covariance types, whose scikit-learn posteriors are
    not a variational family of this model.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, jaxgmm
    >>> X = jnp.asarray(jaxgmm.load_faithful())
    >>> prior = jaxgmm.bayesian_mixture_prior(X, 3)
    >>> stats, entropy = jaxgmm.vb_e_step(jaxgmm.vb_initialize(jax.random.key(0), X, 3, prior), X)
    >>> bool(jnp.isfinite(jaxgmm.elbo(jaxgmm.vb_m_step(stats, prior), entropy, prior, X.shape[0])))
    True
    """
    if get_model(posterior.covariance_type).storage.kind != "full":
        raise ValueError("elbo is defined for covariance_type='full'; use lower_bound for the others.")
    d, k = posterior.n_features, posterior.n_components
    dtype = posterior.means.dtype
    gamma, beta0, nu0 = (jnp.asarray(v, dtype) for v in (prior.weight_concentration, prior.shrinkage, prior.dof))
    if posterior.weight_prior == "dirichlet_process":
        weight_norm = k * jnp.log(gamma)  # −K log B(1, γ)
    else:
        weight_norm = gammaln(k * gamma) - k * gammaln(gamma)
    _, log_det_scale = jnp.linalg.slogdet(jnp.asarray(prior.scale, dtype))
    log_wishart_prior = (0.5 * nu0 * log_det_scale - 0.5 * nu0 * d * math.log(2.0)
                         - jnp.sum(gammaln(0.5 * (nu0 - jnp.arange(d, dtype=dtype)))))
    return (lower_bound(posterior, entropy) + weight_norm + k * log_wishart_prior
            + 0.5 * d * k * jnp.log(beta0) - 0.5 * jnp.asarray(total_weight, dtype) * d * math.log(2 * math.pi))


class VBResult(NamedTuple):
    """What :func:`vb_loop` returns.

    Attributes
    ----------
    posterior : VBPosterior
        After the last M-step.
    lower_bound : array, shape ()
        scikit-learn's ``lower_bound_``: the bound of ``posterior`` with the
        responsibilities of the E-step that made it (``history[n_iter − 1]``).
    n_iter : array, shape (), int
    converged : array, shape (), bool
        True iff the last change of the bound was finite and below ``tol``
        (scikit-learn's rule: the total bound, not per sample).
    history : array, shape (max_iter,)
        ``history[t]``: the bound after iteration ``t``'s M-step, with the
        responsibilities of its E-step (scikit-learn's ``lower_bounds_``);
        NaN from ``n_iter`` on. Never decreases.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, jaxgmm
    >>> X = jnp.asarray(jaxgmm.load_faithful())
    >>> prior = jaxgmm.bayesian_mixture_prior(X, 3)
    >>> result = jaxgmm.vb_loop(jaxgmm.vb_initialize(jax.random.key(0), X, 3, prior), X, prior, max_iter=5, tol=0.0)
    >>> int(result.n_iter), result.history.shape, bool(result.lower_bound == result.history[4])
    (5, (5,), True)
    """

    posterior: VBPosterior
    lower_bound: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    history: jax.Array


@partial(jit, static_argnames=("max_iter", "block_size"))
def vb_loop(
    posterior: VBPosterior,
    X: jax.Array,
    prior: ConjugatePrior,
    *,
    max_iter: int = 100,
    tol: float | jax.Array = 1e-3,
    reg_covar: float | jax.Array = 1e-6,
    sample_weight: jax.Array | None = None,
    block_size: int | None = None,
    previous_lower_bound: float | jax.Array = -np.inf,
) -> VBResult:
    """Coordinate ascent on the variational posterior until the lower bound changes by less than ``tol``.

    ``jit`` around a ``lax.while_loop``; under ``vmap`` (restarts, data sets)
    a member that has converged stops changing while the others go on.

    Parameters
    ----------
    posterior : VBPosterior
        The start (e.g. :func:`vb_initialize`).
    X : array, shape (N, D)
    prior : ConjugatePrior
        As in :func:`vb_m_step` (traced).
    max_iter : int
        Static (the history's length).
    tol, reg_covar : scalar
        Traced. ``tol`` applies to the total lower bound, as in scikit-learn.
    sample_weight : array, shape (N,), optional
    block_size : int, optional
        Static; see :func:`jaxgmm.e_step`.
    previous_lower_bound : scalar
        What the first change is measured from (scikit-learn's warm start).

    Returns
    -------
    VBResult

    Examples
    --------
    >>> import jax, jaxgmm
    >>> from jaxgmm.vb import bayesian_mixture_prior, vb_initialize, vb_loop
    >>> X = jax.numpy.asarray(jaxgmm.load_faithful(), "float32")
    >>> prior = bayesian_mixture_prior(X, 6)
    >>> start = vb_initialize(jax.random.key(0), X, 6, prior)
    >>> result = vb_loop(start, X, prior, max_iter=500)
    >>> bool(result.converged), int((result.posterior.weights > 0.01).sum()) in (2, 3)
    (True, True)
    """
    dtype = X.dtype
    if sample_weight is None:
        sample_weight = jnp.ones(X.shape[0], dtype)
    sample_weight = jnp.asarray(sample_weight, dtype)
    tol = jnp.asarray(tol, dtype)
    reg_covar = jnp.asarray(reg_covar, dtype)

    def cond(state):
        n_iter, _, bound, converged, _ = state
        return (n_iter < max_iter) & ~converged & ((n_iter == 0) | jnp.isfinite(bound))

    def body(state):
        n_iter, post, previous, _, history = state
        stats, entropy = vb_e_step(post, X, sample_weight, block_size=block_size)
        new = vb_m_step(stats, prior, reg_covar=reg_covar, weight_prior=post.weight_prior)
        bound = lower_bound(new, entropy)
        converged = jnp.abs(bound - previous) < tol  # False for NaN/inf
        return n_iter + 1, new, bound, converged, history.at[n_iter].set(bound)

    init = (jnp.asarray(0, jnp.int32), posterior, jnp.asarray(previous_lower_bound, dtype), jnp.asarray(False),
            jnp.full((max_iter,), jnp.nan, dtype))
    n_iter, posterior, bound, converged, history = jax.lax.while_loop(cond, body, init)
    return VBResult(posterior, bound, n_iter, converged, history)


def effective_n_components(weights, threshold: float = 0.01) -> jax.Array:
    """How many components carry at least ``threshold`` of the weight (``weights (..., K)``).

    Variational Bayes switches unneeded components off by giving them
    weights near zero (scikit-learn: "the number of effective components is
    therefore smaller than n_components"); this counts the others.

    Examples
    --------
    >>> import jax.numpy as jnp, jaxgmm
    >>> int(jaxgmm.effective_n_components(jnp.array([0.6, 0.395, 0.005])))
    2
    """
    return jnp.sum(jnp.asarray(weights) >= threshold, axis=-1)


# ----------------------------------------------------------------------------- starts and drivers


@partial(jit, static_argnames=("n_components", "covariance_type", "weight_prior", "method"))
def vb_initialize(
    key: jax.Array,
    X: jax.Array,
    n_components: int,
    prior: ConjugatePrior,
    *,
    covariance_type: str = "full",
    weight_prior: str = "dirichlet_process",
    method: str = "kmeans",
    reg_covar=1e-6,
    sample_weight=None,
) -> VBPosterior:
    """The starting posterior: one :func:`vb_m_step` from the initialiser's responsibilities
    (scikit-learn's ``_initialize``; ``method`` one of :data:`jaxgmm.INIT_METHODS`).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, jaxgmm
    >>> X = jnp.asarray(jaxgmm.load_faithful())
    >>> start = jaxgmm.vb_initialize(jax.random.key(0), X, 3, jaxgmm.bayesian_mixture_prior(X, 3))
    >>> start.means.shape, start.covariance_type, start.weight_prior
    ((3, 2), 'full', 'dirichlet_process')
    """
    from jaxgmm.init import initial_responsibilities, responsibility_stats

    resp = initial_responsibilities(key, X, n_components, method, sample_weight)
    return vb_posterior_from_responsibilities(X, resp, prior, covariance_type=covariance_type,
                                              weight_prior=weight_prior, reg_covar=reg_covar,
                                              sample_weight=sample_weight)


def vb_posterior_from_responsibilities(X, resp, prior, *, covariance_type="full", weight_prior="dirichlet_process",
                                       reg_covar=1e-6, sample_weight=None) -> VBPosterior:
    """One :func:`vb_m_step` from responsibilities ``resp (N, K)`` (scikit-learn's ``_initialize(X, resp)``)."""
    from jaxgmm.init import responsibility_stats

    stats = responsibility_stats(X, resp, covariance_type, sample_weight)
    return vb_m_step(stats, prior, reg_covar=reg_covar, weight_prior=weight_prior)


class VBFitResult(NamedTuple):
    """The best of several variational restarts (highest lower bound, the first on ties).

    Attributes
    ----------
    posterior, lower_bound, n_iter, converged, history
        The best restart's (see :class:`VBResult`).
    restarts : VBResult
        Every restart, each leaf with a leading ``(n_init,)`` axis.
    best_index : array, shape (), int
        The best restart's index.

    Notes
    -----
    From :func:`fit_vb_many`, every leaf has a further leading data-set axis.

    Examples
    --------
    >>> import jax, jaxgmm
    >>> result = jaxgmm.fit_vb(jax.random.key(0), jaxgmm.load_faithful(), 3, n_init=3)
    >>> result.restarts.lower_bound.shape, bool(result.lower_bound == result.restarts.lower_bound.max())
    ((3,), True)
    """

    posterior: VBPosterior
    lower_bound: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    history: jax.Array
    restarts: VBResult
    best_index: jax.Array


def _best_restart(restarts: VBResult) -> VBFitResult:
    score = jnp.where(jnp.isfinite(restarts.lower_bound), restarts.lower_bound, -jnp.inf)
    best = jnp.argmax(score)
    chosen = jax.tree.map(lambda leaf: leaf[best], restarts)
    return VBFitResult(*chosen, restarts=restarts, best_index=best)


@partial(jit, static_argnames=("n_components", "covariance_type", "weight_prior", "init", "max_iter",
                                "restart_batch_size"))
def _fit_vb_restarts(keys, X, sample_weight, prior, start_resp=None, *, n_components, covariance_type, weight_prior,
                     init, max_iter, tol, reg_covar, restart_batch_size=None) -> VBFitResult:
    """Initialise and run :func:`vb_loop` once per key (``start_resp``: one start for all); keep the best."""
    from jaxgmm.fit import _map_fits

    def one_restart(key):
        if start_resp is None:
            start = vb_initialize(key, X, n_components, prior, covariance_type=covariance_type,
                                  weight_prior=weight_prior, method=init, reg_covar=reg_covar,
                                  sample_weight=sample_weight)
        else:
            start = vb_posterior_from_responsibilities(X, start_resp, prior, covariance_type=covariance_type,
                                                       weight_prior=weight_prior, reg_covar=reg_covar,
                                                       sample_weight=sample_weight)
        return vb_loop(start, X, prior, max_iter=max_iter, tol=tol, reg_covar=reg_covar, sample_weight=sample_weight)

    return _best_restart(_map_fits(one_restart, keys, keys.shape[0], restart_batch_size))


def bayesian_mixture_prior(
    X,
    n_components: int,
    covariance_type: str = "full",
    *,
    weight_concentration=None,
    mean_precision=None,
    mean=None,
    degrees_of_freedom=None,
    covariance=None,
    sample_weight=None,
) -> ConjugatePrior:
    """scikit-learn's ``BayesianGaussianMixture`` prior as a :class:`ConjugatePrior`, its defaults from the data.

    The hyperparameters take scikit-learn's names without ``_prior``; ``None`` gives its default.

    Parameters
    ----------
    X : array-like, shape (N, D)
    n_components : int
    covariance_type : {"full", "tied", "diag", "spherical"}
    weight_concentration : float > 0
        ``γ``; default ``1 / K``.
    mean_precision : float > 0
        ``β₀``; default 1.
    mean : array-like, shape (D,)
        ``m₀``; default the data's mean.
    degrees_of_freedom : float > D − 1
        ``ν₀``; default ``D``.
    covariance : array-like or float
        ``W₀⁻¹`` in scikit-learn's shapes (``(D, D)`` full and tied, ``(D,)``
        diag, a float spherical); default the data's covariance (``ddof=1``;
        its diagonal, or their mean for spherical).
    sample_weight : array-like, shape (N,), optional
        Frequency weights for the defaults (integer weights act like repeated rows).

    Returns
    -------
    ConjugatePrior
        With the scale in the statistics' units (spherical: ``D`` times the covariance).

    Examples
    --------
    >>> import jaxgmm
    >>> prior = jaxgmm.bayesian_mixture_prior(jaxgmm.load_faithful(), 4)
    >>> float(prior.weight_concentration), float(prior.shrinkage), float(prior.dof), prior.scale.shape
    (0.25, 1.0, 2.0, (2, 2))
    """
    from jaxgmm.validation import check_array, check_n_components, check_sample_weight

    n_components = check_n_components(n_components)
    check_vb_covariance_type(covariance_type)
    storage = get_model(covariance_type).storage
    Xc = check_array(X, min_samples=2)
    data = np.asarray(Xc, np.float64)
    n_rows, d = data.shape
    w = np.ones(n_rows) if sample_weight is None else np.asarray(
        check_sample_weight(sample_weight, n_rows, Xc.dtype, min_positive=2), np.float64)
    data_mean = w @ data / w.sum()
    centred = data - data_mean
    data_covariance = (w[:, None] * centred).T @ centred / (w.sum() - 1)
    if covariance is None:
        scale = {"full": data_covariance, "tied": data_covariance, "diag": np.diag(data_covariance),
                 "spherical": np.trace(data_covariance)}[storage.kind]  # spherical: D · mean variance
    else:
        scale = np.asarray(covariance, np.float64) * (d if storage.kind == "spherical" else 1)
    if degrees_of_freedom is not None and not float(degrees_of_freedom) > d - 1:
        raise ValueError(f"The parameter 'degrees_of_freedom_prior' should be greater than {d - 1}, but got "
                         f"{float(degrees_of_freedom):.3f}.")
    prior = ConjugatePrior(
        mean=data_mean if mean is None else np.asarray(mean, np.float64),
        shrinkage=1.0 if mean_precision is None else mean_precision,
        dof=float(d) if degrees_of_freedom is None else degrees_of_freedom,
        scale=scale,
        weight_concentration=1.0 / n_components if weight_concentration is None else weight_concentration,
    )
    prior = check_prior(prior, covariance_type, n_components, d, Xc.dtype, for_map=False)
    if float(prior.shrinkage) <= 0:
        raise ValueError(f"mean_precision must be > 0; got {float(prior.shrinkage):g}.")
    return prior


def _check_vb_options(n_components, covariance_type, weight_prior, n_init, init, max_iter, tol, reg_covar):
    from jaxgmm.fit import _check_options

    check_vb_covariance_type(covariance_type)
    check_weight_prior(weight_prior)
    return _check_options(n_components, covariance_type, n_init, init, max_iter, tol, reg_covar)


def _raise_if_vb_failed(result: VBFitResult) -> None:
    leaves = [result.lower_bound, *jax.tree.leaves(result.posterior)]
    finite = all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in leaves)
    if not finite:
        raise ValueError("variational Bayes failed: the lower bound or the posterior became non-finite. Increase "
                         "reg_covar, or give the covariances a stronger prior.")


def fit_vb(
    key: jax.Array,
    X,
    n_components: int,
    *,
    covariance_type: str = "full",
    weight_prior: str = "dirichlet_process",
    prior: ConjugatePrior | None = None,
    n_init: int = 1,
    init: str = "kmeans",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    sample_weight=None,
    restart_batch_size: int | None = None,
) -> VBFitResult:
    """Variational Bayes for a Gaussian mixture, ``n_init`` restarts in one compiled program.

    Parameters
    ----------
    key : PRNG key
    X : array-like, shape (N, D)
    n_components : int
        ``K``, the truncation: unneeded components get weights near zero.
    covariance_type : {"full", "tied", "diag", "spherical"}
    weight_prior : {"dirichlet_process", "dirichlet_distribution"}
    prior : ConjugatePrior, optional
        Default :func:`bayesian_mixture_prior` (scikit-learn's defaults).
    n_init, init, max_iter, tol, reg_covar, sample_weight, restart_batch_size
        As in :func:`jaxgmm.fit`; ``tol`` applies to the total lower bound
        (scikit-learn's rule), and the best restart has the highest bound.

    Returns
    -------
    VBFitResult

    Examples
    --------
    >>> import jax, jaxgmm
    >>> from jaxgmm.vb import effective_n_components, fit_vb
    >>> result = fit_vb(jax.random.key(0), jaxgmm.load_faithful(), 10, n_init=2, max_iter=500)
    >>> int(effective_n_components(result.posterior.weights)) in (2, 3)   # Old Faithful's clusters
    True
    """
    from jaxgmm.fit import _check_key
    from jaxgmm.validation import check_array, check_positive_int, check_sample_weight

    key = _check_key(key)
    n_components, n_init, max_iter, tol, reg_covar = _check_vb_options(
        n_components, covariance_type, weight_prior, n_init, init, max_iter, tol, reg_covar)
    if not isinstance(init, str):
        raise ValueError(f"Invalid init {init!r}: expected one of the initialisers' names.")
    Xj = check_array(X, min_samples=max(2, n_components))
    weights = check_sample_weight(sample_weight, Xj.shape[0], Xj.dtype, min_positive=n_components)
    if prior is None:
        prior = bayesian_mixture_prior(Xj, n_components, covariance_type, sample_weight=weights)
    else:
        prior = check_prior(prior, covariance_type, n_components, Xj.shape[1], Xj.dtype, for_map=False)
    result = _fit_vb_restarts(
        jax.random.split(key, n_init), Xj, weights, prior, n_components=n_components,
        covariance_type=covariance_type, weight_prior=weight_prior, init=init, max_iter=max_iter, tol=tol,
        reg_covar=reg_covar,
        restart_batch_size=None if restart_batch_size is None else check_positive_int(
            restart_batch_size, "restart_batch_size"),
    )
    _raise_if_vb_failed(result)
    return result


@partial(jit, static_argnames=("n_components", "covariance_type", "weight_prior", "init", "n_init", "max_iter",
                                "batch_size"))
def _fit_vb_datasets(keys, X, sample_weight, priors, *, n_components, covariance_type, weight_prior, init, n_init,
                     max_iter, tol, reg_covar, batch_size=None) -> VBFitResult:
    from jaxgmm.fit import _map_fits

    def one_dataset(args):
        key, x, w, prior = args
        return _fit_vb_restarts(jax.random.split(key, n_init), x, w, prior, n_components=n_components,
                                covariance_type=covariance_type, weight_prior=weight_prior, init=init,
                                max_iter=max_iter, tol=tol, reg_covar=reg_covar)

    return _map_fits(one_dataset, (keys, X, sample_weight, priors), X.shape[0], batch_size)


def fit_vb_many(
    key: jax.Array,
    X,
    n_components: int,
    *,
    sample_weight=None,
    covariance_type: str = "full",
    weight_prior: str = "dirichlet_process",
    prior: ConjugatePrior | None = None,
    n_init: int = 1,
    init: str = "kmeans",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    batch_size: int | None = None,
) -> VBFitResult:
    """:func:`fit_vb` on each of many data sets ``X (B, N, D)`` in one compiled call.

    Padding rows have ``sample_weight`` 0 (:func:`jaxgmm.pad_datasets`); data
    set ``b`` gets what ``fit_vb(jax.random.split(key, B)[b], X_b, ...)``
    returns for its unpadded rows. ``prior``: one for every data set, or by
    default each data set's own :func:`bayesian_mixture_prior`. Every leaf of
    the result has a leading ``(B,)`` axis.

    Examples
    --------
    >>> import jax, numpy as np, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> result = jaxgmm.fit_vb_many(jax.random.key(0), np.stack([X, X[::-1]]), 3)
    >>> result.lower_bound.shape, result.posterior.means.shape
    ((2,), (2, 3, 2))
    """
    from jaxgmm.fit import _check_key, _prepare_datasets
    from jaxgmm.validation import check_positive_int

    key = _check_key(key)
    n_components, n_init, max_iter, tol, reg_covar = _check_vb_options(
        n_components, covariance_type, weight_prior, n_init, init, max_iter, tol, reg_covar)
    Xj, weight = _prepare_datasets(X, sample_weight, min_positive=n_components)
    Xn, wn = np.asarray(Xj), np.asarray(weight)
    if prior is None:
        each = [bayesian_mixture_prior(Xn[b][wn[b] > 0], n_components, covariance_type, sample_weight=wn[b][wn[b] > 0])
                for b in range(Xn.shape[0])]
    else:
        each = [check_prior(prior, covariance_type, n_components, Xj.shape[2], Xj.dtype, for_map=False)] * Xn.shape[0]
    priors = stack_priors(each, Xj.dtype)
    result = _fit_vb_datasets(
        jax.random.split(key, Xj.shape[0]), Xj, weight, priors, n_components=n_components,
        covariance_type=covariance_type, weight_prior=weight_prior, init=init, n_init=n_init, max_iter=max_iter,
        tol=tol, reg_covar=reg_covar,
        batch_size=None if batch_size is None else check_positive_int(batch_size, "batch_size"),
    )
    _raise_if_vb_failed(result)
    return result
