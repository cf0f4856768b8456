"""scikit-learn's ``GaussianMixture``, fitted by jaxgmm's EM (needs the ``sklearn`` extra).

:class:`GaussianMixture` takes the same constructor parameters, has the same
fitted attributes and methods as :class:`sklearn.mixture.GaussianMixture`,
and passes scikit-learn's estimator checks. The differences:

* the ``n_init`` restarts run in parallel in one compiled call (``vmap``);
* ``random_state`` seeds JAX's generator, not numpy's, so a seed gives other
  (equally valid) initialisations than scikit-learn's. An integer seed ``s``
  gives what :func:`jaxgmm.fit` gives with ``jax.random.key(s)``;
* ``init_params="k-means++"`` assigns every sample to its nearest k-means++
  seed; scikit-learn instead starts each component from its seed point alone
  (covariance ``reg_covar·I``);
* ``fit`` also takes ``sample_weight``;
* ``verbose`` messages are printed after the parallel run, from its history
  (per-iteration times are the run's average).

Errors that scikit-learn raises for bad ``*_init`` arrays, too few samples or
a fit whose covariances became ill-defined carry scikit-learn's words (so code
matching them keeps working), some followed by jaxgmm's detail. The private
methods that scikit-learn's own tests and subclasses use exist too:
``_get_parameters``, ``_set_parameters``, ``_initialize(X, resp)`` and
``_n_parameters``. ``tests/test_sklearn_own_tests.py`` runs scikit-learn's own
test files against this class.

Precision: JAX computes in float32 unless ``jax_enable_x64`` is on. float64
input is then fitted in float32 and the fitted attributes are cast back to
float64 (so they carry float32 accuracy); with ``jax_enable_x64`` float64
input is fitted in float64, and from the same starting parameters the fitted
attributes equal scikit-learn's to rounding.
"""

import numbers
import time
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

try:
    from sklearn.base import BaseEstimator, DensityMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils import check_array as sklearn_check_array
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("jaxgmm.sklearn needs scikit-learn: pip install 'jaxgmm[sklearn]'") from exc

from jaxgmm import density
from jaxgmm.em import EMResult, em_loop
from jaxgmm.fit import FitResult, _best_of, _fit_restarts, _map_fits, lay_out_missing, resolve_prior
from jaxgmm.incomplete import check_missing_option
from jaxgmm.init import INIT_METHODS, initialize, params_from_responsibilities
from jaxgmm.models import get_model
from jaxgmm.params import GMMParams, check_covariance_type, covariance_shape, n_parameters
from jaxgmm.sampling import sample as _sample
from jaxgmm.validation import (
    check_array,
    check_n_components,
    check_nonnegative,
    check_params,
    check_positive_int,
    check_sample_weight,
    float_dtype,
)
from jaxgmm.xla_options import jit

_MIN_SAMPLE_BUCKET = 16  # GaussianMixture.sample draws at least this many (then keeps n_samples)


# scikit-learn's messages (sklearn/mixture/_base.py and _gaussian_mixture.py), word for word: code that
# matches them, scikit-learn's own tests among it, works with this class too.
ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have ill-defined empirical covariance "
    "(for instance caused by singleton or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)
FLOAT32_ACCURACY = " The numerical accuracy can also be improved by passing float64 data instead of float32."


def _check_shape(array: np.ndarray, shape: tuple, name: str) -> None:
    """scikit-learn's ``_check_shape``."""
    if array.shape != shape:
        raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got {array.shape}")


def _init_array(value, name: str, allow_nd: bool = False) -> np.ndarray:
    """A ``*_init`` array checked as scikit-learn checks it (float64 or float32; NaN, inf rejected)."""
    try:
        return sklearn_check_array(value, dtype=[np.float64, np.float32], ensure_2d=False, allow_nd=allow_nd)
    except ValueError as exc:
        raise ValueError(f"{exc} (in {name})") from None


def check_weights_init(weights, n_components: int) -> np.ndarray:
    """scikit-learn's ``_check_weights``: shape ``(K,)``, values in [0, 1], summing to 1 (to 1e-6; scikit-learn
    asks 1e-8 of float64 weights); returns float64."""
    weights = _init_array(weights, "weights_init")
    _check_shape(weights, (n_components,), "weights")
    low, high = float(np.min(weights)), float(np.max(weights))
    if low < 0.0 or high > 1.0:
        # scikit-learn's text labels the minimum "max value" and the maximum "min value"; kept as is.
        raise ValueError(
            f"The parameter 'weights' should be in the range [0, 1], but got max value {low:.5f}, min value "
            f"{high:.5f} (weights_init ranges from {low:.6g} to {high:.6g})"
        )
    # scikit-learn allows 1e-8 for float64 weights; 1e-6 here accepts float32 weights cast to float64 too.
    atol = 1e-6
    if not abs(1.0 - float(np.sum(weights))) <= atol:
        raise ValueError(
            f"The parameter 'weights' should be normalized, but got sum(weights) = {np.sum(weights):.5f} "
            f"(weights_init must sum to 1 within {atol:g})"
        )
    return weights.astype(np.float64)


def check_means_init(means, n_components: int, n_features: int) -> np.ndarray:
    """scikit-learn's ``_check_means``: shape ``(K, D)``, finite; returns float64."""
    means = _init_array(means, "means_init")
    _check_shape(means, (n_components, n_features), "means")
    return means.astype(np.float64)


