"""jaxgmm.sklearn.BayesianGaussianMixture against scikit-learn's: estimator checks, equal fits, priors, errors.

scikit-learn's own test file for the class runs against ours in tests/test_sklearn_own_tests.py.
"""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SklearnBGM
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxgmm
from conftest import X64, make_blobs, rtol_for
from jaxgmm.sklearn import BayesianGaussianMixture

WEIGHT_PRIORS = ("dirichlet_process", "dirichlet_distribution")
POSTERIOR = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_", "mean_precision_",
             "degrees_of_freedom_", "lower_bounds_")


@pytest.mark.skipif(X64, reason="API checks, run once: in the float32 pass (they recompile per shape)")
@parametrize_with_checks(
    [BayesianGaussianMixture(n_components=2, max_iter=5, n_init=2)],
    expected_failed_checks=lambda estimator: {
        "check_sample_weight_equivalence_on_dense_data": (
            "the check shuffles the repeated rows, so the random start differs between the weighted and the "
            "repeated data; from equal starts integer weights equal repeated rows "
            "(test_vb.py::test_integer_weights_equal_repeated_rows)."
        ),
    },
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


class PatchedSklearnBGM(SklearnBGM):
    """scikit-learn's estimator started from given responsibilities instead of its own random ones."""

    def __init__(self, resp=None, **kwargs):
        super().__init__(**kwargs)
        self.resp = resp

    def _initialize_parameters(self, X, random_state, xp=None):
        self._initialize(X, self.resp)


def data(seed=1):
    return make_blobs(seed=seed, n=240, k=3, d=2, separation=3.0)[0]


def starting_responsibilities(X, k, seed):
    """What BayesianGaussianMixture(random_state=seed, n_init=1) starts from (the documented key)."""
    key = jax.random.split(jax.random.key(seed), 1)[0]
    return np.asarray(jaxgmm.initial_responsibilities(key, jnp.asarray(X), k, "kmeans"), np.float64)


@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
def test_fit_equals_scikit_learn_from_the_same_start(covariance_type, weight_prior, dtype):
    # float64: every lower bound (one per iterate) and the final posterior to 1e-8; float32 to its precision.
    X = data().astype(dtype)
    settings = dict(n_components=5, covariance_type=covariance_type, weight_concentration_prior_type=weight_prior,
                    tol=1e-6, max_iter=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # both stop at the same iteration, tested below
        ours = BayesianGaussianMixture(random_state=7, **settings).fit(X)
        theirs = PatchedSklearnBGM(resp=starting_responsibilities(X, 5, 7), **settings).fit(X.astype(np.float64))
    rtol = rtol_for(dtype, 1e-8, 2e-3)
    if X64:
        assert ours.n_iter_ == theirs.n_iter_ and ours.converged_ == theirs.converged_
        compared = POSTERIOR
    else:  # float32 may stop an iteration earlier or later: the bounds it shares, and its final point
        compared = POSTERIOR[:-1]
        n = min(ours.n_iter_, theirs.n_iter_)
        np.testing.assert_allclose(ours.lower_bounds_[:n], np.ravel(theirs.lower_bounds_)[:n], rtol=rtol)
    for name in compared:
        # scikit-learn's tied lower bounds have a stray axis ((n_iter, 1)); ours are (n_iter,) as for the others
        expected = np.reshape(getattr(theirs, name), np.shape(getattr(ours, name)))
        np.testing.assert_allclose(getattr(ours, name), expected, rtol=rtol, atol=rtol * np.max(np.abs(expected)),
                                   err_msg=name)
    np.testing.assert_allclose(np.asarray(ours.weight_concentration_), np.asarray(theirs.weight_concentration_),
                               rtol=rtol)
    np.testing.assert_allclose(ours.lower_bound_, np.ravel(theirs.lower_bound_)[0], rtol=rtol)
    # the variational predictions (expected log-weights and log-densities), on the same posterior
    np.testing.assert_allclose(ours.score_samples(X), theirs.score_samples(X.astype(np.float64)), rtol=rtol)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X.astype(np.float64)), atol=rtol)
    assert ours.means_.dtype == dtype and np.shape(ours.degrees_of_freedom_) == np.shape(theirs.degrees_of_freedom_)


