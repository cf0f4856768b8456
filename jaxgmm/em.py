"""Expectation–maximisation for Gaussian mixtures: ``e_step``, ``m_step``, ``em_loop``.

The seam between the two steps is the set of weighted sufficient statistics
(:class:`~jaxgmm.stats.SuffStats`). They add up over rows, so sample weights,
zero-weight padding, row blocks, streamed data and data sharded over devices
all reduce to summing statistics before one ``m_step``. The E-step's fast
forms live in :mod:`jaxgmm.kernels`; each covariance model's M-step in
:mod:`jaxgmm.models`.

Moments are accumulated about per-component centres, never raw:
``E[xxᵀ] − μμᵀ`` cancels catastrophically in float32 for data far from the
origin (scikit-learn issue #30382).
"""

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxgmm import kernels, missing_kernels
from jaxgmm.conjugate import ConjugatePrior, conjugate_posterior, log_prior, map_prior_terms
from jaxgmm.incomplete import IncompleteData, as_incomplete, check_missing_option
from jaxgmm.matmul_precision import float32_matmuls
from jaxgmm.models import get_model
from jaxgmm.params import GMMParams
from jaxgmm.stats import SuffStats, stats_from_responsibilities
from jaxgmm.xla_options import jit

__all__ = ["EMResult", "SuffStats", "e_step", "em_loop", "iterate_em", "m_step", "stats_from_responsibilities"]


@float32_matmuls
def e_step(
    params: GMMParams,
    X: jax.Array,
    sample_weight: jax.Array | None = None,
    *,
    block_size: int | None = None,
    fast: bool = False,
    missing: str = "raise",
) -> tuple[SuffStats, jax.Array]:
    r"""E-step: responsibilities reduced to sufficient statistics.

    Parameters
    ----------
    params : GMMParams
        Current parameters (``K`` components, ``D`` features).
    X : array, shape (N, D), or IncompleteData
    sample_weight : array, shape (N,), optional
        Non-negative weights; rows of weight 0 contribute nothing (padding).
        (An :class:`~jaxgmm.incomplete.IncompleteData` holds its own.)
    block_size : int, optional
        Rows per block; memory is ``O(block_size · K · D)`` whatever ``N``.
    fast : bool
        Opt-in: accumulate every moment about one shared centre, with fewer
        and smaller matrix products (on CPU 1.3-1.6× faster for full with
        many components and fewer than 32 features, 2-3× for diag and
        spherical; no faster for tied or for at most 3 components, and
        slower than the default from 32 features) at the price of cancellation error
        ``≈ eps · ‖μ_k − c‖²_{Σ_k⁻¹}`` relative, ``c`` the weighted mean of
        the means. Harmless in float64
        and for components a few tens of σ from the centre in float32; keep
        the default for float32 data whose components are hundreds of σ
        apart.
    missing : {"raise", "marginalize"}
        ``"marginalize"``: NaN entries of ``X`` are missing values (missing
        at random); rows contribute through the marginal density of their
        observed values and the statistics are expected ones (conditional
        means and covariances of the missing values; see
        :mod:`jaxgmm.missing_kernels`). Concrete ``X`` is laid out on the
        host (:mod:`jaxgmm.incomplete`); inside ``jit``/``vmap`` pass an
        :class:`~jaxgmm.incomplete.IncompleteData` from
        :func:`jaxgmm.incomplete.layout` (a traced array takes a slower
        general form). ``"raise"`` (default): ``X`` is complete (the
        edges reject NaN). An ``IncompleteData`` is always marginalised.

    Returns
    -------
    stats : SuffStats
        Statistics centred at ``params.means`` (at the shared centre with
        ``fast=True``).
    log_likelihood : array, shape ()
        The weighted **sum** ``Σ_n w_n log p(x_n)`` (of the observed values
        ``x_n,o`` with missing ones); divide by ``stats.counts.sum()`` for
        the mean.

    See Also
    --------
    m_step : the update these statistics feed.
    em_loop : both steps until convergence.
    jaxgmm.stream_e_step : the same over data read block by block.

    Notes
    -----
    With responsibilities
    :math:`r_{nk} = \alpha_k \mathcal{N}(x_n \mid \mu_k, \Sigma_k) / \sum_j \alpha_j \mathcal{N}(x_n \mid \mu_j, \Sigma_j)`
    and weights :math:`w_n`, the statistics are

    .. math::

       N_k = \sum_n w_n r_{nk}, \qquad
       S_k = \sum_n w_n r_{nk} (x_n - c_k), \qquad
       W_k = \sum_n w_n r_{nk} (x_n - c_k)(x_n - c_k)^\top

    about centres :math:`c_k` near the means (so nothing cancels in float32), and
    they add up over any split of the rows.

    Examples
    --------
    >>> import jax, jaxgmm
    >>> X = jax.numpy.asarray(jaxgmm.load_faithful(), "float32")
    >>> params = jaxgmm.initialize(jax.random.key(0), X, 2)
    >>> stats, ll_sum = jaxgmm.e_step(params, X)
    >>> stats.counts.shape, round(float(stats.counts.sum()))   # soft counts N_k add up to N
    ((2,), 272)
    >>> bool(abs(ll_sum / len(X) - jaxgmm.score(params, X)) < 1e-4)
    True
    """
    check_missing_option(missing)
    if isinstance(X, IncompleteData) or missing == "marginalize":
        X = as_incomplete(X, sample_weight, params.covariance_type)  # stays an array if nothing is missing
        if isinstance(X, IncompleteData):
            return missing_kernels.e_step(params, X, block_size=block_size, fast=fast)
    return kernels.complete_e_step(params, X, sample_weight, block_size=block_size, fast=fast)