def check_precisions_init(precisions, covariance_type: str, n_components: int, n_features: int) -> np.ndarray:
    """scikit-learn's ``_check_precisions`` for any covariance type (by its storage layout): shape as the
    covariances; symmetric positive definite matrices (``full``, ``tied`` layouts) or positive values;
    returns float64."""
    layout = get_model(covariance_type).storage
    precisions = _init_array(precisions, "precisions_init", allow_nd=layout.kind == "full")
    _check_shape(precisions, covariance_shape(covariance_type, n_components, n_features),
                 f"{covariance_type} precision")
    if layout.is_matrix:
        for k, matrix in enumerate(precisions.reshape((-1, n_features, n_features))):
            if not (np.all(np.isclose(matrix, matrix.T)) and np.all(np.linalg.eigvalsh(matrix) > 0.0)):
                where = "" if layout.kind == "tied" else f"[{k}]"
                raise ValueError(
                    f"'{covariance_type} precision' should be symmetric, positive-definite "
                    f"(precisions_init{where} is not)"
                )
    elif np.any(precisions <= 0.0):
        raise ValueError(f"'{covariance_type} precision' should be positive")
    return precisions.astype(np.float64)


def key_from_random_state(random_state) -> jax.Array:
    """A JAX PRNG key from scikit-learn's ``random_state``.

    An integer is the seed itself (``jax.random.key(seed)``); ``None`` or a
    ``numpy.random.RandomState`` gives a seed drawn from that generator.
    """
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        check_random_state(random_state)  # validates the range, as scikit-learn does
        return jax.random.key(int(random_state))
    return jax.random.key(int(check_random_state(random_state).randint(np.iinfo(np.int32).max)))


def covariances_from_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    """``Σ = Λ⁻¹`` for precisions of any covariance type (numpy, float64)."""
    return get_model(covariance_type).storage.covariances_from_precisions(precisions)


def _initial_params(key, X, sample_weight, given, *, n_components, covariance_type, init, reg_covar) -> GMMParams:
    """scikit-learn's initialisation: parameters from responsibilities, then the given arrays replace them.

    ``given`` maps ``weights``/``means``/``covariances`` to an array or ``None``.
    """
    params = initialize(
        key, X, n_components, covariance_type=covariance_type, method=init, reg_covar=reg_covar,
        sample_weight=sample_weight,
    )
    return params.replace(**{name: a for name, a in given.items() if a is not None})


def _lower_bounds(restarts: EMResult) -> np.ndarray:
    """scikit-learn's ``lower_bound_`` of each restart, ``(n_init,)``: the log-likelihood of its last
    E-step, i.e. of the parameters before its last M-step (``-inf`` without any iteration)."""
    n_iter = np.asarray(restarts.n_iter)
    history = np.asarray(restarts.history)
    last = history[np.arange(n_iter.shape[0]), np.maximum(n_iter - 1, 0)] if history.shape[-1] else -np.inf
    return np.where(n_iter > 0, last, -np.inf)


def _best_by_lower_bound(result: FitResult) -> FitResult:
    """The restart scikit-learn keeps: the first with the highest ``lower_bound_``.

    The functional API ranks restarts by the log-likelihood of the parameters they return; scikit-learn
    ranks by the bound before the last M-step, and the estimator follows it (the two orders rarely differ).
    """
    bounds = _lower_bounds(result.restarts)
    best = int(np.argmax(np.where(np.isnan(bounds), -np.inf, bounds)))
    if best == int(result.best_index):
        return result
    chosen = jax.tree.map(lambda leaf: leaf[best], result.restarts)
    return FitResult(*chosen, restarts=result.restarts, best_index=jnp.asarray(best))


@partial(jit, static_argnames=("n_components", "covariance_type", "init", "max_iter"))
def _fit_restarts_overriding(keys, X, sample_weight, given, *, n_components, covariance_type, init, max_iter, tol,
                             reg_covar, prior=None):
    """Restarts (see :func:`jaxgmm.fit.default_batch_size`) where some initial arrays are given; keep the best."""

    def one_restart(key):
        params = _initial_params(
            key, X, sample_weight, given, n_components=n_components, covariance_type=covariance_type,
            init=init, reg_covar=reg_covar,
        )
        return em_loop(params, X, max_iter=max_iter, tol=tol, reg_covar=reg_covar, sample_weight=sample_weight,
                       prior=prior)

    return _best_of(_map_fits(one_restart, keys, keys.shape[0], None))


def _print_verbose(estimator, result, n_runs, elapsed, previous):
    """scikit-learn's verbose messages for ``estimator``, reconstructed from the restarts' histories (any result
    whose ``restarts`` have ``n_iter``, ``history`` and ``converged``)."""
    if not estimator.verbose or estimator.max_iter == 0:
        return
    restarts = result.restarts
    for r in range(n_runs):
        n_iter = int(restarts.n_iter[r])
        history = np.asarray(restarts.history[r, :n_iter], np.float64)
        changes = np.diff(np.concatenate([[previous], history]))
        per_iter = elapsed / max(1, n_runs * n_iter)
        print(f"Initialization {r}")
        for i in range(estimator.verbose_interval, n_iter + 1, estimator.verbose_interval):
            if estimator.verbose == 1:
                print(f"  Iteration {i}")
            else:
                print(f"  Iteration {i}\t time lapse {per_iter:.5f}s\t ll change {changes[i - 1]:.5f}")
        status = "converged" if bool(restarts.converged[r]) else "did not converge"
        if estimator.verbose == 1:
            print(f"Initialization {status}.")
        else:
            lower_bound = float(_lower_bounds(restarts)[r])
            print(f"Initialization {status}. time lapse {elapsed / n_runs:.5f}s\t lower bound {lower_bound:.5f}.")


