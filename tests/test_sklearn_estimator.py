"""jaxgmm.sklearn.GaussianMixture against scikit-learn: its own estimator checks, equal results, bad input."""

import re
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGM
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxgmm
import jaxgmm.sklearn
from conftest import X64, make_blobs, random_params, rtol_for
from jaxgmm.sklearn import GaussianMixture

ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_", "lower_bounds_")


def expected_failed_checks(estimator):
    return {
        "check_sample_weight_equivalence_on_dense_data": (
            "the check shuffles the repeated rows, so the random initialisation (rows drawn by "
            "k-means++) differs between the weighted and the repeated data and EM reaches another "
            "optimum; from equal starting parameters integer weights equal repeated rows "
            "(test_integer_weights_equal_repeated_rows)."
        ),
    }


@pytest.mark.skipif(X64, reason="API checks, run once: in the float32 pass (they recompile per shape)")
@parametrize_with_checks(
    [GaussianMixture(n_components=2, max_iter=5, n_init=2)], expected_failed_checks=expected_failed_checks
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def data(seed=0, n=240, k=3, d=2, separation=4.0):
    X, *_ = make_blobs(seed=seed, n=n, k=k, d=d, separation=separation)
    return X


class PatchedSklearnGM(SklearnGM):
    """scikit-learn's estimator started from given responsibilities instead of its own random ones."""

    def __init__(self, resp=None, **kwargs):
        super().__init__(**kwargs)
        self.resp = resp

    def _initialize_parameters(self, X, random_state, xp=None):
        if self.weights_init is not None and self.means_init is not None and self.precisions_init is not None:
            self._initialize(X, None)
        else:
            self._initialize(X, self.resp)


def starting_responsibilities(X, k, method, seed):
    """The responsibilities GaussianMixture(random_state=seed, n_init=1) starts from (the documented key)."""
    key = jax.random.split(jax.random.key(seed), 1)[0]
    return np.asarray(jaxgmm.initial_responsibilities(key, jnp.asarray(X), k, method), np.float64)


def assert_same_fit(ours, theirs, rtol, first_bound=True):
    if not first_bound:
        np.testing.assert_allclose(ours.lower_bounds_[1:], theirs.lower_bounds_[1:], rtol=rtol)
    for name in ATTRIBUTES[:-1] + ATTRIBUTES[-1:] * first_bound:
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=rtol, atol=rtol, err_msg=name)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.converged_ == theirs.converged_
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=rtol)


TIED_RANDOM_FROM_DATA = pytest.mark.xfail(
    strict=True,
    reason="scikit-learn's tied covariance from responsibilities uses X.T @ X over all rows, assuming each "
    "row's responsibilities sum to 1; random_from_data's do not (one row per component), so its start differs",
)


