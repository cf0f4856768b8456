"""Online (stepwise) EM for streams: Cappé & Moulines (2009).

Instead of summing statistics over all rows, keep a running average ``s`` of
per-sample sufficient statistics. For the ``t``-th mini-batch ``B_t``
(``t = 1, 2, ...``), with ``ŝ(B_t; θ)`` its weighted mean statistics under
the current parameters,

    s_t = (1 − γ_t) s_{t−1} + γ_t ŝ(B_t; θ_{t−1}),   θ_t = m_step(s_t),
    γ_t = (t + t0)^(−κ),   κ ∈ (0.5, 1],  t0 ≥ 0.

``κ ≤ 1`` with ``Σγ_t = ∞`` and ``κ > 0.5`` with ``Σγ_t² < ∞`` give
convergence to a stationary point of the (population) likelihood; with
``t0 = 0`` the first step has ``γ_1 = 1`` and the starting statistics do not
matter. Mini-batches may have any size. :func:`online_update` is pure and
jit/scan-safe; :func:`fit_online` drives it over a source of rows.

The running statistics are kept centred at the current means (re-centred
after every M-step), which keeps second moments free of cancellation, as in
:mod:`jaxgmm.em`.
"""

import dataclasses
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.em import SuffStats, e_step, m_step
from jaxgmm.fit import _check_init_params, _check_key, _check_options
from jaxgmm.incomplete import IncompleteData, layout
from jaxgmm.init import initialize
from jaxgmm.params import GMMParams
from jaxgmm.stats import recenter
from jaxgmm.streaming import _fixed_blocks, _Source
from jaxgmm.validation import check_nonnegative, check_positive_int
from jaxgmm.xla_options import jit


class OnlineState(NamedTuple):
    """State of stepwise EM.

    Attributes
    ----------
    params : GMMParams
        Current parameters ``θ_t``.
    stats : SuffStats
        Running average of per-sample statistics ``s_t`` (counts sum to 1),
        centred at ``params.means``.
    step : array, shape (), int
        ``t``, the mini-batches seen so far.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, jaxgmm
    >>> X = jnp.asarray(jaxgmm.load_faithful(), "float32")
    >>> state = jaxgmm.online_init(jaxgmm.initialize(jax.random.key(0), X[:50], 2))
    >>> state, ll = jaxgmm.online_update(state, X[:50])
    >>> int(state.step), state.params.means.shape
    (1, (2, 2))
    """

    params: GMMParams
    stats: SuffStats
    step: jax.Array


def _scale(stats: SuffStats, factor) -> SuffStats:
    return dataclasses.replace(
        stats, counts=stats.counts * factor, sums=stats.sums * factor, scatters=stats.scatters * factor
    )


def stats_from_params(params: GMMParams) -> SuffStats:
    """Per-sample statistics that ``m_step`` (with ``reg_covar=0``) maps back to ``params``."""
    scatters = params.model.storage.scatter_of_covariances(params.weights, params.covariances, params.n_features)
    return SuffStats(params.weights, jnp.zeros_like(params.means), scatters, params.means, params.covariance_type)


def online_init(params: GMMParams) -> OnlineState:
    """Start stepwise EM from ``params`` (its statistics; they are forgotten at rate ``γ_t``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, jaxgmm
    >>> X = jnp.asarray(jaxgmm.load_faithful(), "float32")
    >>> state = jaxgmm.online_init(jaxgmm.initialize(jax.random.key(0), X[:50], 2))
    >>> int(state.step), state.stats.counts.shape
    (0, (2,))
    """
    return OnlineState(params, stats_from_params(params), jnp.asarray(0, jnp.int32))


def step_size(step, kappa, t0):
    """``γ_t = (t + t0)^(−κ)``."""
    return (step + t0) ** (-kappa)


@jit
def online_update(
    state: OnlineState, X: jax.Array, sample_weight: jax.Array | None = None, *,
    kappa: float | jax.Array = 0.6, t0: float | jax.Array = 0.0, reg_covar: float | jax.Array = 1e-6,
) -> tuple[OnlineState, jax.Array]:
    """One stepwise-EM update from a mini-batch ``X (B, D)``.

    Pure and traced in every number (``kappa``, ``t0``, ``reg_covar``): use it
    under ``lax.scan`` or in a Python loop. Rows of weight 0 are ignored, so
    a short last batch can be padded to the common shape.

    Returns
    -------
    state : OnlineState
    log_likelihood : array, shape ()
        The batch's mean log-likelihood under the parameters *before* the
        update (a held-out score: the batch was not yet used).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, jaxgmm
    >>> X = jnp.asarray(jaxgmm.load_faithful(), "float32")
    >>> state = jaxgmm.online_init(jaxgmm.initialize(jax.random.key(0), X[:50], 2))
    >>> for start in range(0, 250, 50):
    ...     state, ll = jaxgmm.online_update(state, X[start : start + 50])
    >>> int(state.step)
    5
    """
    dtype = state.params.means.dtype
    if isinstance(X, IncompleteData):  # a mini-batch with missing values (it holds its weights)
        total = X.total_weight()
    else:
        sample_weight = jnp.ones(X.shape[0], dtype) if sample_weight is None else sample_weight
        sample_weight = jnp.asarray(sample_weight, dtype)
        total = jnp.sum(sample_weight)
    stats, ll_sum = e_step(state.params, X, sample_weight)  # centred at state.params.means, as state.stats
    step = state.step + 1
    gamma = step_size(step.astype(dtype), jnp.asarray(kappa, dtype), jnp.asarray(t0, dtype))
    running = _scale(state.stats, 1 - gamma) + _scale(stats, gamma / total)
    params = m_step(running, reg_covar=reg_covar, previous=state.params)
    return OnlineState(params, recenter(running, params.means), step), ll_sum / total


