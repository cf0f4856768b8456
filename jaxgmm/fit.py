"""Drivers: fit with parallel restarts, and fit many data sets in one call.

These are edges: they validate input with numpy before anything is traced,
then run one compiled function that ``vmap``s initialisation and
:func:`jaxgmm.em_loop` over restarts (and, in :func:`fit_many`, over data
sets). Static: ``n_components``, ``covariance_type``, ``init``, ``max_iter``
and shapes. Traced: ``tol``, ``reg_covar``, data, weights, keys.
"""

from functools import partial
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.conjugate import ConjugatePrior, check_prior, default_prior, stack_priors
from jaxgmm.em import EMResult, em_loop
from jaxgmm.incomplete import IncompleteData, as_incomplete, check_missing_option, layout_many
from jaxgmm.init import INIT_METHODS, initialize, params_from_responsibilities
from jaxgmm.models import get_model
from jaxgmm.params import GMMParams, check_covariance_type
from jaxgmm.validation import (
    check_array,
    check_datasets,
    check_n_components,
    check_nonnegative,
    check_params,
    check_positive_int,
    check_sample_weight,
    is_traced,
)
from jaxgmm.xla_options import jit


class FitResult(NamedTuple):
    """The best of several EM restarts.

    From :func:`fit_many`, every leaf has a further leading data-set axis.

    Attributes
    ----------
    params : GMMParams
        Parameters of the best restart: the highest ``log_likelihood``.
    log_likelihood : array, shape ()
        The mean per-sample log-likelihood of ``params`` (see
        :class:`jaxgmm.EMResult`); restarts are ranked by it.
    n_iter : array, shape (), int
    converged : array, shape (), bool
    history : array, shape (max_iter,)
        Its mean log-likelihood (log-posterior, with a prior) per iteration, NaN-padded.
    log_posterior : array, shape (), or None
        Its mean log-posterior (``log_likelihood`` without a prior).
    restarts : EMResult
        Every restart, each leaf with a leading ``(n_init,)`` axis.
    best_index : array, shape (), int
        Which restart is the best.

    Examples
    --------
    >>> import jax, jaxgmm
    >>> result = jaxgmm.fit(jax.random.key(0), jaxgmm.load_faithful(), 2, n_init=3)
    >>> result.restarts.log_likelihood.shape               # every restart's
    (3,)
    >>> bool(result.log_likelihood == result.restarts.log_likelihood.max())
    True
    """

    params: GMMParams
    log_likelihood: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    history: jax.Array
    log_posterior: jax.Array | None
    restarts: EMResult
    best_index: jax.Array


def _best_of(restarts: EMResult) -> FitResult:
    """Pick the restart with the highest finite log-likelihood — log-posterior with a prior (the first on ties)."""
    score = restarts.log_likelihood if restarts.log_posterior is None else restarts.log_posterior
    score = jnp.where(jnp.isfinite(score), score, -jnp.inf)
    best = jnp.argmax(score)
    chosen = jax.tree.map(lambda leaf: leaf[best], restarts)
    return FitResult(*chosen, restarts=restarts, best_index=best)


def default_batch_size(n_fits: int) -> int:
    """How many independent fits (restarts, data sets) run together under ``vmap``.

    All of them on an accelerator, one at a time on CPU. On a GPU the batched
    matrix products of ``vmap``ped fits keep the device busy. On CPU, XLA runs
    batched small matrix products several times slower than the same products
    one by one, and a batch runs until its slowest member has converged:
    measured on this project's 2-core machine (``BENCHMARKS.md``), a
    sequential ``lax.map`` is 3-4× faster than one ``vmap`` for 32 restarts
    and for 1,000 small data sets. Results are the same either way.

    Examples
    --------
    >>> import jax, jaxgmm
    >>> jaxgmm.default_batch_size(32) == (1 if jax.default_backend() == "cpu" else 32)
    True
    """
    return n_fits if jax.default_backend() != "cpu" else 1