@pytest.mark.x64
@pytest.mark.parametrize(
    "covariance_type, init_params",
    [
        pytest.param(c, i, marks=TIED_RANDOM_FROM_DATA if (c, i) == ("tied", "random_from_data") else ())
        for c in jaxgmm.COVARIANCE_TYPES
        for i in jaxgmm.INIT_METHODS
    ],
)
def test_fit_equals_scikit_learn_from_the_same_start(covariance_type, init_params):
    X = data(seed=1, separation=3.0)
    settings = dict(n_components=3, covariance_type=covariance_type, tol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # both stop at the same iteration, tested below
        ours = GaussianMixture(init_params=init_params, random_state=7, **settings).fit(X)
        theirs = PatchedSklearnGM(resp=starting_responsibilities(X, 3, init_params, 7), **settings).fit(X)
    assert ours.n_iter_ >= 2
    # scikit-learn's random_from_data start divides the counts by N, so its initial weights sum to K/N
    # and its first lower bound is off by log(N/K); the iterates from the first M-step on agree.
    assert_same_fit(ours, theirs, 1e-8, first_bound=init_params != "random_from_data")
    assert ours.means_.dtype == np.float64 and isinstance(ours.lower_bound_, np.float64)


GIVEN = [("means",), ("weights", "precisions"), ("weights", "means", "precisions"), ("precisions",)]


@pytest.mark.x64
def test_initial_arrays_replace_the_computed_ones_as_in_scikit_learn(covariance_type):
    X, _, _, true_means, _ = make_blobs(seed=2, n=240, k=3, d=2, separation=4.0)
    given = GIVEN[jaxgmm.COVARIANCE_TYPES.index(covariance_type)]  # every combination once over the types
    start = random_params(np.random.default_rng(3), covariance_type, k=3, d=2)
    arrays = dict(weights=start.weights, means=true_means + 0.5, precisions=start.precisions)
    inits = {f"{name}_init": np.asarray(arrays[name]) for name in given}
    settings = dict(n_components=3, covariance_type=covariance_type, max_iter=100, **inits)
    ours = GaussianMixture(random_state=5, n_init=2, **settings).fit(X)
    # The best of 2 restarts; scikit-learn started from each restart's responsibilities.
    restarts = jax.random.split(jax.random.key(5), 2)
    best = max(
        (
            PatchedSklearnGM(resp=np.asarray(jaxgmm.initial_responsibilities(k, jnp.asarray(X), 3)), **settings).fit(X)
            for k in restarts
        ),
        key=lambda gm: gm.lower_bound_,
    )
    assert_same_fit(ours, best, 1e-8)


@pytest.mark.x64
def test_warm_start_resumes_as_scikit_learn_does(covariance_type):
    X = data(seed=4, separation=2.0)
    start = random_params(np.random.default_rng(5), covariance_type, k=3, d=2)
    inits = dict(weights_init=np.asarray(start.weights), means_init=np.asarray(start.means),
                 precisions_init=np.asarray(start.precisions))
    settings = dict(n_components=3, covariance_type=covariance_type, max_iter=3, tol=1e-4, warm_start=True, **inits)
    ours, theirs = GaussianMixture(**settings), SklearnGM(**settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(40):
            ours.fit(X)
            theirs.fit(X)
            assert_same_fit(ours, theirs, 1e-8)
            if theirs.converged_:
                break
    assert ours.converged_, "the warm-started fits should converge within 40 calls"


@pytest.mark.x64
def test_verbose_messages_match_scikit_learn(capsys):
    X = data(seed=6)
    start = random_params(np.random.default_rng(7), "full", k=3, d=2)
    settings = dict(n_components=3, weights_init=np.asarray(start.weights), means_init=np.asarray(start.means),
                    precisions_init=np.asarray(start.precisions), verbose=2, verbose_interval=2, tol=1e-5)
    outputs = []
    for cls in (GaussianMixture, SklearnGM):
        cls(**settings).fit(X)
        outputs.append(capsys.readouterr().out.splitlines())
    ours, theirs = outputs
    assert len(ours) == len(theirs) > 3
    without_times = re.compile(r"time lapse [0-9.]+s")
    for a, b in zip(ours, theirs):  # same messages; times differ
        assert without_times.sub("", a) == without_times.sub("", b)


def test_scores_equal_scikit_learn_for_the_same_parameters(covariance_type, dtype):
    X = data(seed=8, d=3).astype(dtype)
    theirs = SklearnGM(3, covariance_type=covariance_type, random_state=0).fit(X)
    ours = GaussianMixture(
        3, covariance_type=covariance_type, weights_init=theirs.weights_ / theirs.weights_.sum(),
        means_init=theirs.means_, precisions_init=theirs.precisions_, max_iter=0,
    ).fit(X)
    rtol = rtol_for(dtype, 1e-10, 2e-5)
    Y = data(seed=9, d=3).astype(dtype)
    np.testing.assert_allclose(ours.score_samples(Y), theirs.score_samples(Y), rtol=rtol)
    np.testing.assert_allclose(ours.predict_proba(Y), theirs.predict_proba(Y), rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(ours.predict(Y), theirs.predict(Y))
    for method in ("score", "bic", "aic"):
        np.testing.assert_allclose(getattr(ours, method)(Y), getattr(theirs, method)(Y), rtol=rtol)
    assert ours.score_samples(Y).dtype == dtype and ours.predict_proba(Y).dtype == dtype


def test_attributes_are_numpy_in_the_input_dtype(dtype):
    for input_dtype in (np.float32, np.float64):
        gm = GaussianMixture(3, random_state=0).fit(data().astype(input_dtype))
        for name in ATTRIBUTES:
            value = getattr(gm, name)
            assert type(value) is np.ndarray and value.dtype == input_dtype, name
        assert type(gm.lower_bound_) is np.dtype(input_dtype).type
        assert type(gm.converged_) is bool and type(gm.n_iter_) is int and gm.n_features_in_ == 2
        assert gm.lower_bounds_.shape == (gm.n_iter_,)


def test_fit_predict_equals_fit_then_predict(covariance_type):
    # Stopped before convergence (tol=0), so the final E-step can change labels: they must still agree.
    X = data(seed=10, separation=0.5)
    settings = dict(covariance_type=covariance_type, tol=0.0, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = GaussianMixture(3, **settings).fit_predict(X)
        np.testing.assert_array_equal(labels, GaussianMixture(3, **settings).fit(X).predict(X))


def test_unconverged_fit_warns_and_converged_fit_does_not():
    X = data(seed=11, separation=1.0)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        gm = GaussianMixture(3, max_iter=1, random_state=0).fit(X)
    assert not gm.converged_ and gm.n_iter_ == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert GaussianMixture(3, random_state=0).fit(X).converged_


def test_restarts_run_in_one_parallel_call_and_the_best_wins(monkeypatch):
    X = data(seed=12, separation=1.5)
    calls = []
    original = jaxgmm.sklearn._fit_restarts

    def spy(keys, *args, **kwargs):
        calls.append(keys.shape)
        return original(keys, *args, **kwargs)

    monkeypatch.setattr(jaxgmm.sklearn, "_fit_restarts", spy)
    gm = GaussianMixture(3, n_init=5, random_state=2).fit(X)
    assert calls == [(5,)]
    Xj = jnp.asarray(X)
    singles = [  # each restart alone, from its documented key
        jaxgmm.em_loop(jaxgmm.initialize(k, Xj, 3), Xj) for k in jax.random.split(jax.random.key(2), 5)
    ]
    # scikit-learn's lower bound: the log-likelihood of each run's last E-step; the best one wins.
    bounds = [float(run.history[int(run.n_iter) - 1]) for run in singles]
    np.testing.assert_allclose(gm.lower_bound_, max(bounds), rtol=rtol_for(float64=1e-12, float32=1e-6))
    best = singles[int(np.argmax(bounds))]
    np.testing.assert_allclose(gm.means_, best.params.means, rtol=rtol_for(float64=1e-10, float32=1e-5))


def test_integer_weights_equal_repeated_rows(dtype):
    X = data(seed=13).astype(dtype)
    counts = np.random.default_rng(14).integers(0, 4, size=len(X))
    repeated = np.repeat(X, counts, axis=0)
    repeated = repeated[np.random.default_rng(15).permutation(len(repeated))]
    start = random_params(np.random.default_rng(16), "full", k=3, d=2)
    settings = dict(weights_init=np.asarray(start.weights), means_init=np.asarray(start.means),
                    precisions_init=np.asarray(start.precisions))
    weighted = GaussianMixture(3, **settings).fit(X, sample_weight=counts)
    plain = GaussianMixture(3, **settings).fit(repeated)
    assert_same_fit(weighted, plain, rtol_for(dtype, 1e-9, 1e-3))


def test_sample_returns_sorted_draws_with_the_fitted_moments(covariance_type):
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(data(seed=17))
    X, y = gm.sample(20_000)
    assert X.shape == (20_000, 2) and X.dtype == gm.means_.dtype and y.dtype == np.int64
    assert np.all(np.diff(y) >= 0)  # grouped by component, as scikit-learn returns them
    np.testing.assert_allclose(np.bincount(y, minlength=3) / len(y), gm.weights_, atol=0.015)
    for k in range(3):
        np.testing.assert_allclose(X[y == k].mean(0), gm.means_[k], atol=0.1)
    X2, _ = gm.sample(20_000)
    np.testing.assert_array_equal(X, X2)  # an int random_state repeats, as in scikit-learn
    with pytest.raises(ValueError, match="n_samples"):
        gm.sample(0)


def test_feature_names_are_recorded_and_checked():
    pd = pytest.importorskip("pandas")
    X = data()
    gm = GaussianMixture(3, random_state=0).fit(pd.DataFrame(X, columns=["a", "b"]))
    assert list(gm.feature_names_in_) == ["a", "b"]
    with pytest.warns(UserWarning, match="feature names"):
        gm.predict(X)
    with pytest.raises(ValueError, match="feature names"):
        gm.predict(pd.DataFrame(X, columns=["b", "a"]))
    assert not hasattr(GaussianMixture(3, random_state=0).fit(X), "feature_names_in_")


def test_importing_jaxgmm_does_not_need_scikit_learn():
    code = "import sys; sys.modules['sklearn'] = None; import jaxgmm; jaxgmm.GMMParams"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


GOOD = np.random.default_rng(0).normal(size=(30, 2))
PD = np.eye(2)[None].repeat(3, 0)


@pytest.mark.parametrize(
    "X, params, fit_kwargs, message",
    [
        (np.where(np.arange(60).reshape(30, 2) == 7, np.nan, GOOD), {}, {}, "NaN"),
        (np.where(np.arange(60).reshape(30, 2) == 7, np.inf, GOOD), {}, {}, "infinity"),
        (GOOD[:, 0], {}, {}, "2D array"),
        (GOOD[None], {}, {}, "dim 3"),
        (np.empty((0, 2)), {}, {}, "0 sample"),
        # scikit-learn's messages, word for word (jaxgmm's detail follows some of them)
        (GOOD[:2], {}, {}, re.escape("Expected n_samples >= n_components but got n_components = 3, n_samples = 2")),
        (GOOD, dict(precisions_init=PD * [[[1.0]], [[1.0]], [[-1.0]]]), {},
         re.escape("'full precision' should be symmetric, positive-definite (precisions_init[2] is not)")),
        (GOOD, dict(precisions_init=PD[:2]), {},
         re.escape("The parameter 'full precision' should have the shape of (3, 2, 2), but got (2, 2, 2)")),
        (GOOD, dict(covariance_type="diag", precisions_init=-np.ones((3, 2))), {}, "'diag precision' should be positive"),
        (GOOD, dict(weights_init=[0.5, 0.3, 0.3]), {},
         re.escape("The parameter 'weights' should be normalized, but got sum(weights) = 1.10000 (weights_init must")),
        (GOOD, dict(weights_init=[1.5, -0.2, -0.3]), {},
         re.escape("The parameter 'weights' should be in the range [0, 1], but got max value -0.30000, min value "
                   "1.50000 (weights_init ranges from -0.3 to 1.5)")),
        (GOOD, dict(weights_init=[0.5, 0.5]), {},
         re.escape("The parameter 'weights' should have the shape of (3,), but got (2,)")),
        (GOOD, dict(means_init=np.zeros((3, 3))), {},
         re.escape("The parameter 'means' should have the shape of (3, 2), but got (3, 3)")),
        (GOOD, dict(means_init=np.full((3, 2), np.nan)), {}, r"Input contains NaN\. \(in means_init\)"),
        (GOOD, {}, dict(sample_weight=-np.ones(30)), "negative"),
        (GOOD, {}, dict(sample_weight=np.zeros(30)), "zero"),
        (GOOD, dict(covariance_type="banana"), {}, "covariance_type"),
        (GOOD, dict(init_params="banana"), {}, "init_params"),
        (GOOD, dict(n_components=0), {}, "n_components"),
        (GOOD, dict(tol=-1.0), {}, "tol"),
    ],
)
def test_bad_input_raises_a_clear_error_and_modifies_nothing(X, params, fit_kwargs, message):
    settings = dict(dict(n_components=3), **params)
    before = {k: np.array(v, copy=True) for k, v in {**params, **fit_kwargs, "X": X}.items() if not isinstance(v, str)}
    with pytest.raises(ValueError, match=message):
        GaussianMixture(**settings).fit(X, **fit_kwargs)
    for name, copy in before.items():
        np.testing.assert_array_equal({**params, **fit_kwargs, "X": X}[name], copy)


def test_predict_rejects_a_different_number_of_features():
    gm = GaussianMixture(3, random_state=0).fit(data())
    for method in ("predict", "predict_proba", "score_samples", "score"):
        with pytest.raises(ValueError, match="3 features"):
            getattr(gm, method)(np.zeros((4, 3)))
        with pytest.raises(ValueError, match="NaN"):
            getattr(gm, method)(np.array([[0.0, np.nan]]))
        with pytest.raises(ValueError, match="2D array"):
            getattr(gm, method)(np.zeros(2))


def test_fit_does_not_modify_its_inputs(dtype):
    X = data().astype(dtype)
    weights = np.linspace(0.5, 2.0, len(X))
    start = random_params(np.random.default_rng(18), "diag", k=3, d=2)
    inits = dict(weights_init=np.asarray(start.weights, np.float64), means_init=np.asarray(start.means, np.float64),
                 precisions_init=np.asarray(start.precisions, np.float64))
    copies = [a.copy() for a in (X, weights, *inits.values())]
    gm = GaussianMixture(3, covariance_type="diag", **inits).fit(X, sample_weight=weights)
    for a, copy in zip((X, weights, *inits.values()), copies):
        np.testing.assert_array_equal(a, copy)
    assert gm.get_params()["means_init"] is inits["means_init"]  # parameters are stored as given
