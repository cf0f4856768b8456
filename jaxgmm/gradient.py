"""Gradient ascent on the log-likelihood with optax, and EM's Q function for autodiff.

* :func:`log_likelihood` — the mean per-sample log-likelihood
  ``ℓ(θ) = Σ_n w_n log p(x_n | θ) / Σ_n w_n``, differentiable in the
  constrained parameters (:class:`~jaxgmm.GMMParams`) and in the
  unconstrained ones (:class:`~jaxgmm.UnconstrainedParams`).
* :func:`q_function` — EM's expected complete-data log-likelihood
  ``Q(θ′ | θ) = Σ_n w_n Σ_k r_nk(θ) log(α′_k N(x_n | μ′_k, Σ′_k)) / Σ_n w_n``,
  the function each M-step maximises in ``θ′``.
* :func:`fit_gradient` — any optax optimizer (Adam, SGD with momentum,
  L-BFGS with its line search) on ``−ℓ`` in the unconstrained coordinates,
  compiled with ``jit`` around a ``lax.scan``; optional mini-batches.
"""

import math
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.models import get_model
from jaxgmm.params import GMMParams
from jaxgmm.unconstrained import UnconstrainedParams, from_unconstrained, precisions_cholesky, to_unconstrained
from jaxgmm.validation import check_array, check_params, check_positive_int, check_sample_weight, is_traced
from jaxgmm.xla_options import jit

# optax is imported where it is used: it costs 0.12 s of a cold start that only fits by EM.
if TYPE_CHECKING:
    import optax


def _component_log_probs(params, X: jax.Array) -> jax.Array:
    """``log α_k + log N(x_n | μ_k, Σ_k)``, shape ``(N, K)``, for either parameterisation.

    From unconstrained coordinates the log-weights are a ``log_softmax`` and the
    precision factor is read off directly, so no ``log``/Cholesky round trip
    stands between the optimizer's coordinates and the objective.
    """
    if isinstance(params, UnconstrainedParams):
        log_weights = jax.nn.log_softmax(params.logits, axis=-1)
        prec_chol = precisions_cholesky(params)
    else:
        log_weights = jnp.log(params.weights)
        prec_chol = params.precisions_cholesky
    n_features = params.means.shape[-1]
    diff = X[:, None, :] - params.means[None, :, :]
    storage = get_model(params.covariance_type).storage
    maha = storage.squared_mahalanobis(diff, prec_chol)
    log_det = storage.log_det_precision_cholesky(prec_chol, n_features)
    return log_weights + log_det - 0.5 * n_features * math.log(2 * math.pi) - 0.5 * maha


def _weighted_mean(values: jax.Array, sample_weight: jax.Array | None) -> jax.Array:
    if sample_weight is None:
        return jnp.mean(values)
    sample_weight = jnp.asarray(sample_weight, values.dtype)
    # Zero-weight rows (padding) may hold anything; keep their NaN/inf out.
    return jnp.sum(jnp.where(sample_weight > 0, sample_weight * values, 0.0)) / jnp.sum(sample_weight)


def _zero_padding(X: jax.Array, sample_weight: jax.Array | None) -> jax.Array:
    """Rows of weight 0 set to 0, so they give finite values and gradients."""
    if sample_weight is None:
        return X
    return jnp.where(jnp.asarray(sample_weight)[:, None] > 0, X, 0.0)


def log_likelihood(params, X: jax.Array, sample_weight: jax.Array | None = None) -> jax.Array:
    r"""Mean per-sample log-likelihood ``ℓ(θ) = Σ_n w_n log p(x_n | θ) / Σ_n w_n``.

    A pure function: ``jax.grad`` differentiates it in the constrained
    parameters, and through :func:`~jaxgmm.from_unconstrained` in the
    unconstrained ones. Memory is ``O(N·K·D)``; for large ``N`` use
    mini-batches (``fit_gradient(..., batch_size=...)``).

    Parameters
    ----------
    params : GMMParams or UnconstrainedParams
    X : array, shape (N, D)
    sample_weight : array, shape (N,), optional
        Non-negative; rows of weight 0 are ignored.

    Returns
    -------
    array, shape ()
        Equals :func:`jaxgmm.score`; ``N ×`` this is the summed log-likelihood.

    See Also
    --------
    q_function : EM's surrogate, which touches it to first order.
    jaxgmm.fit_gradient : optax optimizers on it.

    Notes
    -----
    .. math::

       \ell(\theta) = \frac{\sum_n w_n \log \sum_k \alpha_k \mathcal{N}(x_n \mid \mu_k, \Sigma_k)}{\sum_n w_n}

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from jaxgmm import GMMParams, log_likelihood
    >>> p = GMMParams(jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]), jnp.ones(2), "spherical")
    >>> X = jnp.array([[-1.0], [0.5], [2.0]])
    >>> grads = jax.grad(log_likelihood)(p, X)
    >>> grads.means.shape, grads.covariances.shape
    ((2, 1), (2,))
    """
    X = _zero_padding(X, sample_weight)
    log_p = jax.nn.logsumexp(_component_log_probs(params, X), axis=-1)
    return _weighted_mean(log_p, sample_weight)