class _FittedMixture(DensityMixin, BaseEstimator):
    """What scikit-learn's two mixtures share once fitted: validation of new data, the density and its
    predictions (from :meth:`_density_params`), and sampling from the fitted point estimate."""

    def _params(self) -> GMMParams:
        """The fitted parameters as a :class:`GMMParams` in the dtype JAX computes in."""
        dtype = float_dtype(self.means_.dtype)
        return GMMParams(
            jnp.asarray(self.weights_, dtype), jnp.asarray(self.means_, dtype),
            jnp.asarray(self.covariances_, dtype), self.covariance_type,
        )

    def _validate_X(self, X):
        """``(numpy X in its float dtype, JAX X in the compute dtype)`` for a fitted model."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return X, check_array(X, n_features=self.means_.shape[1])

    def _density_params(self) -> GMMParams:
        """The mixture whose weighted log-densities ``predict``, ``predict_proba`` and ``score_samples`` use."""
        return self._params()

    # ---------------------------------------------------------------- predict

    def score_samples(self, X):
        """Log-density of each sample, shape ``(N,)``."""
        X, Xj = self._validate_X(X)
        return np.asarray(density.score_samples(self._density_params(), Xj), X.dtype)

    def score(self, X, y=None):
        """Mean log-likelihood of the samples ``X (N, D)`` (a float)."""
        return float(np.mean(self.score_samples(X)))

    def predict(self, X):
        """Most probable component of each sample, shape ``(N,)``."""
        _, Xj = self._validate_X(X)
        return np.asarray(density.predict(self._density_params(), Xj))

    def predict_proba(self, X):
        """Responsibilities ``p(z = k | x)``, shape ``(N, K)``."""
        X, Xj = self._validate_X(X)
        return np.asarray(density.predict_proba(self._density_params(), Xj), X.dtype)

    def sample(self, n_samples=1):
        """Draw ``n_samples`` points; returns ``(X (n_samples, D), y (n_samples,))`` sorted by component.

        Uses a key from ``random_state`` (an integer seed gives the same
        draws on every call, as in scikit-learn).
        """
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least one sample.")
        n_samples = int(n_samples)
        key = jax.random.fold_in(key_from_random_state(self.random_state), 1)
        # Drawn in a power-of-two count and cut: one compiled program per bucket, not per n_samples
        # (scikit-learn's own test draws 1, 2, ..., 99 samples).
        bucket = max(_MIN_SAMPLE_BUCKET, 1 << (n_samples - 1).bit_length())
        X, labels = _sample(key, self._params(), bucket)
        X, labels = np.asarray(X, self.means_.dtype)[:n_samples], np.asarray(labels, np.int64)[:n_samples]
        order = np.argsort(labels, kind="stable")
        return X[order], labels[order]


class GaussianMixture(_FittedMixture):
    """Gaussian mixture fitted by EM in JAX, with scikit-learn's API.

    Parameters
    ----------
    n_components : int, default=1
    covariance_type : str, default="full"
        scikit-learn's four (``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``) or one of
        mclust's 14 (:data:`~jaxgmm.COVARIANCE_MODELS`).
    tol : float, default=1e-3
        Convergence threshold on the change of the mean log-likelihood.
    reg_covar : float, default=1e-6
        Added to the diagonal of covariances.
    max_iter : int, default=100
        EM iterations per restart (0: initialise only).
    n_init : int, default=1
        Restarts, run in parallel; the best log-likelihood wins.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
    weights_init : array-like, shape (K,), optional
    means_init : array-like, shape (K, D), optional
    precisions_init : array-like, optional
        Shape as ``covariances_``. Given initial arrays replace the ones
        computed by ``init_params``, as in scikit-learn.
    random_state : int, RandomState instance or None
        Seeds JAX's generator (see the module notes).
    warm_start : bool, default=False
        Refit starting from the previous solution (one restart).
    verbose : int, default=0
    verbose_interval : int, default=10
    missing : {"raise", "marginalize"}, default="raise"
        ``"marginalize"`` (jaxgmm's): NaN entries are values missing at
        random, in ``fit`` and in every method that reads data; EM maximises
        the likelihood of the observed values (see :func:`jaxgmm.fit`).
        ``"raise"``: scikit-learn's error for NaN input.
    prior : None, "default" or jaxgmm.ConjugatePrior, default=None
        jaxgmm's addition: MAP-EM with a conjugate prior (mclust's
        ``priorControl()`` for ``"default"``; see :func:`jaxgmm.fit`).
        ``lower_bound_`` and ``lower_bounds_`` are then mean log-posteriors.

    Attributes
    ----------
    weights_ : ndarray, shape (K,)
    means_ : ndarray, shape (K, D)
    covariances_, precisions_, precisions_cholesky_ : ndarray
        Shapes ``(K, D, D)`` full, ``(D, D)`` tied, ``(K, D)`` diag, ``(K,)``
        spherical; ``precisions_cholesky_`` is upper triangular.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood in the last E-step of the best restart.
    lower_bounds_ : ndarray, shape ``(n_iter_,)``
        Its mean log-likelihood at every iteration.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only for input with string column names (DataFrames).

    Examples
    --------
    >>> import numpy as np
    >>> from jaxgmm.sklearn import GaussianMixture
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]], dtype=float)
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> sorted(np.round(gm.means_[:, 0]).tolist())
    [1.0, 10.0]
    >>> gm.predict([[0, 0], [12, 3]]).tolist() == [gm.predict([[1, 2]])[0], gm.predict([[10, 2]])[0]]
    True
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        missing="raise",
        prior=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.missing = missing
        self.prior = prior

    # ------------------------------------------------------------------ checks

    def _check_hyperparameters(self):
        check_n_components(self.n_components)
        check_covariance_type(self.covariance_type)
        check_nonnegative(self.tol, "tol")
        check_nonnegative(self.reg_covar, "reg_covar")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 0:
            raise ValueError(f"max_iter must be an integer >= 0; got {self.max_iter!r}.")
        check_positive_int(self.n_init, "n_init")
        check_positive_int(self.verbose_interval, "verbose_interval")
        if self.init_params not in INIT_METHODS:
            raise ValueError(f"Invalid init_params {self.init_params!r}: expected one of {INIT_METHODS}.")
        check_missing_option(self.missing)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.missing == "marginalize"
        return tags

    def _finite(self) -> dict:
        """``validate_data``'s option: NaN allowed where it marks a missing value."""
        return dict(ensure_all_finite="allow-nan" if self.missing == "marginalize" else True)

    def _given_initial_arrays(self, n_features: int, n_components: int | None = None) -> dict:
        """The user's ``*_init`` arrays, checked as scikit-learn checks them (its messages), as float64
        numpy (``None`` where not given); ``precisions_init`` is returned as ``covariances``."""
        k = self.n_components if n_components is None else n_components
        given = dict(weights=None, means=None, covariances=None)
        if self.weights_init is not None:
            given["weights"] = check_weights_init(self.weights_init, k)
        if self.means_init is not None:
            given["means"] = check_means_init(self.means_init, k, n_features)
        if self.precisions_init is not None:
            precisions = check_precisions_init(self.precisions_init, self.covariance_type, k, n_features)
            given["covariances"] = covariances_from_precisions(precisions, self.covariance_type)
        return given

    def _validate_X(self, X):
        """``(numpy X in its float dtype, JAX X in the compute dtype)`` for a fitted model (NaN laid out as
        missing values with ``missing="marginalize"``)."""
        check_is_fitted(self)
        check_missing_option(self.missing)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False, **self._finite())
        Xj = check_array(X, n_features=self.means_.shape[1], missing=self.missing)
        return X, lay_out_missing(Xj, None, self.covariance_type, self.missing)[0]

    # ------------------------------------------------------------------- fit

    def fit(self, X, y=None, sample_weight=None):
        """Estimate the parameters with EM (``n_init`` restarts in parallel).

        Parameters
        ----------
        X : array-like, shape (N, D)
        y : ignored
        sample_weight : array-like, shape (N,), optional
            Non-negative; integer weights act like repeated rows.

        Returns
        -------
        self
        """
        self.fit_predict(X, y, sample_weight=sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of each sample, shape ``(N,)``.

        Equals ``fit(X).predict(X)``: the labels come from a final E-step
        with the fitted parameters.
        """
        self._check_hyperparameters()
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2, **self._finite())
        if X.shape[0] < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"n_samples = {X.shape[0]}"
            )
        out_dtype = X.dtype
        Xj = check_array(X, min_samples=self.n_components, missing=self.missing)
        weights = check_sample_weight(sample_weight, X.shape[0], Xj.dtype, min_positive=self.n_components)
        prior = resolve_prior(self.prior, Xj, self.n_components, self.covariance_type, weights)
        Xj, weights = lay_out_missing(Xj, weights, self.covariance_type, self.missing)
        given = self._given_initial_arrays(X.shape[1])
        warm = self.warm_start and hasattr(self, "converged_")
        settings = dict(max_iter=self.max_iter, tol=float(self.tol), reg_covar=float(self.reg_covar), prior=prior)

        start = time.perf_counter()
        if warm:
            result, n_runs = self._warm_fit(Xj, weights, settings), 1
        else:
            result, n_runs = self._fresh_fit(Xj, weights, given, settings)
        result = _best_by_lower_bound(result)
        elapsed = time.perf_counter() - start
        params, n_iter = result.params, int(result.n_iter)
        fitted = dict(
            weights_=np.asarray(params.weights, out_dtype), means_=np.asarray(params.means, out_dtype),
            covariances_=np.asarray(params.covariances, out_dtype),
            precisions_cholesky_=np.asarray(params.precisions_cholesky, out_dtype),
        )
        self._check_finite_fit(fitted, result, out_dtype, Xj.dtype)
        _print_verbose(self, result, n_runs, elapsed, float(self.lower_bound_) if warm else -np.inf)

        for name, value in fitted.items():
            setattr(self, name, value)
        self.precisions_ = np.asarray(params.precisions, out_dtype)
        self.converged_ = bool(result.converged)
        self.n_iter_ = n_iter
        self.lower_bound_ = out_dtype.type(_lower_bounds(result.restarts)[result.best_index])
        self.lower_bounds_ = np.asarray(result.history[:n_iter], out_dtype)
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, or "
                "increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
            )
        # A final E-step with the fitted parameters, so fit_predict(X) == fit(X).predict(X).
        return np.asarray(density.predict(self._params(), Xj))

    def _check_finite_fit(self, fitted, result, out_dtype, compute_dtype):
        """scikit-learn's error for a fit whose parameters (or, after EM, log-likelihood) are not finite,
        where scikit-learn fails to factor a covariance."""
        values = list(fitted.values()) + ([np.asarray(result.log_likelihood)] if self.max_iter > 0 else [])
        if all(np.all(np.isfinite(v)) for v in values):
            return
        message = ILL_DEFINED_COVARIANCE + (FLOAT32_ACCURACY if out_dtype == np.float32 else "")
        detail = " (jaxgmm: the log-likelihood or parameters became non-finite"
        if out_dtype == np.float64 and compute_dtype == np.float32:
            detail += "; the fit ran in float32, set jax_enable_x64 to fit float64 data in float64"
        raise ValueError(message + detail + ".)")

    def _fresh_fit(self, Xj, weights, given, settings):
        """Initialise and run EM; returns ``(FitResult, number of restarts run)``."""
        n_init = self.n_init
        keys = jax.random.split(key_from_random_state(self.random_state), n_init)
        dtype = Xj.dtype
        structure = dict(n_components=self.n_components, covariance_type=self.covariance_type)
        if self.max_iter == 0:
            # No EM: scikit-learn keeps the last initialisation.
            return self._initial_only(keys[-1], Xj, weights, given), 1
        if all(a is not None for a in given.values()):
            # Every restart would start from the same arrays: one suffices.
            init = check_params(
                given["weights"], given["means"], given["covariances"], self.covariance_type, dtype=dtype
            )
            return _fit_restarts(keys[:1], Xj, weights, init, init="params", **structure, **settings), 1
        if all(a is None for a in given.values()):
            return _fit_restarts(keys, Xj, weights, None, init=self.init_params, **structure, **settings), n_init
        arrays = {name: None if a is None else jnp.asarray(a, dtype) for name, a in given.items()}
        result = _fit_restarts_overriding(keys, Xj, weights, arrays, init=self.init_params, **structure, **settings)
        return result, n_init

    def _initial_only(self, key, Xj, weights, given) -> FitResult:
        """``max_iter=0``: the initial parameters, with no EM iteration."""
        dtype = Xj.dtype
        if all(a is not None for a in given.values()):
            params = check_params(
                given["weights"], given["means"], given["covariances"], self.covariance_type, dtype=dtype
            )
        else:
            arrays = {name: None if a is None else jnp.asarray(a, dtype) for name, a in given.items()}
            params = _initial_params(
                key, Xj, weights, arrays, n_components=self.n_components,
                covariance_type=self.covariance_type, init=self.init_params, reg_covar=float(self.reg_covar),
            )
        run = EMResult(params, jnp.asarray(-jnp.inf, dtype), jnp.asarray(0), jnp.asarray(False), jnp.zeros(0, dtype))
        restarts = jax.tree.map(lambda leaf: leaf[None], run)
        return FitResult(*run, restarts=restarts, best_index=jnp.asarray(0))

    def _warm_fit(self, Xj, weights, settings):
        """One EM run from the previous fit; its first change is measured from ``lower_bound_``."""
        if self.means_.shape[1] != Xj.shape[1] or np.shape(self.covariances_) != covariance_shape(
            self.covariance_type, self.n_components, Xj.shape[1]
        ):
            raise ValueError(
                "warm_start=True needs data and settings matching the previous fit (n_features, "
                "n_components, covariance_type); refit with warm_start=False."
            )
        start = self._params()
        result = _fit_restarts(
            jax.random.split(jax.random.key(0), 1), Xj, weights, start, init="params",
            n_components=self.n_components, covariance_type=self.covariance_type, **settings,
        )
        first = result.restarts.history[0, 0]
        if settings["max_iter"] > 0 and abs(float(first) - float(self.lower_bound_)) < settings["tol"]:
            # scikit-learn compares the first new bound with the previous one: converged after one step.
            result = _fit_restarts(
                jax.random.split(jax.random.key(0), 1), Xj, weights, start, init="params",
                n_components=self.n_components, covariance_type=self.covariance_type, **dict(settings, max_iter=1),
            )
            converged = jnp.asarray(True)
            result = result._replace(converged=converged, restarts=result.restarts._replace(converged=converged[None]))
        return result

    def score(self, X, y=None):
        """Mean log-likelihood of the samples ``X (N, D)`` (a float); with ``missing="marginalize"`` of
        their observed values, over the rows with at least one."""
        if self.missing == "raise":
            return super().score(X)
        X, Xj = self._validate_X(X)
        return float(density.score(self._params(), Xj, missing=self.missing))

    # ---------------------------------------- scikit-learn's private methods (its tests, subclasses)

    def _get_parameters(self):
        """``(weights_, means_, covariances_, precisions_cholesky_)``, as scikit-learn's."""
        return self.weights_, self.means_, self.covariances_, self.precisions_cholesky_

    def _set_parameters(self, params):
        """Set ``(weights_, means_, covariances_, precisions_cholesky_)`` and ``precisions_`` from them,
        as scikit-learn's."""
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = params
        prec_chol = self.precisions_cholesky_
        if get_model(self.covariance_type).storage.is_matrix:
            self.precisions_ = prec_chol @ np.swapaxes(prec_chol, -1, -2)
        else:
            self.precisions_ = prec_chol**2

    def _initialize(self, X, resp):
        """scikit-learn's ``_initialize``: parameters from one M-step on responsibilities ``resp (N, K)``
        (``None``: every ``*_init`` array must be given), the given ``*_init`` arrays replacing them.

        Sets ``weights_``, ``means_``, ``covariances_``, ``precisions_cholesky_`` and ``precisions_``.
        Like scikit-learn's, it takes ``K`` from ``resp`` and normalises the weights by ``N`` (they
        sum to 1 when each row of ``resp`` does). ``fit`` does not call it.
        """
        X = sklearn_check_array(X, dtype=[np.float64, np.float32])
        if resp is None:
            if self.weights_init is None or self.means_init is None or self.precisions_init is None:
                raise ValueError("_initialize(X, None) needs weights_init, means_init and precisions_init.")
            k = np.shape(self.means_init)[0]
        else:
            resp = np.asarray(resp, X.dtype)
            k = resp.shape[1]
        given = self._given_initial_arrays(X.shape[1], n_components=k)
        if resp is not None:
            Xj = check_array(X)
            params = params_from_responsibilities(
                Xj, jnp.asarray(resp, Xj.dtype), self.covariance_type, reg_covar=float(self.reg_covar)
            )
            computed = dict(weights=resp.sum(axis=0) / X.shape[0], means=np.asarray(params.means),
                            covariances=np.asarray(params.covariances))
            given = {name: computed[name] if a is None else a for name, a in given.items()}
        weights, means, covariances = (np.asarray(given[name], X.dtype) for name in ("weights", "means", "covariances"))
        dtype = float_dtype(X.dtype)
        arrays = (jnp.asarray(a, dtype) for a in (weights, means, covariances))
        prec_chol = GMMParams(*arrays, self.covariance_type).precisions_cholesky
        self._set_parameters((weights, means, covariances, np.asarray(prec_chol, X.dtype)))

    def _n_parameters(self) -> int:
        return n_parameters(self.covariance_type, self.n_components, self.means_.shape[1])

    def bic(self, X):
        """Bayesian information criterion ``-2 log L + p log N`` on ``X (N, D)`` (lower is better)."""
        n = np.shape(X)[0]
        return -2 * self.score(X) * n + self._n_parameters() * np.log(n)

    def aic(self, X):
        """Akaike information criterion ``-2 log L + 2p`` on ``X (N, D)`` (lower is better)."""
        return -2 * self.score(X) * np.shape(X)[0] + 2 * self._n_parameters()


# ------------------------------------------------------------------------------------------ variational Bayes


def _sklearn_bgm_constraints() -> dict:
    """scikit-learn's own parameter constraints of ``BayesianGaussianMixture`` (so its messages are ours),
    plus ``sample_weight``-free extras of jaxgmm's none."""
    from sklearn.mixture import BayesianGaussianMixture as Reference

    return dict(Reference._parameter_constraints)


class BayesianGaussianMixture(_FittedMixture):
    """Variational Bayesian Gaussian mixture in JAX, with scikit-learn's API (:mod:`jaxgmm.vb`).

    Parameters
    ----------
    n_components : int, default=1
        The truncation ``K``: components the data do not need get weights near 0.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        Convergence threshold on the change of the (total) lower bound.
    reg_covar : float, default=1e-6
    max_iter : int, default=100
    n_init : int, default=1
        Restarts, run in parallel; the highest lower bound wins.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}, default="dirichlet_process"
    weight_concentration_prior : float, default=1/n_components
    mean_precision_prior : float, default=1
    mean_prior : array-like, shape (D,), default=the data's mean
    degrees_of_freedom_prior : float, default=D
    covariance_prior : float or array-like, default=the data's covariance
        ``(D, D)`` full and tied, ``(D,)`` diag, a float spherical.
    random_state, warm_start, verbose, verbose_interval
        As in :class:`GaussianMixture`.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_
        The point estimate: expected weights, posterior means and ``(ν_k W_k)⁻¹``.
    weight_concentration_ : ndarray (K,) or tuple of two ndarrays (K,)
        Dirichlet concentrations, or the sticks' Beta parameters.
    mean_precision_, degrees_of_freedom_ : ndarray, shape (K,)
    weight_concentration_prior_, mean_precision_prior_, mean_prior_, degrees_of_freedom_prior_, covariance_prior_
        The prior used (given or defaulted).
    converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_
        As scikit-learn's; the lower bounds are totals over the data, not means.

    The same differences from scikit-learn as :class:`GaussianMixture`
    (parallel restarts, JAX's generator, ``sample_weight``); from the same
    starting responsibilities every iterate equals scikit-learn's in float64.
    ``predict``, ``predict_proba`` and ``score_samples`` use the variational
    expectations, as scikit-learn's do.

    Examples
    --------
    >>> import jaxgmm
    >>> from jaxgmm.sklearn import BayesianGaussianMixture
    >>> bgm = BayesianGaussianMixture(n_components=8, max_iter=500, random_state=0).fit(jaxgmm.load_faithful())
    >>> int((bgm.weights_ > 0.01).sum()) in (2, 3)
    True
    """

    _parameter_constraints = _sklearn_bgm_constraints()

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    # ------------------------------------------------------------------ prior

    def _check_parameters(self, X, sample_weight=None):
        """Validate the hyperparameters, set the prior's attributes (scikit-learn's ``_check_parameters``, which
        its own tests call) and return the :class:`~jaxgmm.ConjugatePrior` for ``X`` (weighted by
        ``sample_weight``, jaxgmm's addition)."""
        from jaxgmm.vb import bayesian_mixture_prior

        self._validate_params()
        X = sklearn_check_array(X, dtype=[np.float64, np.float32])
        n_features = X.shape[1]
        mean = covariance = None
        if self.mean_prior is not None:
            mean = _init_array(self.mean_prior, "mean_prior")
            _check_shape(mean, (n_features,), "means")
        layout = get_model(self.covariance_type).storage
        if self.covariance_prior is not None and layout.kind == "spherical":
            covariance = float(self.covariance_prior)
        elif self.covariance_prior is not None:
            covariance = _init_array(self.covariance_prior, "covariance_prior")
            _check_shape(covariance, (n_features,) * (2 if layout.is_matrix else 1),
                         f"{self.covariance_type} covariance_prior")
            if layout.is_matrix and not (np.allclose(covariance, covariance.T)
                                         and np.all(np.linalg.eigvalsh(covariance) > 0)):
                raise ValueError(f"'{self.covariance_type} covariance_prior' should be symmetric, positive-definite")
            if not layout.is_matrix and np.any(covariance <= 0):
                raise ValueError(f"'{self.covariance_type} covariance_prior' should be positive")
        prior = bayesian_mixture_prior(  # it validates X itself
            X, self.n_components, self.covariance_type,
            weight_concentration=self.weight_concentration_prior, mean_precision=self.mean_precision_prior,
            mean=mean, degrees_of_freedom=self.degrees_of_freedom_prior, covariance=covariance,
            sample_weight=sample_weight,
        )
        self.weight_concentration_prior_ = float(prior.weight_concentration)
        self.mean_precision_prior_ = float(prior.shrinkage)
        self.mean_prior_ = np.asarray(prior.mean, X.dtype)
        self.degrees_of_freedom_prior_ = float(prior.dof)
        scale = np.asarray(prior.scale, X.dtype)  # spherical: D times the variance, in the statistics' units
        self.covariance_prior_ = scale / n_features if layout.kind == "spherical" else scale
        return prior

    # ------------------------------------------------------------ posterior

    def _posterior(self):
        """The fitted :class:`~jaxgmm.vb.VBPosterior` in the compute dtype."""
        from jaxgmm.vb import VBPosterior

        dtype = float_dtype(self.means_.dtype)
        as_jax = partial(jnp.asarray, dtype=dtype)
        # tied: scikit-learn's degrees_of_freedom_ is one number (the posterior is shared)
        dof = jnp.broadcast_to(as_jax(self.degrees_of_freedom_), np.shape(self.mean_precision_))
        return VBPosterior(as_jax(np.asarray(self.weight_concentration_)), as_jax(self.mean_precision_),
                           as_jax(self.means_), dof, as_jax(self.covariances_),
                           self.covariance_type, self.weight_concentration_prior_type)

    def _density_params(self) -> GMMParams:
        return self._posterior().variational_params

    def _set_posterior(self, posterior, out_dtype) -> None:
        """Set the fitted attributes from a :class:`~jaxgmm.vb.VBPosterior`."""
        as_out = partial(np.asarray, dtype=out_dtype)
        concentration = as_out(posterior.weight_concentration)
        dof = as_out(posterior.degrees_of_freedom)
        if get_model(self.covariance_type).storage.kind == "tied":
            dof = dof[0]  # scikit-learn's: one number, the components share the posterior
        self._set_parameters((
            concentration if concentration.ndim == 1 else (concentration[0], concentration[1]),
            as_out(posterior.mean_precision), as_out(posterior.means), dof,
            as_out(posterior.covariances), as_out(posterior.precisions_cholesky),
        ))

    # ------------------------------------------------------------------- fit

    def fit(self, X, y=None, sample_weight=None):
        """Fit the variational posterior (``n_init`` restarts in parallel); returns ``self``.

        ``sample_weight (N,)`` (jaxgmm's addition): integer weights act like repeated rows.
        """
        self.fit_predict(X, y, sample_weight=sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of each sample, shape ``(N,)``
        (equals ``fit(X).predict(X)``)."""
        from jaxgmm.vb import _fit_vb_restarts, vb_loop

        self._validate_params()
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        if X.shape[0] < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"n_samples = {X.shape[0]}"
            )
        out_dtype = X.dtype
        Xj = check_array(X, min_samples=self.n_components)
        weights = check_sample_weight(sample_weight, X.shape[0], Xj.dtype, min_positive=self.n_components)
        prior = self._check_parameters(X, None if sample_weight is None else weights)
        settings = dict(max_iter=self.max_iter, tol=float(self.tol), reg_covar=float(self.reg_covar))
        warm = self.warm_start and hasattr(self, "converged_")
        start = time.perf_counter()
        if warm:
            self._check_warm_start(X.shape[1])
            run = vb_loop(self._posterior(), Xj, prior, sample_weight=weights,
                          previous_lower_bound=float(self.lower_bound_), **settings)
            result, n_runs = _as_fit_result(run), 1
        else:
            n_runs = self.n_init
            keys = jax.random.split(key_from_random_state(self.random_state), n_runs)
            result = _fit_vb_restarts(keys, Xj, weights, prior, n_components=self.n_components,
                                      covariance_type=self.covariance_type,
                                      weight_prior=self.weight_concentration_prior_type, init=self.init_params,
                                      **settings)
            if self.max_iter == 0:  # no iteration: scikit-learn keeps the last initialisation
                result = _as_fit_result(jax.tree.map(lambda leaf: leaf[-1], result.restarts))
        elapsed = time.perf_counter() - start
        leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(result.posterior)]
        if not all(np.all(np.isfinite(leaf)) for leaf in leaves) or np.isnan(float(result.lower_bound)):
            raise ValueError(ILL_DEFINED_COVARIANCE + " (jaxgmm: the variational posterior became non-finite.)")
        _print_verbose(self, result, n_runs, elapsed, float(self.lower_bound_) if warm else -np.inf)

        self._set_posterior(result.posterior, out_dtype)
        n_iter = int(result.n_iter)
        self.converged_ = bool(result.converged)
        self.n_iter_ = n_iter
        self.lower_bound_ = out_dtype.type(result.lower_bound)
        self.lower_bounds_ = np.asarray(result.history[:n_iter], out_dtype)
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, or "
                "increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
            )
        return np.asarray(density.predict(self._density_params(), Xj))

    def _check_warm_start(self, n_features: int) -> None:
        if self.means_.shape != (self.n_components, n_features) or np.shape(self.covariances_) != covariance_shape(
                self.covariance_type, self.n_components, n_features):
            raise ValueError(
                "warm_start=True needs data and settings matching the previous fit (n_features, "
                "n_components, covariance_type); refit with warm_start=False."
            )

    # ---------------------------------------- scikit-learn's private methods (its tests, subclasses)

    def _initialize_parameters(self, X, random_state):
        """scikit-learn's ``_initialize_parameters``: the starting posterior from ``init_params`` (keyed by
        ``random_state``, see :func:`key_from_random_state`); call :meth:`_check_parameters` first."""
        from jaxgmm.init import initial_responsibilities

        X = sklearn_check_array(X, dtype=[np.float64, np.float32])
        Xj = check_array(X)
        resp = initial_responsibilities(key_from_random_state(random_state), Xj, self.n_components,
                                        self.init_params, None)
        self._initialize(X, np.asarray(resp))

    def _initialize(self, X, resp):
        """scikit-learn's ``_initialize``: the posterior after one variational M-step on ``resp (N, K)``."""
        from jaxgmm.vb import vb_posterior_from_responsibilities

        X = sklearn_check_array(X, dtype=[np.float64, np.float32])
        prior = self._check_parameters(X)
        Xj = check_array(X)
        posterior = vb_posterior_from_responsibilities(
            Xj, jnp.asarray(resp, Xj.dtype), prior, covariance_type=self.covariance_type,
            weight_prior=self.weight_concentration_prior_type, reg_covar=float(self.reg_covar))
        self._set_posterior(posterior, X.dtype)

    def _get_parameters(self):
        """``(weight_concentration_, mean_precision_, means_, degrees_of_freedom_, covariances_,
        precisions_cholesky_)``, as scikit-learn's."""
        return (self.weight_concentration_, self.mean_precision_, self.means_, self.degrees_of_freedom_,
                self.covariances_, self.precisions_cholesky_)

    def _set_parameters(self, params):
        """Set the posterior's attributes, and ``weights_`` and ``precisions_`` from them, as scikit-learn's."""
        (self.weight_concentration_, self.mean_precision_, self.means_, self.degrees_of_freedom_,
         self.covariances_, self.precisions_cholesky_) = params
        dtype = np.asarray(self.means_).dtype
        self.weights_ = np.asarray(self._posterior().weights, dtype)
        prec_chol = self.precisions_cholesky_
        if get_model(self.covariance_type).storage.is_matrix:
            self.precisions_ = prec_chol @ np.swapaxes(prec_chol, -1, -2)
        else:
            self.precisions_ = prec_chol**2


def _as_fit_result(run):
    """One :class:`~jaxgmm.vb.VBResult` as a one-restart :class:`~jaxgmm.vb.VBFitResult`."""
    from jaxgmm.vb import VBFitResult

    return VBFitResult(*run, restarts=jax.tree.map(lambda leaf: leaf[None], run), best_index=jnp.asarray(0))