def test_prior_attributes_are_scikit_learns(covariance_type, dtype):
    X = data(seed=2).astype(dtype)
    given = dict(weight_concentration_prior=0.3, mean_precision_prior=0.7, mean_prior=np.array([1.0, -1.0]),
                 degrees_of_freedom_prior=3.5,
                 covariance_prior={"full": np.array([[2.0, 0.3], [0.3, 1.0]]), "tied": np.eye(2) * 3,
                                   "diag": np.array([0.5, 2.0]), "spherical": 1.7}[covariance_type])
    for settings in ({}, given):
        ours = BayesianGaussianMixture(n_components=3, covariance_type=covariance_type, max_iter=2, **settings)
        theirs = SklearnBGM(n_components=3, covariance_type=covariance_type, max_iter=2, **settings)
        ours._check_parameters(X)
        theirs._check_parameters(X.astype(np.float64))
        for name in ("weight_concentration_prior_", "mean_precision_prior_", "mean_prior_",
                     "degrees_of_freedom_prior_", "covariance_prior_"):
            np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=rtol_for(dtype, 1e-12, 1e-6),
                                       err_msg=name)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_warm_start_one_iteration_at_a_time_is_one_fit():
    X = data(seed=3)
    settings = dict(n_components=4, tol=0.0, random_state=1)
    whole = BayesianGaussianMixture(max_iter=6, **settings).fit(X)
    stepwise = BayesianGaussianMixture(max_iter=1, warm_start=True, **settings)
    bounds = [stepwise.fit(X).lower_bound_ for _ in range(6)]
    np.testing.assert_allclose(bounds, whole.lower_bounds_, rtol=rtol_for(float64=1e-10, float32=1e-5))
    assert np.all(np.diff(bounds) >= 0)
    np.testing.assert_allclose(stepwise.means_, whole.means_, rtol=rtol_for(float64=1e-10, float32=1e-4))


def test_restarts_keep_the_highest_bound():
    X = data(seed=4)
    best = BayesianGaussianMixture(n_components=4, n_init=3, random_state=2, max_iter=200).fit(X)
    keys = jax.random.split(jax.random.key(2), 3)
    bounds = []
    for key in keys:
        resp = np.asarray(jaxgmm.initial_responsibilities(key, jnp.asarray(X), 4, "kmeans"), np.float64)
        bounds.append(PatchedSklearnBGM(resp=resp, n_components=4, max_iter=200).fit(X).lower_bound_)
    np.testing.assert_allclose(best.lower_bound_, max(bounds), rtol=rtol_for(float64=1e-8, float32=1e-4))


def test_bad_input_is_refused_with_scikit_learns_messages():
    X = data(seed=5)
    with pytest.raises(ValueError, match="'covariance_type' parameter of BayesianGaussianMixture must be"):
        BayesianGaussianMixture(covariance_type="VEV").fit(X)
    with pytest.raises(ValueError, match="'weight_concentration_prior_type' parameter"):
        BayesianGaussianMixture(weight_concentration_prior_type="dp").fit(X)
    with pytest.raises(ValueError, match=re.escape("'degrees_of_freedom_prior' should be greater than 1")):
        BayesianGaussianMixture(degrees_of_freedom_prior=0.5).fit(X)
    with pytest.raises(ValueError, match=re.escape("The parameter 'means' should have the shape of (2,)")):
        BayesianGaussianMixture(mean_prior=np.zeros(3)).fit(X)
    with pytest.raises(ValueError, match="'full covariance_prior' should be symmetric, positive-definite"):
        BayesianGaussianMixture(covariance_prior=-np.eye(2)).fit(X)
    with pytest.raises(ValueError, match="'diag covariance_prior' should be positive"):
        BayesianGaussianMixture(covariance_type="diag", covariance_prior=np.array([1.0, -1.0])).fit(X)
    with pytest.raises(ValueError, match="Expected n_samples >= n_components"):
        BayesianGaussianMixture(n_components=5).fit(X[:4])
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        BayesianGaussianMixture().fit(bad)
    assert np.isnan(bad[3, 1])  # the user's array is untouched