def _map_fits(fn, xs, n_fits: int, batch_size: int | None):
    """``fn`` over the leading axis of ``xs``: ``vmap`` in batches of ``batch_size`` (static)."""
    if n_fits == 1:  # no batch dimension at all: a size-1 vmap still batches every product
        return jax.tree.map(lambda leaf: leaf[None], fn(jax.tree.map(lambda leaf: leaf[0], xs)))
    batch = default_batch_size(n_fits) if batch_size is None else min(batch_size, n_fits)
    if batch >= n_fits:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=batch if batch > 1 else None)


@partial(
    jit,
    static_argnames=(
        "n_components", "covariance_type", "init", "max_iter", "block_size", "fast", "restart_batch_size",
    ),
)
def _fit_restarts(
    keys, X, sample_weight, init_params, *, n_components, covariance_type, init, max_iter, tol, reg_covar,
    block_size=None, fast=False, restart_batch_size=None, n_active=None, prior=None,
) -> FitResult:
    """Initialise and run EM once per key, ``restart_batch_size`` restarts at a time under ``vmap``; keep the best.

    ``n_active`` (traced): use only the first ``n_active`` of the ``n_components`` slots (see
    :func:`jaxgmm.initialize`). ``prior`` (traced): MAP-EM, from a MAP initial M-step.
    """

    def one_restart(key):
        if init_params is None:
            params = initialize(
                key, X, n_components, covariance_type=covariance_type, method=init,
                reg_covar=reg_covar, sample_weight=sample_weight, n_active=n_active, prior=prior,
            )
        else:
            params = init_params
        return em_loop(
            params, X, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
            sample_weight=sample_weight, block_size=block_size, fast=fast, prior=prior,
        )

    return _best_of(_map_fits(one_restart, keys, keys.shape[0], restart_batch_size))


@partial(jit, static_argnames=("n_components", "covariance_type", "init", "max_iter", "restart_batch_size"))
def _fit_each_k(keys, X, sample_weight, ks, start_resp=None, *, n_components, covariance_type, init, max_iter,
                tol, reg_covar, restart_batch_size=None, priors=None) -> FitResult:
    """One compiled program for every ``K`` in ``ks`` (traced, ``(n_k,)`` ints ≤ ``n_components``): the fit
    of each with ``n_components`` slots, those from ``K`` on switched off; leaves get a leading ``(n_k,)`` axis.

    ``start_resp (n_k, N, n_components)``, optional: each K's starting responsibilities (zero columns
    from K on) instead of the initialiser — one M-step from them, then EM (``init`` is then ignored).
    ``priors``, optional: a :class:`ConjugatePrior` with a leading ``(n_k,)`` axis, each K's own (MAP-EM).
    """

    def one_k(args):
        k, resp, prior = args
        start = None
        if resp is not None:
            start = params_from_responsibilities(X, resp, covariance_type, reg_covar=reg_covar,
                                                 sample_weight=sample_weight, n_active=k, prior=prior)
        return _fit_restarts(
            keys, X, sample_weight, start, n_components=n_components, covariance_type=covariance_type, init=init,
            max_iter=max_iter, tol=tol, reg_covar=reg_covar, restart_batch_size=restart_batch_size, n_active=k,
            prior=prior,
        )

    return jax.lax.map(one_k, (ks, start_resp, priors))


def _check_key(key) -> jax.Array:
    if isinstance(key, jax.Array) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape[-1:] == (2,))
    ):
        return key
    raise TypeError(f"key must be a JAX PRNG key such as jax.random.key(0); got {type(key).__name__}.")


def _check_options(n_components, covariance_type, n_init, init, max_iter, tol, reg_covar):
    n_components = check_n_components(n_components)
    check_covariance_type(covariance_type)
    n_init = check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter")
    if not isinstance(init, GMMParams) and init not in INIT_METHODS:
        raise ValueError(f"Invalid init {init!r}: expected one of {INIT_METHODS} or a GMMParams.")
    tol = check_nonnegative(tol, "tol")
    reg_covar = check_nonnegative(reg_covar, "reg_covar")
    return n_components, n_init, max_iter, tol, reg_covar