def q_function(params_new, params_old, X: jax.Array, sample_weight: jax.Array | None = None) -> jax.Array:
    r"""EM's expected complete-data log-likelihood ``Q(θ′ | θ)``, per sample.

    ``Q(θ′ | θ) = Σ_n w_n Σ_k r_nk(θ) [log α′_k + log N(x_n | μ′_k, Σ′_k)] / Σ_n w_n``
    with responsibilities ``r_nk(θ) = p(z_n = k | x_n, θ)``. The M-step
    maximises it over ``θ′``; Fisher's identity says
    ``∇_θ′ Q(θ′ | θ)`` at ``θ′ = θ`` equals ``∇ℓ(θ)`` (see :func:`log_likelihood`).

    Parameters
    ----------
    params_new : GMMParams or UnconstrainedParams
        ``θ′``, the argument to differentiate in.
    params_old : GMMParams or UnconstrainedParams
        ``θ``, which fixes the responsibilities.
    X : array, shape (N, D)
    sample_weight : array, shape (N,), optional

    Returns
    -------
    array, shape ()

    See Also
    --------
    log_likelihood : the objective whose gradient it shares at :math:`\theta' = \theta`.

    Notes
    -----
    .. math::

       Q(\theta' \mid \theta) = \frac{1}{\sum_n w_n} \sum_n w_n \sum_k r_{nk}(\theta)
       \bigl(\log \alpha'_k + \log \mathcal{N}(x_n \mid \mu'_k, \Sigma'_k)\bigr),
       \qquad
       \nabla_{\theta'} Q(\theta' \mid \theta)\big|_{\theta' = \theta} = \nabla \ell(\theta).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from jaxgmm import GMMParams, log_likelihood, q_function
    >>> p = GMMParams(jnp.array([0.3, 0.7]), jnp.array([[-1.0], [1.0]]), jnp.ones(2), "spherical")
    >>> X = jnp.array([[-1.0], [0.5], [2.0]])
    >>> g_q = jax.grad(q_function)(p, p, X)      # Fisher's identity:
    >>> g_l = jax.grad(log_likelihood)(p, X)     # the same gradient
    >>> bool(jnp.allclose(g_q.means, g_l.means, atol=1e-6))
    True
    """
    X = _zero_padding(X, sample_weight)
    resp = jax.nn.softmax(_component_log_probs(params_old, X), axis=-1)
    complete = jnp.sum(resp * _component_log_probs(params_new, X), axis=-1)
    return _weighted_mean(complete, sample_weight)


class GradientResult(NamedTuple):
    """What :func:`fit_gradient` returns.

    Attributes
    ----------
    params : GMMParams
        Parameters after the last step.
    log_likelihood : array, shape ()
        Mean (weighted) log-likelihood of ``params`` on the whole data set.
    history : array, shape (num_steps,)
        Mean log-likelihood of the parameters *before* each step (entry 0 is
        the initial parameters'), as EM's history; with mini-batches, the
        value on that step's batch.

    Examples
    --------
    >>> import jax.numpy as jnp, optax, jaxgmm
    >>> p = jaxgmm.GMMParams(jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]), jnp.ones(2), "spherical")
    >>> X = jnp.array([[-2.0], [-1.5], [1.0], [2.5]])
    >>> result = jaxgmm.fit_gradient(p, X, optimizer=optax.adam(0.1), num_steps=20)
    >>> result.history.shape, bool(result.log_likelihood > result.history[0])
    ((20,), True)
    """

    params: GMMParams
    log_likelihood: jax.Array
    history: jax.Array


def _draw_batch(key, cumulative, last_positive, batch_size):
    """Row indices drawn with replacement, in proportion to the sample weights.

    Inverting the cumulative weights never picks a row of weight 0, so padded
    data sets sample like unpadded ones. The batch's plain mean is then an
    unbiased estimate of the weighted mean log-likelihood.
    """
    u = jax.random.uniform(key, (batch_size,), dtype=cumulative.dtype) * cumulative[-1]
    return jnp.minimum(jnp.searchsorted(cumulative, u, side="right"), last_positive)