@float32_matmuls
def m_step(
    stats: SuffStats,
    *,
    reg_covar: float | jax.Array = 1e-6,
    previous: GMMParams | None = None,
    inner_tol: float | jax.Array | None = None,
    inner_max_iter: int | jax.Array = 100,
    active: jax.Array | None = None,
    prior: ConjugatePrior | None = None,
) -> GMMParams:
    r"""M-step: the parameters that maximise the expected complete-data log-likelihood (or log-posterior).

    Parameters
    ----------
    stats : SuffStats
        Statistics of a covariance model (``stats.covariance_type``).
    reg_covar : float
        Added to the diagonal of every covariance (traced: changing it does
        not recompile). For mclust's constrained models it enters as
        ``N_k·reg_covar·I`` added to each scatter matrix before the
        constrained maximisation, so the result keeps the model's structure
        (the same thing for scikit-learn's four types).
    previous : GMMParams, optional
        The parameters the E-step used: the iterative M-steps (VEI, VEE,
        EVE, VVE, VEV) start their inner loop from its covariances, so each
        M-step improves on them and EM stays monotone. Without it they start
        from the unconstrained estimate. Ignored by the other models.
    inner_tol, inner_max_iter : float, int
        The iterative M-steps' inner loop: relative tolerance (default
        ``sqrt(eps)``, as mclust's ``emControl``) and most iterations (both
        traced).
    active : array of bool, shape (K,), optional
        Components to estimate; the others are switched off: weight exactly
        0 and an identity covariance, which the E-step then gives no rows.
        Default: the components of nonzero weight in ``previous`` (all
        without it), so a component of weight 0 stays off. This is how one
        program fits every ``K ≤ K_max`` (:func:`jaxgmm.select`).
    prior : ConjugatePrior, optional
        MAP-EM: maximise the expected complete-data log-*posterior* instead
        (mclust's ``priorControl()``). The means become
        ``(κ μ₀ + n_k x̄_k) / (κ + n_k)``, the weights
        ``∝ n_k + α − 1``, and the covariances the model's own M-step on the
        posterior scatters and counts of :mod:`jaxgmm.models.priors`
        (``reg_covar`` then adds ``n_k·reg_covar·I`` to those scatters). Its
        values are traced. VEE, EVE, VVE and EVV take no prior
        (``ValueError``).

    Returns
    -------
    GMMParams
        ``weights = N_k / N``, ``means = c_k + δ_k`` with ``δ_k = S1_k / N_k``
        and the model's covariances from the scatters about the new means,
        ``S2_k / N_k − δ_k δ_kᵀ`` (+ ``reg_covar·I``). As in
        scikit-learn, ``N_k`` gets ``10·eps`` so an empty component keeps
        finite parameters (its mean stays at its centre, its covariance is
        ``reg_covar·I`` for the unconstrained models) instead of producing NaN.

    See Also
    --------
    e_step : the statistics.
    jaxgmm.models.get_model : each covariance model's update.

    Notes
    -----
    For ``full`` (mclust's VVV), with :math:`N = \sum_k N_k` and
    :math:`\bar x_k` the weighted mean of component :math:`k`:

    .. math::

       \alpha_k = \frac{N_k}{N}, \qquad
       \mu_k = \bar x_k, \qquad
       \Sigma_k = \frac{1}{N_k} \sum_n w_n r_{nk} (x_n - \mu_k)(x_n - \mu_k)^\top
       + \mathtt{reg\_covar}\, I .

    The other models maximise the same expected complete-data log-likelihood
    under their constraints on :math:`\Sigma_k = \lambda_k D_k A_k D_k^\top`.

    Examples
    --------
    >>> import jax, jaxgmm
    >>> X = jax.numpy.asarray(jaxgmm.load_faithful(), "float32")
    >>> stats, _ = jaxgmm.e_step(jaxgmm.initialize(jax.random.key(0), X, 2), X)
    >>> new = jaxgmm.m_step(stats)                              # one EM iteration
    >>> new.means.shape, round(float(new.weights.sum()), 5)
    ((2, 2), 1.0)
    """
    model = get_model(stats.covariance_type)
    dtype = stats.sums.dtype
    n_components, n_features = stats.sums.shape
    if active is None and previous is not None:
        active = previous.weights > 0
    reg_covar = jnp.asarray(reg_covar, dtype)
    if prior is None:
        counts = stats.counts + 10 * jnp.finfo(dtype).eps
        delta = stats.sums / counts[:, None]
        means = stats.centers + delta
        weight_counts = covariance_counts = counts
        ml_covariances = model.storage.ml_covariances(stats.scatters, counts, delta)
    else:
        # The posterior's scatters and counts (reg_covar already in them) through the model's own M-step.
        scale_weights, extra = map_prior_terms(stats.covariance_type, prior, active, n_components, n_features, dtype)
        posterior = conjugate_posterior(stats, prior, reg_covar=reg_covar, scale_weights=scale_weights)
        counts, means = posterior.counts, posterior.means
        weight_counts = counts + jnp.asarray(prior.weight_concentration, dtype) - 1
        covariance_counts = counts + extra
        ml_covariances = model.storage.ml_covariances(posterior.scatter, covariance_counts, jnp.zeros_like(means))
        reg_covar = jnp.zeros((), dtype)
    weights = weight_counts if active is None else jnp.where(active, weight_counts, 0.0)
    weights = weights / jnp.sum(weights)
    if inner_tol is None:
        inner_tol = jnp.sqrt(jnp.finfo(dtype).eps)
    if active is not None:  # switched-off components: a unit covariance, weighted by their 10·eps count
        ml_covariances = model.storage.switch_off(ml_covariances, active)
    covariances = model.covariance_m_step(
        covariance_counts, ml_covariances, n_features, reg_covar,
        None if previous is None else previous.covariances,
        jnp.asarray(inner_tol, dtype), jnp.asarray(inner_max_iter, jnp.int32),
    )
    return GMMParams(weights, means, covariances, stats.covariance_type)