def _refuse_missing_with_prior(X):
    """MAP-EM and missing values do not combine yet (mclust's default prior is defined for complete data)."""
    if not is_traced(X) and np.isnan(np.asarray(X)).any():
        raise ValueError("prior= with missing values (NaN in X) is not supported: fit with prior=None, "
                         "or impute the missing values first.")


def resolve_prior(prior, X, n_components: int, covariance_type: str, sample_weight=None) -> ConjugatePrior | None:
    """``None``, a validated :class:`ConjugatePrior` for the data, or mclust's :func:`default_prior` for
    ``prior="default"`` (``X`` concrete, ``(N, D)``)."""
    if prior is None:
        return None
    _refuse_missing_with_prior(X)
    if isinstance(prior, str):
        if prior != "default":
            raise ValueError(f"Invalid prior {prior!r}: expected None, 'default' or a jaxgmm.ConjugatePrior.")
        return default_prior(X, n_components, covariance_type, sample_weight=sample_weight)
    return check_prior(prior, covariance_type, n_components, X.shape[-1], X.dtype)


def _check_init_params(init, n_components, covariance_type, n_features, dtype):
    """The validated initial parameters, or ``None`` for an init method; also checks that the
    covariance model fits the data's number of features (mclust's ``E``/``V`` need one)."""
    get_model(covariance_type).check_n_features(n_features)
    if not isinstance(init, GMMParams):
        return None
    if init.covariance_type != covariance_type:
        raise ValueError(
            f"init has covariance_type {init.covariance_type!r} but covariance_type={covariance_type!r}."
        )
    if init.means.shape[0] != n_components:
        raise ValueError(f"init has {init.means.shape[0]} components but n_components={n_components}.")
    if is_traced(init.weights, init.means, init.covariances):
        return init
    return check_params(
        init.weights, init.means, init.covariances, covariance_type, n_features=n_features, dtype=dtype
    )


def _raise_if_failed(result: FitResult, what: str) -> None:
    """No silent NaN: a fit whose best restart is not finite is an error."""
    leaves = [result.log_likelihood, *jax.tree.leaves(result.params)]
    if is_traced(*leaves):
        return
    batch_ndim = np.ndim(result.log_likelihood)
    finite = np.ones(np.shape(result.log_likelihood), bool)
    for leaf in leaves:
        leaf = np.asarray(leaf)
        finite &= np.isfinite(leaf).reshape(leaf.shape[:batch_ndim] + (-1,)).all(axis=-1)
    if not finite.all():
        where = "" if batch_ndim == 0 else f" (data sets {np.flatnonzero(~finite).tolist()})"
        raise ValueError(
            f"{what} failed{where}: the log-likelihood or parameters became non-finite, usually because "
            "a component collapsed onto a single point or a subspace. Increase reg_covar, or use fewer "
            "components."
        )