def _stores_value_and_grad(opt_state) -> bool:
    """True if the optimizer state carries the last value and gradient (line searches do)."""
    import optax

    return optax.tree.get(opt_state, "value") is not None and optax.tree.get(opt_state, "grad") is not None


def gradient_steps(uparams0, X, sample_weight, key, *, optimizer, num_steps, batch_size=None):
    """Run ``num_steps`` optimizer steps on ``−ℓ`` from unconstrained parameters (not jitted).

    The pure core of :func:`fit_gradient`, without input checks or the
    constrained/unconstrained conversion, for use inside your own ``jit``.

    Parameters
    ----------
    uparams0 : UnconstrainedParams
    X : array, shape (N, D)
    sample_weight : array, shape (N,), or None
        Required (not None) with ``batch_size``.
    key : PRNG key or None
        Draws the mini-batches; ignored without ``batch_size``.
    optimizer : optax.GradientTransformation
    num_steps : int
    batch_size : int, optional

    Returns
    -------
    uparams : UnconstrainedParams
        After the last step.
    history : array, shape (num_steps,)
        Mean log-likelihood before each step.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, optax
    >>> from jaxgmm import GMMParams, to_unconstrained
    >>> p = GMMParams(jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]), jnp.ones(2), "spherical")
    >>> X = jnp.array([[-2.0], [-1.5], [1.0], [2.5]])
    >>> run = jax.jit(lambda u: gradient_steps(u, X, None, None, optimizer=optax.adam(0.1), num_steps=20))
    >>> u, history = run(to_unconstrained(p))
    >>> history.shape, bool(history[-1] > history[0])
    ((20,), True)
    """
    import optax

    tx = optax.with_extra_args_support(optimizer)  # plain optimizers ignore value/grad/value_fn
    opt_state = tx.init(uparams0)
    reuse = batch_size is None and _stores_value_and_grad(opt_state)
    if batch_size is not None:
        cumulative = jnp.cumsum(sample_weight)
        last_positive = X.shape[0] - 1 - jnp.argmax(sample_weight[::-1] > 0)
        step_keys = jax.random.split(key, num_steps)
    else:
        step_keys = None

    def step(carry, step_key):
        uparams, opt_state = carry
        if batch_size is None:
            objective = partial(_negative_log_likelihood, X=X, sample_weight=sample_weight)
        else:
            rows = _draw_batch(step_key, cumulative, last_positive, batch_size)
            objective = partial(_negative_log_likelihood, X=X[rows], sample_weight=None)
        if reuse:  # L-BFGS: the line search already evaluated this point
            value, grad = optax.value_and_grad_from_state(objective)(uparams, state=opt_state)
        else:
            value, grad = jax.value_and_grad(objective)(uparams)
        updates, opt_state = tx.update(grad, opt_state, uparams, value=value, grad=grad, value_fn=objective)
        return (optax.apply_updates(uparams, updates), opt_state), -value

    (uparams, _), history = jax.lax.scan(step, (uparams0, opt_state), step_keys, length=num_steps)
    return uparams, history


def _negative_log_likelihood(uparams, X, sample_weight):
    return -log_likelihood(uparams, X, sample_weight)


@partial(jit, static_argnames=("optimizer", "num_steps", "batch_size"))
def _fit_gradient(params0, X, sample_weight, key, *, optimizer, num_steps, batch_size):
    uparams, history = gradient_steps(
        to_unconstrained(params0), X, sample_weight, key,
        optimizer=optimizer, num_steps=num_steps, batch_size=batch_size,
    )
    return GradientResult(from_unconstrained(uparams), log_likelihood(uparams, X, sample_weight), history)


def _check_optimizer(optimizer) -> None:
    """Raise ``TypeError`` unless ``optimizer`` is an optax transformation (``init``/``update``)."""
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(
            "optimizer must be an optax GradientTransformation such as optax.adam(1e-2) or optax.lbfgs(); "
            f"got {type(optimizer).__name__}."
        )