class EMResult(NamedTuple):
    """What :func:`em_loop` returns.

    Attributes
    ----------
    params : GMMParams
        Parameters after the last M-step.
    log_likelihood : array, shape ()
        Mean (weighted) per-sample log-likelihood **of** ``params``, from one
        E-step after the loop (the last value in ``history`` belongs to the
        parameters before the last M-step, as scikit-learn's ``lower_bound_``).
    n_iter : array, shape (), int
        Number of EM iterations run.
    converged : array, shape (), bool
        True iff the last change in ``history`` was finite and below ``tol``
        in absolute value (scikit-learn's rule). A NaN or infinite
        log-likelihood is never converged.
    history : array, shape (max_iter,)
        ``history[t]`` is the mean log-likelihood of the parameters after
        ``t`` M-steps (``history[0]``: the initial parameters'), computed in
        iteration ``t``'s E-step; NaN from ``n_iter`` on. With
        ``reg_covar=0`` it never decreases, and ``log_likelihood`` is at
        least ``history[n_iter - 1]``. With a ``prior``, the values are the
        mean log-*posterior* ``(Σ_n w_n log p(x_n) + log p(θ)) / Σ_n w_n``
        (:func:`jaxgmm.conjugate.log_prior`), which MAP-EM never decreases
        (``reg_covar=0``), and ``converged`` is measured on them.
    log_posterior : array, shape (), or None
        The mean log-posterior of ``params`` (as ``history``'s values, from
        the same final E-step as ``log_likelihood``); equal to
        ``log_likelihood`` without a prior. Restarts are chosen by it.

    Examples
    --------
    >>> import jax, jaxgmm
    >>> X = jax.numpy.asarray(jaxgmm.load_faithful(), "float32")
    >>> result = jaxgmm.em_loop(jaxgmm.initialize(jax.random.key(0), X, 2), X, max_iter=50, tol=1e-6)
    >>> int(result.n_iter) <= 50, result.history.shape
    (True, (50,))
    """

    params: GMMParams
    log_likelihood: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    history: jax.Array
    log_posterior: jax.Array | None = None


