"""Drivers: restarts, many data sets, weights, recovery of a known mixture, awkward data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import jaxgmm
from conftest import assert_reports_own_log_likelihood, make_blobs, rtol_for
from jaxgmm import COVARIANCE_TYPES


def assert_results_close(a, b, rtol):
    """Two EM results (or fit results) agree: params and log-likelihood to rtol, iteration counts exactly."""
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=rtol)
    assert int(a.n_iter) == int(b.n_iter)
    assert bool(a.converged) == bool(b.converged)


# Every covariance type with the default init; every init and batching with full covariances.
@pytest.mark.parametrize(
    "init, restart_batch_size, covariance_type",
    [("kmeans", 4, c) for c in COVARIANCE_TYPES]
    + [(m, 4, "full") for m in jaxgmm.INIT_METHODS if m != "kmeans"]
    + [("kmeans", 1, "full"), ("random", 3, "full")],
)
def test_batched_restarts_equal_restarts_run_alone(init, restart_batch_size, covariance_type, dtype):
    X, *_ = make_blobs(seed=20, n=300, k=3, d=2, separation=2.0)
    Xj = jnp.asarray(X, dtype)
    key = jax.random.key(3)
    result = jaxgmm.fit(key, X.astype(dtype), 3, covariance_type=covariance_type, n_init=4, init=init, max_iter=50,
                        restart_batch_size=restart_batch_size)
    n_iters = []
    for i, k in enumerate(jax.random.split(key, 4)):
        start = jaxgmm.initialize(k, Xj, 3, covariance_type=covariance_type, method=init)
        alone = jaxgmm.em_loop(start, Xj, max_iter=50)
        one = jax.tree.map(lambda leaf: leaf[i], result.restarts)
        assert_results_close(one, alone, rtol_for(dtype, 1e-9, 2e-4))
        n_iters.append(int(alone.n_iter))
    assert_reports_own_log_likelihood(result, X.astype(dtype))
    np.testing.assert_array_equal(result.history, result.restarts.history[int(result.best_index)])


@pytest.mark.parametrize("covariance_type, batch_size", [(c, None) for c in COVARIANCE_TYPES] + [("full", 4)])
def test_padded_datasets_equal_separate_fits(covariance_type, batch_size, dtype):
    sizes = (120, 200, 75, 160)
    datasets = [make_blobs(seed=30 + i, n=n, k=2, d=2)[0].astype(dtype) for i, n in enumerate(sizes)]
    X, w = jaxgmm.pad_datasets(datasets)
    X[0, sizes[0]:] = np.nan  # padding content must not matter
    key = jax.random.key(4)
    many = jaxgmm.fit_many(key, X, 2, sample_weight=w, covariance_type=covariance_type, n_init=2,
                           batch_size=batch_size)
    assert many.params.means.shape == (4, 2, 2)
    for b, (k, data) in enumerate(zip(jax.random.split(key, 4), datasets)):
        alone = jaxgmm.fit(k, data, 2, covariance_type=covariance_type, n_init=2)
        assert_results_close(jax.tree.map(lambda leaf: leaf[b], many), alone, rtol_for(dtype, 1e-9, 2e-4))
        assert_reports_own_log_likelihood(jax.tree.map(lambda leaf: leaf[b], many), data)


def test_integer_weights_equal_duplicated_rows(covariance_type, dtype):
    X, *_ = make_blobs(seed=40, n=150, k=2, d=3)
    counts = np.random.default_rng(41).integers(0, 4, size=150)
    duplicated = np.repeat(X, counts, axis=0).astype(dtype)
    params = jaxgmm.initialize(jax.random.key(0), jnp.asarray(duplicated), 2, covariance_type=covariance_type)
    weighted = jaxgmm.em_loop(params, jnp.asarray(X, dtype), sample_weight=jnp.asarray(counts, dtype), max_iter=40)
    repeated = jaxgmm.em_loop(params, jnp.asarray(duplicated), max_iter=40)
    assert_results_close(weighted, repeated, rtol_for(dtype, 1e-9, 5e-4))


def test_weighted_initialisation_equals_duplicated_rows(dtype):
    """k-means++ draws rows by cumulative weight, so weights act like duplicates there too."""
    X, *_ = make_blobs(seed=42, n=60, k=2, d=2)
    w = np.random.default_rng(43).integers(1, 3, size=60)
    centers_w = jaxgmm.kmeans_plusplus(jax.random.key(5), jnp.asarray(X, dtype), 3, jnp.asarray(w, dtype))
    rows = {tuple(r) for r in np.asarray(X, dtype)}
    assert all(tuple(c) in rows for c in np.asarray(centers_w))


def match_components(estimated_means, true_means):
    cost = ((estimated_means[:, None] - true_means[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def test_recovers_a_known_mixture(dtype):
    n = 6000
    X, _, weights, means, covs = make_blobs(seed=50, n=n, k=3, d=2, separation=8.0)
    result = jaxgmm.fit(jax.random.key(0), X.astype(dtype), 3, n_init=3)
    perm = match_components(np.asarray(result.params.means), means)
    # Statistical tolerances: a few standard errors for n/K points per component.
    np.testing.assert_allclose(np.asarray(result.params.weights), weights[perm], atol=0.03)
    np.testing.assert_allclose(np.asarray(result.params.means), means[perm], atol=0.15)
    np.testing.assert_allclose(np.asarray(result.params.covariances), covs[perm], atol=0.25 * np.abs(covs).max())
    assert bool(result.converged)


@pytest.mark.parametrize(
    "case",
    ["duplicated_points", "constant_feature", "k_equals_distinct_points", "far_from_origin"],
)
def test_awkward_inputs_give_finite_results(case, covariance_type, dtype):
    rng = np.random.default_rng(60)
    k = 3
    # Every case is 300 × 2, so each (covariance type, init) compiles once for all cases.
    if case == "duplicated_points":
        X = np.repeat(rng.normal(size=(30, 2)), 10, axis=0)
    elif case == "constant_feature":
        X = np.column_stack([rng.normal(size=300), np.full(300, 3.0)])
    elif case == "k_equals_distinct_points":
        X = np.repeat(rng.normal(size=(k, 2)), 100, axis=0)
    else:
        X = 1e6 + rng.normal(size=(300, 2))
    for init in jaxgmm.INIT_METHODS:
        result = jaxgmm.fit(jax.random.key(1), X.astype(dtype), k, covariance_type=covariance_type, init=init)
        for leaf in jax.tree.leaves(result.params) + [result.log_likelihood, result.params.precisions_cholesky]:
            assert np.all(np.isfinite(np.asarray(leaf))), (init, leaf)


def test_far_from_origin_covariance_is_accurate(dtype):
    """Moments about the previous means: float32 keeps the spread of data near 1e6 (sklearn #30382)."""
    rng = np.random.default_rng(61)
    X = (1e6 + rng.normal(size=(2000, 2)) * [1.0, 0.5]).astype(dtype)
    result = jaxgmm.fit(jax.random.key(0), X, 1, reg_covar=0.0)
    expected = np.cov(np.asarray(X, np.float64).T, bias=True)
    np.testing.assert_allclose(np.asarray(result.params.covariances[0]), expected, rtol=rtol_for(dtype, 1e-8, 1e-3),
                               atol=rtol_for(dtype, 1e-10, 1e-3))


def test_failed_fit_raises_instead_of_returning_nan(dtype):
    X = np.repeat(np.random.default_rng(62).normal(size=(4, 2)), 5, axis=0).astype(dtype)
    with pytest.raises(ValueError, match="reg_covar"):
        jaxgmm.fit(jax.random.key(0), X, 3, reg_covar=0.0, init="random_from_data")


def test_user_given_initial_params(dtype):
    X, *_ = make_blobs(seed=63, n=300)
    params = jaxgmm.GMMParams.from_arrays(np.full(3, 1 / 3), X[:3], np.ones(3), "spherical")
    result = jaxgmm.fit(jax.random.key(0), X.astype(dtype), 3, covariance_type="spherical", init=params)
    alone = jaxgmm.em_loop(params.replace(weights=params.weights.astype(dtype), means=params.means.astype(dtype),
                                          covariances=params.covariances.astype(dtype)),
                           jnp.asarray(X, dtype))
    assert_results_close(result, alone, rtol_for(dtype, 1e-10, 1e-5))