def fit(
    key: jax.Array,
    X,
    n_components: int,
    *,
    covariance_type: str = "full",
    n_init: int = 1,
    init: str | GMMParams = "kmeans",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    sample_weight=None,
    fast: bool = False,
    restart_batch_size: int | None = None,
    missing: str = "raise",
    prior: "ConjugatePrior | str | None" = None,
) -> FitResult:
    """Fit a Gaussian mixture by EM, with ``n_init`` restarts compiled into one program.

    Parameters
    ----------
    key : PRNG key
        Split into one key per restart.
    X : array-like, shape (N, D)
    n_components : int
        ``K``.
    covariance_type : str
        scikit-learn's four (``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``) or one of
        mclust's 14 (:data:`~jaxgmm.COVARIANCE_MODELS`).
    n_init : int
        Restarts, compiled into one program; the best final log-likelihood
        wins.
    init : {"kmeans", "k-means++", "random", "random_from_data"} or GMMParams
        Initialiser, or user-given initial parameters (validated).
    max_iter, tol, reg_covar : see :func:`jaxgmm.em_loop`.
    sample_weight : array-like, shape (N,), optional
        Non-negative; integer weights act like repeated rows.
    fast : bool
        Opt-in faster E-step that trades some float32 accuracy for widely
        separated components; see :func:`jaxgmm.e_step`.
    restart_batch_size : int, optional
        Restarts run together under ``vmap`` (the rest are a ``lax.map``
        over batches). Default :func:`default_batch_size`: all on an
        accelerator, one at a time on CPU. The result does not depend on
        it; each restart stops changing once it has converged.
    missing : {"raise", "marginalize"}
        ``"marginalize"``: NaN entries of ``X`` are values missing at random;
        EM maximises the likelihood of the observed values (exactly, see
        :func:`jaxgmm.e_step`) and ``log_likelihood``/``history`` report it.
        A row with no observed value contributes nothing; a column with none
        is an error. Without NaN this is the complete-data fit, exactly.
        ``"raise"`` (default): NaN is an error.
    prior : ConjugatePrior or "default", optional
        MAP-EM with this conjugate prior (:func:`jaxgmm.m_step`);
        ``"default"`` is mclust's ``priorControl()``,
        :func:`jaxgmm.default_prior`. The initial M-step is MAP too, the
        restarts are ranked by log-posterior and ``history`` records it.
        Not for VEE, EVE, VVE, EVV (``ValueError``).

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError
        For invalid input (named in the message), or when every restart's
        log-likelihood became non-finite.

    See Also
    --------
    fit_many : many data sets in one call.
    jaxgmm.select : fits over covariance models and numbers of components.
    jaxgmm.fit_stream : data larger than memory.
    jaxgmm.sklearn.GaussianMixture : the same fit as a scikit-learn estimator.

    Examples
    --------
    >>> import jax
    >>> from jaxgmm import fit, load_faithful
    >>> result = fit(jax.random.key(0), load_faithful(), 2)
    >>> bool(result.converged)
    True
    """
    key = _check_key(key)
    n_components, n_init, max_iter, tol, reg_covar = _check_options(
        n_components, covariance_type, n_init, init, max_iter, tol, reg_covar
    )
    X = check_array(X, min_samples=n_components, missing=check_missing_option(missing))
    sample_weight = check_sample_weight(sample_weight, X.shape[0], X.dtype, min_positive=n_components)
    init_params = _check_init_params(init, n_components, covariance_type, X.shape[1], X.dtype)
    prior = resolve_prior(prior, X, n_components, covariance_type, sample_weight)
    X, sample_weight = lay_out_missing(X, sample_weight, covariance_type, missing)
    result = _fit_restarts(
        jax.random.split(key, n_init), X, sample_weight, init_params,
        n_components=n_components, covariance_type=covariance_type,
        init="params" if init_params is not None else init,
        max_iter=max_iter, tol=tol, reg_covar=reg_covar, fast=bool(fast),
        restart_batch_size=None if restart_batch_size is None else check_positive_int(
            restart_batch_size, "restart_batch_size"),
        prior=prior,
    )
    _raise_if_failed(result, "EM")
    return result


def lay_out_missing(X, sample_weight, covariance_type: str, missing: str):
    """Validated ``(X, sample_weight)`` as the drivers pass them on: with ``missing="marginalize"`` and NaN in
    ``X``, ``(IncompleteData, None)`` (the layout holds the weights); otherwise unchanged."""
    if missing != "marginalize":
        return X, sample_weight
    data = as_incomplete(np.asarray(X), sample_weight, covariance_type)
    return (data, None) if isinstance(data, IncompleteData) else (X, sample_weight)