def iterate_em(
    stats_fn: Callable[[GMMParams], tuple[SuffStats, jax.Array]],
    params: GMMParams,
    total_weight: jax.Array,
    *,
    max_iter: int,
    tol: float | jax.Array,
    reg_covar: float | jax.Array,
    inner_tol: float | jax.Array | None = None,
    inner_max_iter: int | jax.Array = 100,
    prior: ConjugatePrior | None = None,
) -> EMResult:
    """The EM ``lax.while_loop``, for any way of computing the statistics.

    ``stats_fn(params) -> (stats, weighted sum of log p)`` is the E-step over
    the whole data set — :func:`e_step` on an array for :func:`em_loop`, or a
    sum over devices (``shard_map`` + ``psum``) for sharded data.
    ``total_weight`` is ``Σ_n w_n``. Not jitted itself: call it inside ``jit``.
    It calls ``stats_fn`` ``n_iter + 1`` times: once per iteration, and once
    after the loop for the log-likelihood of the parameters it returns.
    """
    dtype = params.means.dtype
    tol = jnp.asarray(tol, dtype)
    m_step_options = dict(reg_covar=jnp.asarray(reg_covar, dtype), inner_tol=inner_tol,
                          inner_max_iter=inner_max_iter, prior=prior)

    def objective(params, ll_sum):  # what EM increases: the mean log-likelihood, or log-posterior with a prior
        return (ll_sum if prior is None else ll_sum + log_prior(params, prior)) / total_weight

    def cond(state):
        n_iter, _, log_likelihood, converged, _ = state
        still_finite = (n_iter == 0) | jnp.isfinite(log_likelihood)
        return (n_iter < max_iter) & ~converged & still_finite

    def body(state):
        n_iter, params, previous, _, history = state
        stats, ll_sum = stats_fn(params)
        value = objective(params, ll_sum)
        new_params = m_step(stats, previous=params, **m_step_options)
        converged = jnp.abs(value - previous) < tol  # False for NaN/inf
        history = history.at[n_iter].set(value)
        return n_iter + 1, new_params, value, converged, history

    init = (
        jnp.asarray(0, jnp.int32),
        params,
        jnp.asarray(-jnp.inf, dtype),
        jnp.asarray(False),
        jnp.full((max_iter,), jnp.nan, dtype),
    )
    n_iter, params, _, converged, history = jax.lax.while_loop(cond, body, init)
    # The loop's last E-step saw the parameters before its M-step: one more gives those returned.
    _, final_ll_sum = stats_fn(params)
    return EMResult(params, final_ll_sum / total_weight, n_iter, converged, history, objective(params, final_ll_sum))


def _lay_out_missing(params, X, *args, sample_weight=None, missing="raise", **kwargs):
    """Host side of :func:`em_loop` (before tracing): concrete data with NaN and ``missing="marginalize"``
    become an :class:`~jaxgmm.incomplete.IncompleteData` (which holds the weights); without NaN they
    take the complete-data path."""
    check_missing_option(missing)
    if missing == "marginalize" and not isinstance(X, (IncompleteData, jax.core.Tracer)) and not isinstance(
            sample_weight, jax.core.Tracer):
        X = as_incomplete(X, sample_weight, params.covariance_type)
        if isinstance(X, IncompleteData):
            sample_weight = None
        else:
            missing = "raise"  # nothing is missing
    return (params, X, *args), dict(sample_weight=sample_weight, missing=missing, **kwargs)


