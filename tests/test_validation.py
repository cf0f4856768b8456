"""Bad input to the edges: a clear ValueError naming the problem, and the caller's arrays untouched."""

import jax
import numpy as np
import pytest

import jaxgmm

KEY = jax.random.key(0)
GOOD = np.random.default_rng(0).normal(size=(30, 2))


@pytest.mark.parametrize(
    "X, kwargs, message",
    [
        (np.where(np.arange(60).reshape(30, 2) == 7, np.nan, GOOD), {}, "NaN"),
        (np.where(np.arange(60).reshape(30, 2) == 7, np.inf, GOOD), {}, "infinite"),
        (GOOD[:, 0], {}, "2-D"),
        (GOOD[None], {}, "2-D"),
        (np.empty((0, 2)), {}, "empty"),
        (GOOD[:2], {}, "at least 3"),
        (np.array([["a", "b"], ["c", "d"], ["e", "f"]]), {}, "numeric"),
        (GOOD, dict(covariance_type="banana"), "covariance_type"),
        (GOOD, dict(init="banana"), "init"),
        (GOOD, dict(tol=-1.0), "tol"),
        (GOOD, dict(reg_covar=np.nan), "reg_covar"),
        (GOOD, dict(max_iter=0), "max_iter"),
        (GOOD, dict(n_init=0), "n_init"),
        (GOOD, dict(sample_weight=-np.ones(30)), "negative"),
        (GOOD, dict(sample_weight=np.zeros(30)), "zero"),
        (GOOD, dict(sample_weight=np.ones(29)), "shape"),
        (GOOD, dict(sample_weight=np.r_[np.ones(2), np.zeros(28)]), "positive weight"),
    ],
)
def test_fit_rejects_bad_input(X, kwargs, message):
    with pytest.raises(ValueError, match=message):
        jaxgmm.fit(KEY, X, 3, **kwargs)


@pytest.mark.parametrize("n_components", [0, -1, 2.5, True])
def test_fit_rejects_bad_n_components(n_components):
    with pytest.raises(ValueError, match="n_components"):
        jaxgmm.fit(KEY, GOOD, n_components)


def test_fit_rejects_a_seed_where_a_key_is_needed():
    with pytest.raises(TypeError, match="PRNG key"):
        jaxgmm.fit(0, GOOD, 2)


@pytest.mark.parametrize(
    "weights, means, covariances, cov_type, message",
    [
        ([0.5, 0.6], np.zeros((2, 2)), np.ones(2), "spherical", "sum to 1"),
        ([0.5, 0.5], np.zeros((2, 2)), np.ones(3), "spherical", "shape"),
        ([0.5, 0.5], np.zeros((2, 2)), np.array([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]]), "full", "positive definite"),
        ([0.5, 0.5], np.zeros((2, 2)), np.array([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]]), "full", "symmetric"),
        ([0.5, 0.5], np.zeros((2, 2)), -np.ones((2, 2)), "diag", "positive"),
        ([0.5, 0.5], np.full((2, 2), np.nan), np.ones(2), "spherical", "NaN"),
        ([0.5, 0.5], np.zeros(2), np.ones(2), "spherical", "means"),
    ],
)
def test_params_from_arrays_rejects_bad_parameters(weights, means, covariances, cov_type, message):
    with pytest.raises(ValueError, match=message):
        jaxgmm.GMMParams.from_arrays(weights, means, covariances, cov_type)


def test_fit_rejects_initial_params_that_do_not_fit_the_data():
    params = jaxgmm.GMMParams.from_arrays([0.5, 0.5], np.zeros((2, 3)), np.ones(2), "spherical")
    with pytest.raises(ValueError, match="features"):
        jaxgmm.fit(KEY, GOOD, 2, covariance_type="spherical", init=params)
    with pytest.raises(ValueError, match="covariance_type"):
        jaxgmm.fit(KEY, np.zeros((5, 3)), 2, init=params)
    with pytest.raises(ValueError, match="components"):
        jaxgmm.fit(KEY, np.zeros((5, 3)), 3, covariance_type="spherical", init=params)


def test_fit_many_rejects_bad_input():
    with pytest.raises(ValueError, match="n_datasets"):
        jaxgmm.fit_many(KEY, GOOD, 2)
    with pytest.raises(ValueError, match="positive weight"):
        jaxgmm.fit_many(KEY, np.stack([GOOD, GOOD]), 2, sample_weight=np.r_[[np.ones(30)], [np.eye(30)[0]]])
    with pytest.raises(ValueError, match="same number of features"):
        jaxgmm.pad_datasets([GOOD, np.zeros((4, 3))])
    with pytest.raises(ValueError, match="no data sets"):
        jaxgmm.fit_many(KEY, np.zeros((0, 30, 2)), 2)
    stack = np.stack([GOOD] * 3)
    stack[2, 5, 1] = np.nan
    with pytest.raises(ValueError, match=r"X\[2\] contains NaN"):
        jaxgmm.fit_many(KEY, stack, 2)
    weight = np.ones((3, 30))
    weight[1, 3] = -1
    with pytest.raises(ValueError, match="data set 1: sample_weight contains negative"):
        jaxgmm.fit_many(KEY, np.stack([GOOD] * 3), 2, sample_weight=weight)
    with pytest.raises(ValueError, match="must be numeric"):
        jaxgmm.fit_many(KEY, np.full((2, 30, 2), "a"), 2)


def test_callers_arrays_are_not_modified():
    X = GOOD.copy()
    w = np.ones(30)
    X_before, w_before = X.copy(), w.copy()
    jaxgmm.fit(KEY, X, 2, sample_weight=w)
    stack, weight = jaxgmm.pad_datasets([X, X[:20]])
    stack_before = stack.copy()
    stack[1, 20:] = np.nan
    stack_before[1, 20:] = np.nan
    jaxgmm.fit_many(KEY, stack, 2, sample_weight=weight)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(w, w_before)
    np.testing.assert_array_equal(stack, stack_before)  # NaN padding is zeroed in a copy, not in place
