"""EM and gradient optimizers side by side: traces, iterations and wall-clock to an optimum.

:func:`compare` runs EM and each given optax optimizer from the same initial
parameters on the same data, each as one compiled program, and reports per
method the log-likelihood after every iteration and how many iterations (and
seconds) it took to come within ``epsilon`` of the best log-likelihood any
method found. The notebooks plot its output.
"""

import time
import warnings
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.em import em_loop
from jaxgmm.gradient import _check_gradient_inputs, _check_optimizer, gradient_steps, log_likelihood
from jaxgmm.params import GMMParams
from jaxgmm.unconstrained import from_unconstrained, to_unconstrained
from jaxgmm.validation import check_nonnegative, check_positive_int, is_traced
from jaxgmm.xla_options import jit

EM = "EM"


class MethodTrace(NamedTuple):
    """One method's run in :func:`compare`.

    Attributes
    ----------
    params : GMMParams
        Parameters after the last iteration.
    trace : numpy array, shape (num_steps + 1,)
        Mean log-likelihood after ``0, 1, …, num_steps`` iterations (entry 0
        is the initial parameters'). NaN where the run became non-finite.
    iterations_to_epsilon : int
        First ``i`` with ``trace[i] >= best − epsilon``; ``-1`` if never.
    seconds_to_epsilon : float
        ``iterations_to_epsilon × seconds / num_steps``: the time to get there,
        assuming every iteration costs the same (line-search iterations
        vary); NaN if never.
    seconds : float
        Wall-clock of the whole compiled run (compilation excluded).

    Examples
    --------
    >>> import jax, optax, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> start = jaxgmm.initialize(jax.random.key(0), jax.numpy.asarray(X, "float32"), 2)
    >>> out = jaxgmm.compare(start, X, {"Adam": optax.adam(1e-2)}, num_steps=20, epsilon=1e-3)
    >>> em = out.methods["EM"]
    >>> em.trace.shape, bool((jax.numpy.diff(em.trace) >= -1e-5).all())   # EM never goes down
    ((21,), True)
    """

    params: GMMParams
    trace: np.ndarray
    iterations_to_epsilon: int
    seconds_to_epsilon: float
    seconds: float


class Comparison(NamedTuple):
    """What :func:`compare` returns.

    Attributes
    ----------
    methods : dict of str to MethodTrace
        ``"EM"`` first, then the optimizers in the order given.
    best_log_likelihood : float
        The highest finite log-likelihood in any trace.
    epsilon : float

    Examples
    --------
    >>> import jax, optax, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> start = jaxgmm.initialize(jax.random.key(0), jax.numpy.asarray(X, "float32"), 2)
    >>> out = jaxgmm.compare(start, X, {"Adam": optax.adam(1e-2)}, num_steps=20, epsilon=1e-3)
    >>> sorted(out.methods), out.epsilon
    (['Adam', 'EM'], 0.001)
    """

    methods: dict
    best_log_likelihood: float
    epsilon: float


def _timed(fn, *args):
    """Compile ``fn`` for ``args`` ahead of time, then return (output, seconds of one run)."""
    compiled = jit(fn).lower(*args).compile()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - start


def _em_run(num_steps, reg_covar):
    def run(params0, X, sample_weight):
        result = em_loop(params0, X, max_iter=num_steps, tol=0.0, reg_covar=reg_covar, sample_weight=sample_weight)
        # history[i] is the log-likelihood before M-step i; append the final params' value.
        return result.params, jnp.append(result.history, log_likelihood(result.params, X, sample_weight))

    return run


def _gradient_run(optimizer, num_steps):
    def run(params0, X, sample_weight):
        uparams, history = gradient_steps(
            to_unconstrained(params0), X, sample_weight, None, optimizer=optimizer, num_steps=num_steps
        )
        final = log_likelihood(uparams, X, sample_weight)
        return from_unconstrained(uparams), jnp.append(history, final)

    return run


def compare(
    params0: GMMParams,
    X,
    optimizers: Mapping,
    *,
    num_steps: int,
    epsilon: float = 1e-6,
    reg_covar: float = 0.0,
    sample_weight=None,
) -> Comparison:
    """Run EM and gradient optimizers from ``params0`` on ``X``; compare traces and times.

    Every method runs ``num_steps`` iterations (an EM iteration is one E-step
    and one M-step; a gradient iteration is one optimizer step, with its line
    search for L-BFGS) as one compiled program, timed after compilation.

    Parameters
    ----------
    params0 : GMMParams
        Shared initial parameters (positive weights).
    X : array-like, shape (N, D)
    optimizers : mapping of str to optax.GradientTransformation
        E.g. ``{"Adam": optax.adam(1e-2), "L-BFGS": optax.lbfgs()}``; the
        name ``"EM"`` is reserved.
    num_steps : int
        Iterations per method.
    epsilon : float
        Absolute tolerance on the mean log-likelihood for "reached the best".
    reg_covar : float
        EM's ``reg_covar``. The default 0 makes EM maximise the same
        likelihood as the gradient methods; raise it if a component collapses.
    sample_weight : array-like, shape (N,), optional

    Returns
    -------
    Comparison
        A method whose trace becomes non-finite raises a ``RuntimeWarning``
        naming it, and keeps the NaNs in its trace.

    Examples
    --------
    >>> import jax, optax, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> start = jaxgmm.initialize(jax.random.key(0), jax.numpy.asarray(X, "float32"), 2)
    >>> out = jaxgmm.compare(start, X, {"Adam": optax.adam(1e-2)}, num_steps=20, epsilon=1e-3)
    >>> list(out.methods), out.methods["EM"].trace.shape
    (['EM', 'Adam'], (21,))
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    epsilon = check_nonnegative(epsilon, "epsilon")
    reg_covar = check_nonnegative(reg_covar, "reg_covar")
    if not isinstance(optimizers, Mapping):
        raise TypeError("optimizers must be a mapping of names to optax optimizers, e.g. {'Adam': optax.adam(1e-2)}.")
    if EM in optimizers:
        raise ValueError(f"the name {EM!r} is reserved for the EM run; rename that optimizer.")
    for optimizer in optimizers.values():
        _check_optimizer(optimizer)
    if is_traced(X, sample_weight, *jax.tree.leaves(params0)):
        raise ValueError("compare times compiled runs and needs concrete inputs; call it outside jit/vmap.")
    params0, X, sample_weight = _check_gradient_inputs(params0, X, sample_weight)
    if sample_weight is None:
        sample_weight = jnp.ones(X.shape[0], X.dtype)

    runs = {EM: _em_run(num_steps, reg_covar)}
    runs.update({name: _gradient_run(opt, num_steps) for name, opt in optimizers.items()})
    outputs = {}
    for name, run in runs.items():
        (params, trace), seconds = _timed(run, params0, X, sample_weight)
        trace = np.asarray(trace, np.float64)
        if not np.all(np.isfinite(trace)):
            warnings.warn(f"compare: the {name} run became non-finite; its trace holds NaN.", RuntimeWarning)
            trace = np.where(np.isfinite(trace), trace, np.nan)
        outputs[name] = (params, trace, seconds)

    best = max(np.nanmax(trace, initial=-np.inf) for _, trace, _ in outputs.values())
    methods = {}
    for name, (params, trace, seconds) in outputs.items():
        reached = np.flatnonzero(trace >= best - epsilon)
        iterations = int(reached[0]) if reached.size else -1
        to_eps = iterations * seconds / num_steps if reached.size else float("nan")
        methods[name] = MethodTrace(params, trace, iterations, to_eps, seconds)
    return Comparison(methods, float(best), float(epsilon))