@partial(jit, static_argnames=("max_iter", "block_size", "fast", "missing"), prepare=_lay_out_missing)
def em_loop(
    params: GMMParams,
    X: jax.Array,
    *,
    max_iter: int = 100,
    tol: float | jax.Array = 1e-3,
    reg_covar: float | jax.Array = 1e-6,
    sample_weight: jax.Array | None = None,
    block_size: int | None = None,
    fast: bool = False,
    inner_tol: float | jax.Array | None = None,
    inner_max_iter: int | jax.Array = 100,
    missing: str = "raise",
    prior: ConjugatePrior | None = None,
) -> EMResult:
    """Run EM from ``params`` until the mean log-likelihood changes by less than ``tol``.

    Compiled with ``jax.jit`` around a ``lax.while_loop``. Only the shapes,
    the covariance type, ``max_iter`` (the history buffer's length) and
    ``block_size`` are static; ``tol``, ``reg_covar``, the data and the
    weights are traced, so new values neither recompile nor block ``vmap``.

    Under ``jax.vmap`` (restarts, many data sets) a member that has converged
    stops changing while the others go on, so a batched run returns what each
    run returns alone.

    Parameters
    ----------
    params : GMMParams
        Initial parameters, ``K`` components.
    X : array, shape (N, D)
    max_iter : int
        Most iterations (static).
    tol : float
        Convergence threshold on the change in mean log-likelihood
        (scikit-learn's definition). ``tol=0`` runs exactly ``max_iter``.
    reg_covar : float
        Added to covariance diagonals in each M-step.
    sample_weight : array, shape (N,), optional
    block_size : int, optional
        Rows per E-step block (static).
    fast : bool
        Opt-in faster E-step with a documented accuracy trade (static); see
        :func:`e_step`.
    inner_tol, inner_max_iter : float, int
        The inner loop of the iterative M-steps (mclust's VEI, VEE, EVE,
        VVE, VEV; traced); see :func:`m_step`.
    missing : {"raise", "marginalize"}
        ``"marginalize"``: NaN entries are missing values (see
        :func:`e_step`); ``history`` and ``log_likelihood`` are then the
        observed-data log-likelihood (mean over rows with an observed
        value), which EM never decreases. Concrete ``X`` is laid out on the
        host before tracing, so this is as fast as a prepared
        :class:`~jaxgmm.incomplete.IncompleteData`.
    prior : ConjugatePrior, optional
        MAP-EM (traced; see :func:`m_step`): ``history`` and ``tol`` then
        concern the mean log-posterior, and ``log_posterior`` reports it.

    Returns
    -------
    EMResult

    See Also
    --------
    jaxgmm.fit : restarts and validated input around this loop.
    e_step, m_step : one iteration.

    Examples
    --------
    >>> import jax, jaxgmm
    >>> X = jax.numpy.asarray(jaxgmm.load_faithful(), "float32")
    >>> start = jaxgmm.initialize(jax.random.key(0), X, 2)
    >>> result = jaxgmm.em_loop(start, X, max_iter=50, tol=1e-6)
    >>> bool(result.converged), result.history.shape
    (True, (50,))
    """
    if missing == "marginalize" or isinstance(X, IncompleteData):
        X = as_incomplete(X, sample_weight, params.covariance_type)  # already laid out, unless traced
    if isinstance(X, IncompleteData):
        sample_weight, total_weight = None, X.total_weight()
    else:
        sample_weight = jnp.ones(X.shape[0], X.dtype) if sample_weight is None else sample_weight
        sample_weight = jnp.asarray(sample_weight, X.dtype)
        total_weight = jnp.sum(sample_weight)
    stats_fn = partial(e_step, X=X, sample_weight=sample_weight, block_size=block_size, fast=fast)
    return iterate_em(
        stats_fn, params, total_weight, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
        inner_tol=inner_tol, inner_max_iter=inner_max_iter, prior=prior,
    )