def pad_datasets(datasets: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Stack data sets of different sizes into one array, padding with weight-0 rows.

    Parameters
    ----------
    datasets : sequence of array-like, each shape (N_i, D)

    Returns
    -------
    X : ndarray, shape (B, max N_i, D)
        Zero rows appended to each data set.
    sample_weight : ndarray, shape (B, max N_i)
        1 for real rows, 0 for padding.

    Examples
    --------
    >>> import numpy as np, jaxgmm
    >>> X, w = jaxgmm.pad_datasets([np.zeros((3, 2)), np.ones((5, 2))])
    >>> X.shape, w.tolist()
    ((2, 5, 2), [[1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    """
    arrays = [check_array(x, name=f"datasets[{i}]") for i, x in enumerate(datasets)]
    if not arrays:
        raise ValueError("datasets is empty.")
    n_features = {a.shape[1] for a in arrays}
    if len(n_features) != 1:
        raise ValueError(f"all data sets must have the same number of features; got {sorted(n_features)}.")
    n_max = max(a.shape[0] for a in arrays)
    dtype = np.result_type(*[a.dtype for a in arrays])
    X = np.zeros((len(arrays), n_max, n_features.pop()), dtype)
    weight = np.zeros((len(arrays), n_max), dtype)
    for i, a in enumerate(arrays):
        X[i, : a.shape[0]] = np.asarray(a)
        weight[i, : a.shape[0]] = 1
    return X, weight


@partial(
    jit,
    static_argnames=("n_components", "covariance_type", "init", "n_init", "max_iter", "fast", "batch_size"),
)
def _fit_datasets(
    keys, X, sample_weight, *, n_components, covariance_type, init, n_init, max_iter, tol, reg_covar, fast,
    batch_size=None, priors=None,
):
    """``priors``: a :class:`ConjugatePrior` with a leading data-set axis, or ``None``."""

    def one_dataset(args):
        key, x, w, prior = args
        return _fit_restarts(
            jax.random.split(key, n_init), x, w, None, n_components=n_components,
            covariance_type=covariance_type, init=init, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
            fast=fast, prior=prior,
        )

    return _map_fits(one_dataset, (keys, X, sample_weight, priors), keys.shape[0], batch_size)


def stacked_priors(prior, X: jax.Array, sample_weight: jax.Array, n_components: int, covariance_type: str):
    """One validated prior per data set of ``X (B, N, D)``, stacked on a leading axis (``"default"``: each
    data set's own mclust default, from its rows of positive weight), or ``None``."""
    if prior is None:
        return None
    Xn, wn = np.asarray(X), np.asarray(sample_weight)
    _refuse_missing_with_prior(Xn[wn > 0])
    if isinstance(prior, str):
        each = [resolve_prior(prior, Xn[b][wn[b] > 0], n_components, covariance_type, wn[b][wn[b] > 0])
                for b in range(Xn.shape[0])]
    else:
        each = [check_prior(prior, covariance_type, n_components, X.shape[-1], X.dtype)] * Xn.shape[0]
    return stack_priors(each, X.dtype)


def _prepare_datasets(X, sample_weight, *, min_positive: int, missing: str = "raise") -> tuple[jax.Array, jax.Array]:
    """Validated stacked data sets ``(B, N, D)`` and weights ``(B, N)`` (ones by default), padding rows
    (weight 0) zeroed in a copy, so they may hold anything, even NaN (elsewhere NaN is a missing value
    with ``missing="marginalize"``)."""
    X = np.array(X)  # a copy: padding rows are zeroed below
    if X.ndim != 3:
        raise ValueError(f"X must have shape (n_datasets, n_samples, n_features); got shape {X.shape}.")
    n_sets, n_samples, _ = X.shape
    if n_sets == 0:
        raise ValueError(f"X holds no data sets: shape {X.shape}.")
    if sample_weight is None:
        weight = np.ones((n_sets, n_samples))
    else:
        weight = np.asarray(sample_weight, dtype=np.float64)
        if weight.shape != (n_sets, n_samples):
            raise ValueError(f"sample_weight must have shape {(n_sets, n_samples)}; got {weight.shape}.")
    X[weight == 0] = 0
    return check_datasets(X, weight, min_positive=min_positive, missing=missing)


@partial(jit, static_argnames=("n_components", "covariance_type", "init", "n_init", "max_iter", "batch_size"))
def _fit_datasets_each_k(keys, X, sample_weight, ks, *, n_components, covariance_type, init, n_init, max_iter, tol,
                         reg_covar, batch_size=None, priors=None) -> FitResult:
    """:func:`_fit_each_k` for each data set (``jax.random.split(keys[b], n_init)`` its restarts' keys);
    leaves get leading ``(B, n_k)`` axes (:func:`jaxgmm.select_many`); ``priors`` with leading ``(B, n_k)``."""

    def one_dataset(args):
        key, x, w, prior = args
        return _fit_each_k(jax.random.split(key, n_init), x, w, ks, n_components=n_components,
                           covariance_type=covariance_type, init=init, max_iter=max_iter, tol=tol,
                           reg_covar=reg_covar, priors=prior)

    return _map_fits(one_dataset, (keys, X, sample_weight, priors), keys.shape[0], batch_size)


def fit_many(
    key: jax.Array,
    X,
    n_components: int,
    *,
    sample_weight=None,
    covariance_type: str = "full",
    n_init: int = 1,
    init: str = "kmeans",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    fast: bool = False,
    batch_size: int | None = None,
    missing: str = "raise",
    prior: "ConjugatePrior | str | None" = None,
) -> FitResult:
    """Fit one mixture to each of many data sets in a single compiled call.

    Data sets of different sizes share one shape by padding with rows of
    weight 0 (see :func:`pad_datasets`); padding changes nothing, so data set
    ``b`` gets what ``fit(jax.random.split(key, B)[b], X_b, ...)`` returns
    for the unpadded ``X_b`` (to floating-point rounding).

    Parameters
    ----------
    key : PRNG key
        Split into one key per data set.
    X : array-like, shape (B, N, D)
    n_components : int
    sample_weight : array-like, shape (B, N), optional
        0 marks padding rows; values of padding rows are ignored.
    covariance_type, n_init, init, max_iter, tol, reg_covar, fast : as :func:`fit`.
    batch_size : int, optional
        Data sets fitted together under ``vmap`` (a ``lax.map`` runs over
        the batches). Default :func:`default_batch_size`: all at once on an
        accelerator, one at a time on CPU. The result does not depend on it.
    prior : ConjugatePrior or "default", optional
        MAP-EM (see :func:`fit`): one prior for every data set, or
        ``"default"`` for each data set's own mclust default prior.

    Returns
    -------
    FitResult
        Every leaf with a leading ``(B,)`` axis.

    See Also
    --------
    fit : one data set.
    pad_datasets : data sets of different sizes as one array.
    jaxgmm.select_many : model selection for each data set.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from jaxgmm import fit_many, pad_datasets
    >>> rng = np.random.default_rng(0)
    >>> X, w = pad_datasets([rng.normal(size=(n, 2)) for n in (50, 80, 65)])
    >>> fit_many(jax.random.key(0), X, 2, sample_weight=w).params.means.shape
    (3, 2, 2)
    """
    key = _check_key(key)
    n_components, n_init, max_iter, tol, reg_covar = _check_options(
        n_components, covariance_type, n_init, init, max_iter, tol, reg_covar
    )
    if isinstance(init, GMMParams):
        raise ValueError("fit_many takes an init method name; for given parameters vmap jaxgmm.em_loop.")
    Xj, weight = _prepare_datasets(X, sample_weight, min_positive=n_components,
                                   missing=check_missing_option(missing))
    n_sets = Xj.shape[0]
    get_model(covariance_type).check_n_features(Xj.shape[2])
    priors = stacked_priors(prior, Xj, weight, n_components, covariance_type)
    if missing == "marginalize" and np.isnan(np.asarray(Xj)).any():
        Xj, weight = layout_many(np.asarray(Xj), np.asarray(weight), covariance_type), None
    result = _fit_datasets(
        jax.random.split(key, n_sets), Xj, weight, n_components=n_components,
        covariance_type=covariance_type, init=init, n_init=n_init, max_iter=max_iter, tol=tol,
        reg_covar=reg_covar, fast=bool(fast),
        batch_size=None if batch_size is None else check_positive_int(batch_size, "batch_size"),
        priors=priors,
    )
    _raise_if_failed(result, "EM")
    return result