def _check_gradient_inputs(params0, X, sample_weight):
    """Validate ``(params0, X, sample_weight)`` at the edge; return them converted to X's float dtype.

    Values are checked only when concrete (under ``vmap``/``jit`` only
    shapes). Weights must be positive: their logarithms are coordinates.
    """
    if not isinstance(params0, GMMParams):
        raise TypeError(f"params0 must be a GMMParams; got {type(params0).__name__}.")
    X = check_array(X)
    n_samples, n_features = X.shape
    if params0.means.shape[-1] != n_features:
        raise ValueError(f"params0 has {params0.means.shape[-1]} features but X has {n_features}.")
    leaves = (params0.weights, params0.means, params0.covariances)
    if is_traced(*leaves):
        params0 = jax.tree.map(lambda a: jnp.asarray(a, X.dtype), params0)
    else:
        params0 = check_params(*leaves, params0.covariance_type, n_features=n_features, dtype=X.dtype)
        if np.any(np.asarray(leaves[0]) <= 0):
            raise ValueError("params0.weights must be positive: gradient methods optimise log-weights.")
    sample_weight = None if sample_weight is None else check_sample_weight(sample_weight, n_samples, X.dtype)
    return params0, X, sample_weight


def _raise_if_diverged(result_ll, params, what: str) -> None:
    """No silent NaN: raise ``ValueError`` if a concrete result is not finite."""
    leaves = [result_ll, *jax.tree.leaves(params)]
    if is_traced(*leaves):
        return
    if not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves):
        raise ValueError(
            f"{what} diverged: the log-likelihood or parameters became non-finite. Lower the learning "
            "rate, use fewer steps, or start closer (e.g. from an EM fit)."
        )


def fit_gradient(
    params0: GMMParams,
    X,
    *,
    optimizer: "optax.GradientTransformation",
    num_steps: int,
    sample_weight=None,
    key: jax.Array | None = None,
    batch_size: int | None = None,
) -> GradientResult:
    """Maximise the log-likelihood by gradient steps of an optax optimizer.

    The optimizer minimises ``−ℓ`` (see :func:`log_likelihood`) in the
    unconstrained coordinates of :func:`~jaxgmm.to_unconstrained`, inside one
    ``jit``-compiled ``lax.scan`` of ``num_steps`` steps. Line-search methods
    (``optax.lbfgs()``) get ``value``, ``grad`` and ``value_fn`` and reuse the
    value and gradient their line search computed. Works under ``jax.vmap``
    over initial parameters (restarts) and over data sets.

    The optimizer and ``num_steps`` are static: reuse one optimizer object
    (``opt = optax.adam(1e-2)``) across calls to avoid recompiling, and use
    ``optax.inject_hyperparams`` to make a learning rate a traced value.

    Parameters
    ----------
    params0 : GMMParams
        Initial parameters; weights must be positive.
    X : array-like, shape (N, D)
    optimizer : optax.GradientTransformation
        E.g. ``optax.adam(1e-2)``, ``optax.sgd(1e-2, momentum=0.9)``,
        ``optax.lbfgs()``.
    num_steps : int
        Number of optimizer steps (static).
    sample_weight : array-like, shape (N,), optional
        Non-negative; the objective is the weighted mean.
    key : PRNG key, optional
        Required with ``batch_size``: draws the mini-batches.
    batch_size : int, optional
        Mini-batch gradient ascent: each step uses ``batch_size`` rows drawn
        with replacement in proportion to ``sample_weight`` (static). Use a
        stochastic optimizer (Adam, SGD); a line search on a changing batch
        is not meaningful.

    Returns
    -------
    GradientResult
        Final params, their log-likelihood on all of ``X``, and the
        ``(num_steps,)`` history.

    Raises
    ------
    ValueError
        For invalid input (named in the message) or when the run became
        non-finite (for concrete inputs; under ``vmap`` nothing is raised).

    Examples
    --------
    >>> import jax, optax, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> start = jaxgmm.initialize(jax.random.key(0), jax.numpy.asarray(X, "float32"), 2)
    >>> result = jaxgmm.fit_gradient(start, X, optimizer=optax.adam(0.05), num_steps=30)
    >>> result.history.shape, bool(result.log_likelihood >= result.history[0])
    ((30,), True)
    """
    _check_optimizer(optimizer)
    num_steps = check_positive_int(num_steps, "num_steps")
    params0, X, sample_weight = _check_gradient_inputs(params0, X, sample_weight)
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
        if key is None:
            raise ValueError("batch_size needs a PRNG key to draw the mini-batches: pass key=jax.random.key(0).")
        if sample_weight is None:
            sample_weight = jnp.ones(X.shape[0], X.dtype)
    elif key is not None:
        raise ValueError("key is only used to draw mini-batches; pass batch_size as well, or no key.")
    result = _fit_gradient(
        params0, X, sample_weight, key, optimizer=optimizer, num_steps=num_steps, batch_size=batch_size
    )
    _raise_if_diverged(result.log_likelihood, result.params, "fit_gradient")
    return result