class OnlineResult(NamedTuple):
    """What :func:`fit_online` returns.

    Attributes
    ----------
    params : GMMParams
    state : OnlineState
        To continue with more data (:func:`online_update`).
    history : ndarray, shape (n_batches,)
        Each mini-batch's mean log-likelihood before it was used (prequential
        score; the first batch is also the initialiser's data).
    n_samples : int
        Rows consumed.

    Examples
    --------
    >>> import jax, jaxgmm
    >>> result = jaxgmm.fit_online(jax.random.key(0), jaxgmm.load_faithful(), 2, batch_size=50)
    >>> int(result.state.step), result.params.means.shape
    (6, (2, 2))
    """

    params: GMMParams
    state: OnlineState
    history: np.ndarray
    n_samples: int


def _check_schedule(kappa, t0):
    kappa = check_nonnegative(kappa, "kappa")
    if not 0.5 < kappa <= 1:
        raise ValueError(f"kappa must be in (0.5, 1] for stepwise EM to converge; got {kappa!r}.")
    return kappa, check_nonnegative(t0, "t0")


def fit_online(
    key: jax.Array,
    source,
    n_components: int,
    *,
    batch_size: int = 1000,
    covariance_type: str = "full",
    init: str | GMMParams = "kmeans",
    kappa: float = 0.6,
    t0: float = 0.0,
    reg_covar: float = 1e-6,
    callback: Callable[[int, float], None] | None = None,
    missing: str = "raise",
) -> OnlineResult:
    """Fit a Gaussian mixture by stepwise EM in one pass over a stream.

    Parameters
    ----------
    key : PRNG key
        For the initialiser.
    source : path, array (N, D), callable, or iterable
        Anything :func:`jaxgmm.fit_stream` takes, or a one-shot iterable of
        blocks (``(n_i, D)`` arrays or ``(X_i, weight_i)`` pairs). Read once.
    n_components : int
    batch_size : int
        Rows per mini-batch (the source's blocks are regrouped; the last
        mini-batch may be shorter).
    covariance_type : str
        scikit-learn's four (``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``) or one of
        mclust's 14 (:data:`~jaxgmm.COVARIANCE_MODELS`).
    init : str or GMMParams
        An initialiser run on the first mini-batch, or initial parameters.
    kappa, t0 : float
        Step sizes ``γ_t = (t + t0)^(−κ)``, ``κ ∈ (0.5, 1]``, ``t0 ≥ 0``.
    reg_covar : float
    callback : callable, optional
        ``callback(step, batch_log_likelihood)`` after each mini-batch.
    missing : {"raise", "marginalize"}
        ``"marginalize"``: NaN entries are missing values; each mini-batch
        is laid out on the host (:mod:`jaxgmm.incomplete`) and its
        statistics are the expected ones (see :func:`jaxgmm.e_step`).

    Returns
    -------
    OnlineResult

    Examples
    --------
    >>> import jax, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> result = jaxgmm.fit_online(jax.random.key(0), X, 2, batch_size=50)
    >>> result.n_samples, result.history.shape                 # 272 rows in 6 mini-batches
    (272, (6,))
    """
    key = _check_key(key)
    n_components, _, _, _, reg_covar = _check_options(
        n_components, covariance_type, 1, init, 1, 0.0, reg_covar
    )
    kappa, t0 = _check_schedule(kappa, t0)
    batch_size = check_positive_int(batch_size, "batch_size")
    if not (isinstance(source, (str, bytes)) or hasattr(source, "shape") or callable(source)):
        iterable = source
        source = lambda: iter(iterable)  # noqa: E731  (read once)
    src = _Source(source, missing=missing)
    state, history, n_samples = None, [], 0
    try:
        for block in _fixed_blocks(src, batch_size):
            X, w = jnp.asarray(block.X), jnp.asarray(block.weight)
            if missing == "marginalize" and np.isnan(block.X).any():
                X, w = layout(block.X, block.weight, covariance_type), None
            if state is None:
                state = online_init(_initial_params(key, X, w, block.n_rows, n_components, covariance_type, init,
                                                    reg_covar))
            state, ll = online_update(state, X, w, kappa=kappa, t0=t0, reg_covar=reg_covar)
            history.append(ll)
            n_samples += block.n_rows
            if callback is not None:
                callback(int(state.step), float(ll))
    finally:
        src.close()
    if state is None:
        raise ValueError("the source yielded no rows.")
    return OnlineResult(state.params, state, np.asarray(jnp.stack(history)), n_samples)


def _initial_params(key, X, w, n_rows, n_components, covariance_type, init, reg_covar) -> GMMParams:
    if isinstance(init, GMMParams):
        return _check_init_params(init, n_components, covariance_type, X.shape[1], X.dtype)
    n_positive = int(jnp.count_nonzero(w)) if w is not None else int(np.sum([np.count_nonzero(b.weight)
                                                                               for b in X.buckets]))
    if n_positive < n_components:
        raise ValueError(
            f"the first mini-batch has {n_rows} rows of positive weight but n_components={n_components}; "
            "increase batch_size."
        )
    return _initialize(key, X, w, n_components=n_components, covariance_type=covariance_type, init=init,
                       reg_covar=reg_covar)


@partial(jit, static_argnames=("n_components", "covariance_type", "init"))
def _initialize(key, X, w, *, n_components, covariance_type, init, reg_covar):
    return initialize(key, X, n_components, covariance_type=covariance_type, method=init,
                      reg_covar=reg_covar, sample_weight=w)
