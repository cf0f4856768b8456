"""Missing values (NaN, missing at random): the E-step against a per-row scipy reference, the observed-data
likelihood (monotone, stationary at convergence), recovery under MCAR, imputation, and every driver.

References are written here: per-row loops with scipy's Gaussian on the observed coordinates, the
conditional Gaussian by ``numpy.linalg.solve``, and an independent marginal log-likelihood in JAX.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import jaxgmm
import jaxgmm.incomplete
import jaxgmm.missing_kernels
from conftest import X64, DTYPE, make_blobs, random_params, rtol_for, use_e_step_form

MATRIX_AND_VARIANCE_TYPES = ("full", "tied", "diag", "spherical", "VEV", "EEI")


def with_missing(X, fraction, seed):
    """``X`` with entries removed completely at random (a copy)."""
    X = np.array(X, dtype=np.float64)
    X[np.random.default_rng(seed).random(X.shape) < fraction] = np.nan
    return X


def remove_every_count(rng, X, most):
    """``X (N, D)`` with its rows missing 0, 1, …, ``most`` values (each count at least once, in that order; the
    other rows at random counts below D), in place."""
    d = X.shape[1]
    counts = np.concatenate([np.arange(most + 1), rng.integers(0, d, len(X) - most - 1)])
    for row, count in enumerate(counts):
        X[row, rng.choice(d, count, replace=False)] = np.nan
    return X


def every_count(rng, n, d, scale=2.0):
    """Rows missing 0, 1, …, D values (each count at least once; the rest at random counts)."""
    return remove_every_count(rng, rng.normal(size=(n, d)) * scale, d)


def reference_e_step(params, X):
    """Per row: scipy's marginal density of the observed coordinates, the conditional mean and covariance of
    the missing ones. Returns counts, sums and dense scatters about the means, and Σ log p(x_o)."""
    S = np.asarray(params.covariance_matrices, np.float64)
    alpha, mu = np.asarray(params.weights, np.float64), np.asarray(params.means, np.float64)
    K, D = mu.shape
    counts, sums, scatters, total = np.zeros(K), np.zeros((K, D)), np.zeros((K, D, D)), 0.0
    for x in np.asarray(X, np.float64):
        o = ~np.isnan(x)
        m = ~o
        if not o.any():
            continue  # no information
        logs = np.array([np.log(alpha[k]) + multivariate_normal(mu[k][o], S[k][np.ix_(o, o)]).logpdf(x[o])
                         for k in range(K)])
        r = np.exp(logs - logsumexp(logs))
        total += logsumexp(logs)
        for k in range(K):
            completed, conditional = x.copy(), np.zeros((D, D))
            if m.any():
                regression = np.linalg.solve(S[k][np.ix_(o, o)], S[k][np.ix_(o, m)]).T
                completed[m] = mu[k][m] + regression @ (x[o] - mu[k][o])
                conditional[np.ix_(m, m)] = S[k][np.ix_(m, m)] - regression @ S[k][np.ix_(o, m)]
            d = completed - mu[k]
            counts[k] += r[k]
            sums[k] += r[k] * d
            scatters[k] += r[k] * (np.outer(d, d) + conditional)
    return counts, sums, scatters, total


def in_layout(params, scatters):
    """Dense ``(K, D, D)`` scatters reduced as the model's layout stores them."""
    return {"full": scatters, "tied": scatters.sum(0), "diag": np.diagonal(scatters, axis1=1, axis2=2),
            "spherical": np.trace(scatters, axis1=1, axis2=2)}[params.model.storage.kind]


def reference_impute(params, X):
    """Conditional means under the mixture, per row."""
    S = np.asarray(params.covariance_matrices, np.float64)
    alpha, mu = np.asarray(params.weights, np.float64), np.asarray(params.means, np.float64)
    out = np.array(X, np.float64)
    for row, x in enumerate(out):
        o = ~np.isnan(x)
        if o.all():
            continue
        if not o.any():
            out[row] = alpha @ mu
            continue
        logs = np.array([np.log(alpha[k]) + multivariate_normal(mu[k][o], S[k][np.ix_(o, o)]).logpdf(x[o])
                         for k in range(len(alpha))])
        r = np.exp(logs - logsumexp(logs))
        means = [mu[k][~o] + np.linalg.solve(S[k][np.ix_(o, o)], S[k][np.ix_(o, ~o)]).T @ (x[o] - mu[k][o])
                 for k in range(len(alpha))]
        out[row, ~o] = r @ np.array(means)
    return out


# ------------------------------------------------------------------- the E-step, exactly


# The E-step forms of the filled rows' statistics (jaxgmm.kernels) for a matrix and a variance layout; the
# other models with the default form.
REFERENCE_CASES = [(t, f) for t in ("full", "diag") for f in ("direct", "nearest-mean", "fast")] + [
    (t, "nearest-mean") for t in ("tied", "spherical", "VEV", "EEI")]


def assert_same_next_params(params, stats, counts, sums, scatters):
    """The M-step of ``stats`` (any centres) equals that of the reference sums about the means, to 1e-10."""
    reference = jaxgmm.SuffStats(jnp.asarray(counts), jnp.asarray(sums), jnp.asarray(in_layout(params, scatters)),
                                 params.means, params.covariance_type)
    got, want = jaxgmm.m_step(stats, previous=params), jaxgmm.m_step(reference, previous=params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.x64
@pytest.mark.parametrize("covariance_type, form", REFERENCE_CASES)
def test_one_em_step_equals_the_per_row_reference(covariance_type, form, monkeypatch):
    """Rows missing 0, 1, …, D values (D = 8: unrolled factorisations up to 4, column by column for 5-7, padded
    to 7, or by LAPACK in the direct form's case; rows observing nothing) in the E-step's forms: statistics,
    log-likelihood and the next parameters to 1e-10."""
    rng = np.random.default_rng(7)
    D, K = 8, 4
    X = every_count(rng, 90, D)
    layout = {"VEV": "full", "EEI": "diag"}.get(covariance_type, covariance_type)
    params = random_params(rng, layout, K, D)
    if layout != covariance_type:  # mclust's models: parameters with their structure, from their own M-step
        params = jaxgmm.m_step(jaxgmm.e_step(params.replace(covariance_type=covariance_type), np.nan_to_num(X))[0])
    fast = use_e_step_form(monkeypatch, form)
    if form == "direct":  # the widest bucket by LAPACK (larger s) rather than column by column
        monkeypatch.setattr(jaxgmm.missing_kernels, "_COLUMNWISE_MAX", 0)
    stats, log_likelihood = jaxgmm.e_step(params, X, missing="marginalize", fast=fast)
    counts, sums, scatters, total = reference_e_step(params, X)
    np.testing.assert_allclose(log_likelihood, total, rtol=1e-10)
    assert_same_next_params(params, stats, counts, sums, scatters)
    if not fast:  # same centres: the statistics themselves
        np.testing.assert_allclose(stats.counts, counts, rtol=1e-10)
        np.testing.assert_allclose(stats.sums, sums, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(stats.scatters, in_layout(params, scatters), rtol=1e-10, atol=1e-10)


@pytest.mark.x64
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_shared_patterns_and_traced_layout_equal_the_reference(covariance_type, monkeypatch):
    """Rows sharing a pattern (one factorisation per pattern, statistics completed from the observed
    coordinates' moments) and an array traced under ``jit`` (one general bucket) give the reference
    statistics too, with and without ``fast``, as do per-row log-densities (scipy's marginal)."""
    monkeypatch.setattr(jaxgmm.incomplete, "_PATTERN_MIN_ROWS", 10)
    rng = np.random.default_rng(3)
    D, K = 6, 3
    X = rng.normal(size=(80, D)) * 2
    patterns = [[0, 3], [1, 2, 4], []]
    for row in range(80):
        X[row, patterns[row % 3]] = np.nan
    X[:4, 5] = np.nan  # a few rows of other patterns
    params = random_params(rng, covariance_type, K, D)
    kinds = [b.kind for b in jaxgmm.incomplete.layout(X, None, covariance_type).buckets]
    assert kinds.count("pattern") == 2 and "rows" in kinds
    counts, sums, scatters, total = reference_e_step(params, X)
    traced = jax.jit(lambda p, x: jaxgmm.e_step(p, x, missing="marginalize"))
    for stats, ll in (jaxgmm.e_step(params, X, missing="marginalize"), traced(params, X)):
        np.testing.assert_allclose(ll, total, rtol=1e-10)
        np.testing.assert_allclose(stats.sums, sums, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(stats.scatters, in_layout(params, scatters), rtol=1e-10, atol=1e-10)
    # fast=True: the same statistics about the shared centre, so the same next parameters.
    fast_stats, fast_ll = jaxgmm.e_step(params, X, missing="marginalize", fast=True)
    np.testing.assert_allclose(fast_ll, total, rtol=1e-10)
    assert_same_next_params(params, fast_stats, counts, sums, scatters)
    per_row = jaxgmm.score_samples(params, X, missing="marginalize")
    S, mu, alpha = np.asarray(params.covariance_matrices), np.asarray(params.means), np.asarray(params.weights)
    for row in (0, 1, 2, 3, 40):
        o = ~np.isnan(X[row])
        expected = logsumexp([np.log(alpha[k]) + multivariate_normal(mu[k][o], S[k][np.ix_(o, o)]).logpdf(X[row][o])
                              for k in range(K)])
        np.testing.assert_allclose(per_row[row], expected, rtol=1e-10)


@pytest.mark.parametrize("separation", [10.0, 1000.0])
@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_float32_masked_form_stays_accurate_for_distant_components(covariance_type, separation):
    """Diag and spherical with missing values, in float32: one EM step from the true centres (far from each
    other and from the origin) against float64 numpy. The sums are products about the shared centre; their
    rounding must stay that of storing the means, and the covariances must not lose digits with distance."""
    rng = np.random.default_rng(21)
    d = 3
    centres = np.array([[-separation, 0, 0], [separation, 0, 0]]) + 1e3
    X = np.concatenate([c + rng.normal(size=(500, d)) for c in centres])
    X = with_missing(X.astype(np.float32), 0.2, seed=22)  # the float32 data, held in float64
    X = X[~np.all(np.isnan(X), axis=1)]  # rows observing nothing contribute nothing (tested elsewhere)
    observed = ~np.isnan(X)
    start_cov = {"diag": np.ones((2, d)), "spherical": np.ones(2)}[covariance_type]
    # Reference: unit variances, equal weights; the marginal of the observed coordinates drops the others.
    diff = np.where(observed[:, None, :], np.nan_to_num(X)[:, None, :] - centres[None], 0.0)
    logp = -0.5 * np.sum(diff**2, -1)
    r = np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
    completed = np.where(observed[:, None, :], np.nan_to_num(X)[:, None, :], centres[None])  # (N, K, D)
    n = r.sum(0)
    mu = np.einsum("nk,nkd->kd", r, completed) / n[:, None]
    var = (np.einsum("nk,nkd->kd", r, (completed - mu[None]) ** 2 + ~observed[:, None, :]) / n[:, None])
    var = var if covariance_type == "diag" else var.mean(axis=1)
    params = jaxgmm.GMMParams.from_arrays(np.float32([0.5, 0.5]), np.float32(centres), np.float32(start_cov),
                                          covariance_type)
    stats, _ = jaxgmm.e_step(params, jnp.asarray(X, jnp.float32), missing="marginalize")
    new = jaxgmm.m_step(stats, reg_covar=0.0)
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(np.asarray(new.means, np.float64), mu, rtol=0, atol=10 * eps * np.abs(centres).max())
    assert np.abs(np.asarray(new.covariances, np.float64) - var).max() / np.abs(var).max() < 100 * eps


# Relative tolerance of the observed-data log-likelihood, by condition number of the covariances and precision.
ILL_CONDITIONED_RTOL = {(1e4, "float32"): 5e-5, (1e6, "float32"): 3e-2, (1e4, "float64"): 1e-10, (1e6, "float64"): 1e-10}


@pytest.mark.parametrize("condition", [1e4, 1e6])
def test_ill_conditioned_covariances_give_finite_accurate_marginals(condition):
    """Full covariances with condition number up to 1e6 and rows missing 0, 1, …, D − 1 values (every
    factorisation: unrolled, column by column): the E-step's statistics are finite and its observed-data
    log-likelihood is scipy's (float64) to a tolerance that grows with the condition number in float32."""
    rng = np.random.default_rng(5)
    D, K = 8, 3
    rotations = [np.linalg.qr(rng.normal(size=(D, D)))[0] for _ in range(K)]
    covariances = np.array([q @ np.diag(np.geomspace(1.0, 1.0 / condition, D)) @ q.T for q in rotations])
    means = rng.normal(size=(K, D)) * 3
    params = jaxgmm.GMMParams.from_arrays(np.full(K, 1.0 / K), means, covariances, "full")
    params = params.replace(**{f: np.asarray(getattr(params, f), DTYPE) for f in ("weights", "means", "covariances")})
    X = np.array([rng.multivariate_normal(means[k], covariances[k]) for k in rng.integers(0, K, 400)])
    X = remove_every_count(rng, X, D - 1).astype(DTYPE)
    stats, log_likelihood = jaxgmm.e_step(params, X, missing="marginalize")
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(stats))
    *_, total = reference_e_step(params, X)
    np.testing.assert_allclose(log_likelihood, total, rtol=ILL_CONDITIONED_RTOL[condition, np.dtype(DTYPE).name])


def test_without_nan_marginalize_is_the_complete_data_fit_exactly():
    X, *_ = make_blobs(seed=4, n=300, k=3, d=3)
    X = X.astype(DTYPE)
    a = jaxgmm.fit(jax.random.key(1), X, 3, n_init=2)
    b = jaxgmm.fit(jax.random.key(1), X, 3, n_init=2, missing="marginalize")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    c = jaxgmm.em_loop(a.params, X, max_iter=5, missing="marginalize")
    d = jaxgmm.em_loop(a.params, X, max_iter=5)
    for x, y in zip(jax.tree.leaves(c), jax.tree.leaves(d)):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------- the observed-data likelihood


@pytest.mark.parametrize("covariance_type", MATRIX_AND_VARIANCE_TYPES)
def test_observed_log_likelihood_never_decreases(covariance_type):
    X, *_ = make_blobs(seed=5, n=400, k=3, d=4, separation=3.0)
    X = with_missing(X, 0.25, seed=6).astype(DTYPE)
    start = jaxgmm.initialize(jax.random.key(0), jaxgmm.incomplete.layout(X, None, covariance_type), 3,
                              covariance_type=covariance_type)
    result = jaxgmm.em_loop(start, X, max_iter=40, tol=0.0, reg_covar=0.0, missing="marginalize")
    history = np.asarray(result.history)
    assert np.isfinite(history).all()
    slack = rtol_for(float64=1e-12, float32=2e-6) * np.abs(history).max()
    assert np.all(np.diff(history) >= -slack)
    assert float(result.log_likelihood) >= history[-1] - slack


def marginal_log_likelihood(weights_logits, means, cov_factors, X):
    """Σ_n log p(x_n,o), written independently: one Python loop over the missingness patterns, JAX's
    multivariate normal on the observed coordinates (full covariances L Lᵀ)."""
    log_weights = jax.nn.log_softmax(weights_logits)
    covs = cov_factors @ jnp.swapaxes(cov_factors, -1, -2)
    observed = ~np.isnan(X)
    total = 0.0
    for pattern in np.unique(observed, axis=0):
        if not pattern.any():
            continue
        rows = X[(observed == pattern).all(axis=1)][:, pattern]
        o = np.flatnonzero(pattern)
        logs = jnp.stack([log_weights[k] + jax.scipy.stats.multivariate_normal.logpdf(
            rows, means[k][o], covs[k][np.ix_(o, o)]) for k in range(means.shape[0])], axis=-1)
        total = total + jnp.sum(jax.nn.logsumexp(logs, axis=-1))
    return total


@pytest.mark.x64
def test_converged_fit_is_stationary_for_the_observed_likelihood():
    """At an EM fixed point the gradient of the observed-data log-likelihood (autodiff of the independent
    function above) vanishes, and L-BFGS started there cannot improve it."""
    from scipy.optimize import minimize

    X, *_ = make_blobs(seed=8, n=300, k=2, d=3, separation=5.0)
    X = with_missing(X, 0.3, seed=9)
    result = jaxgmm.fit(jax.random.key(0), X, 2, missing="marginalize", tol=1e-13, max_iter=3000, reg_covar=0.0)
    assert bool(result.converged)
    p = result.params
    theta = (jnp.log(p.weights), p.means, jnp.linalg.cholesky(p.covariances))
    objective = jax.jit(lambda t: marginal_log_likelihood(*t, X))
    gradient = jax.grad(objective)(theta)
    n_observed = int(np.any(~np.isnan(X), axis=1).sum())
    np.testing.assert_allclose(objective(theta) / n_observed, result.log_likelihood, rtol=1e-12)
    for g in jax.tree.leaves(gradient):
        assert np.abs(g).max() < 1e-5 * n_observed
    flat, unravel = ravel_pytree(theta)
    fun = jax.jit(lambda v: -objective(unravel(v)))
    found = minimize(lambda v: float(fun(v)), np.asarray(flat), jac=lambda v: np.asarray(jax.grad(fun)(v)),
                     method="L-BFGS-B")
    assert -found.fun <= float(objective(theta)) + 1e-8 * n_observed


# ------------------------------------------------------------------- recovery and imputation under MCAR


def _matched(fitted_means, true_means):
    from itertools import permutations

    best = min(permutations(range(len(true_means))), key=lambda p: np.abs(fitted_means[list(p)] - true_means).sum())
    return list(best)


def test_mcar_recovery_and_imputation_beat_column_means_and_iterative_imputer(capsys):
    """10/20/30 % of the entries removed completely at random from a known mixture: the fit stays within
    statistical tolerance of the complete-data fit, and conditional-mean imputation has a lower RMSE than
    column means and than scikit-learn's IterativeImputer (whose completed data a GaussianMixture then
    fits less well). The numbers are printed (pytest -s)."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer
    from sklearn.mixture import GaussianMixture

    X, labels, weights, means, covs = make_blobs(seed=11, n=1500, k=3, d=5, separation=4.0)
    complete = jaxgmm.fit(jax.random.key(0), X.astype(DTYPE), 3, n_init=3)
    order = _matched(np.asarray(complete.params.means), means)
    assert np.abs(np.asarray(complete.params.means)[order] - means).max() < 0.3
    lines = []
    for fraction in (0.1, 0.2, 0.3):
        Xm = with_missing(X, fraction, seed=int(fraction * 100))
        holes = np.isnan(Xm)
        fitted = jaxgmm.fit(jax.random.key(0), Xm.astype(DTYPE), 3, n_init=3, missing="marginalize")
        ours = np.asarray(fitted.params.means)[_matched(np.asarray(fitted.params.means), means)]
        # Statistical tolerance: a component mean from ~500 rows with unit-scale spread moves by ~0.05.
        assert np.abs(ours - np.asarray(complete.params.means)[order]).max() < 0.25
        np.testing.assert_allclose(np.sort(np.asarray(fitted.params.weights)), np.sort(weights), atol=0.05)
        imputed = jaxgmm.impute(fitted.params, Xm)
        assert np.array_equal(imputed[~holes], Xm[~holes])  # observed values bit for bit
        rmse = lambda filled: float(np.sqrt(np.mean((filled[holes] - X[holes]) ** 2)))  # noqa: E731
        column_mean = np.where(holes, np.nanmean(Xm, axis=0), Xm)
        iterative = IterativeImputer(random_state=0, max_iter=20).fit_transform(Xm)
        sk = GaussianMixture(3, n_init=3, random_state=0).fit(iterative)
        sk_means = sk.means_[_matched(sk.means_, means)]
        errors = dict(ours=rmse(imputed), column_mean=rmse(column_mean), iterative=rmse(iterative))
        assert errors["ours"] < errors["iterative"] < errors["column_mean"]
        lines.append(f"MCAR {fraction:.0%}: imputation RMSE ours {errors['ours']:.3f}, IterativeImputer "
                     f"{errors['iterative']:.3f}, column mean {errors['column_mean']:.3f}; largest mean error vs "
                     f"the complete-data fit: ours {np.abs(ours - np.asarray(complete.params.means)[order]).max():.3f},"
                     f" IterativeImputer+GaussianMixture "
                     f"{np.abs(sk_means - np.asarray(complete.params.means)[order]).max():.3f}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


# ------------------------------------------------------------------- imputation and per-row outputs


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_impute_equals_the_reference_and_keeps_observed_values(covariance_type):
    rng = np.random.default_rng(12)
    D, K = 4, 3
    X = every_count(rng, 40, D).astype(DTYPE)
    params = random_params(rng, covariance_type, K, D)
    imputed = jaxgmm.impute(params, X)
    assert imputed.dtype == X.dtype
    observed = ~np.isnan(X)
    assert np.array_equal(imputed[observed], X[observed])
    np.testing.assert_allclose(imputed, reference_impute(params, X), rtol=rtol_for(float32=2e-4),
                               atol=rtol_for(float64=1e-10, float32=1e-4))
    proba = jaxgmm.predict_proba(params, X, missing="marginalize")
    empty = np.flatnonzero(~observed.any(axis=1))
    np.testing.assert_allclose(proba[empty], np.broadcast_to(params.weights, (len(empty), K)), rtol=1e-6)
    np.testing.assert_allclose(jaxgmm.score_samples(params, X, missing="marginalize")[empty], 0.0, atol=1e-6)


def test_sample_missing_draws_from_the_conditional_gaussian():
    """One component: every draw of the missing pair has the conditional mean and covariance."""
    rng = np.random.default_rng(13)
    A = rng.normal(size=(4, 4))
    cov = A @ A.T + np.eye(4)
    params = jaxgmm.GMMParams.from_arrays(np.ones(1), np.arange(4.0)[None], cov[None])
    params = params.replace(means=params.means.astype(DTYPE), covariances=params.covariances.astype(DTYPE),
                            weights=params.weights.astype(DTYPE))
    row = np.array([1.5, np.nan, -0.5, np.nan])
    X = np.tile(row, (20000, 1))
    draws = jaxgmm.sample_missing(jax.random.key(0), params, X)
    assert np.array_equal(draws[:, [0, 2]], X[:, [0, 2]])
    o, m = [0, 2], [1, 3]
    regression = np.linalg.solve(cov[np.ix_(o, o)], cov[np.ix_(o, m)]).T
    mean = np.arange(4.0)[m] + regression @ (row[o] - np.arange(4.0)[o])
    conditional = cov[np.ix_(m, m)] - regression @ cov[np.ix_(o, m)]
    sem = np.sqrt(np.diag(conditional) / len(X))
    assert np.all(np.abs(draws[:, m].mean(axis=0) - mean) < 5 * sem)
    np.testing.assert_allclose(np.cov(draws[:, m].T), conditional, rtol=0.05, atol=0.05 * conditional.max())
    again = jaxgmm.sample_missing(jax.random.key(0), params, X)
    assert np.array_equal(draws, again)


# ------------------------------------------------------------------- drivers: batched, streamed, sharded


def test_batched_streamed_and_online_equal_alone_with_missing_values():
    X, *_ = make_blobs(seed=14, n=500, k=3, d=3)
    sets = [with_missing(X, 0.2, seed=15).astype(DTYPE), with_missing(X[::-1], 0.3, seed=16).astype(DTYPE)]
    options = dict(n_init=1, tol=0.0, max_iter=15, missing="marginalize")  # restarts may tie up to a relabelling
    keys = jax.random.split(jax.random.key(2), 2)
    alone = [jaxgmm.fit(keys[b], sets[b], 3, **options) for b in range(2)]
    batched = jaxgmm.fit_many(jax.random.key(2), np.stack(sets), 3, batch_size=2, **options)
    rtol = rtol_for(float64=1e-9, float32=2e-4)
    for b in range(2):
        np.testing.assert_allclose(batched.params.means[b], alone[b].params.means, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(batched.log_likelihood[b], alone[b].log_likelihood, rtol=rtol)
    c = alone[0].params.covariances
    start = alone[0].params.replace(covariances=(c + jnp.swapaxes(c, 1, 2)) / 2)  # float32 rounding: exactly symmetric
    streamed = jaxgmm.fit_stream(jax.random.key(2), lambda: (sets[0][i : i + 70] for i in range(0, 500, 70)), 3,
                                 block_size=128, init=start, **options)
    in_memory = jaxgmm.fit(jax.random.key(2), sets[0], 3, init=start, **options)
    np.testing.assert_allclose(streamed.params.covariances, in_memory.params.covariances, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(streamed.history, in_memory.history, rtol=rtol)
    online = jaxgmm.fit_online(jax.random.key(2), sets[0], 3, batch_size=100, missing="marginalize")
    assert np.isfinite(online.history).all() and online.n_samples == 500


SHARDED_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, jax, jaxgmm
    from jaxgmm.distributed import data_mesh, fit_sharded
    X = np.load(sys.argv[1])
    start = jaxgmm.GMMParams(*[np.load(sys.argv[1] + f".{name}.npy") for name in ("w", "m", "c")], "full")
    r = fit_sharded(jax.random.key(0), X, 3, init=start, mesh=data_mesh(), tol=0.0, max_iter=10,
                    missing="marginalize")
    np.save(sys.argv[1] + ".out.npy", np.concatenate([np.ravel(r.params.covariances), [r.log_likelihood]]))
    """
)


def test_sharded_equals_single_device_with_missing_values(tmp_path):
    X, *_ = make_blobs(seed=17, n=403, k=3, d=3)
    X = with_missing(X, 0.2, seed=18).astype(DTYPE)
    # From a converged start EM contracts, so float32 sums in another order stay at rounding level.
    start = jaxgmm.fit(jax.random.key(0), X, 3, missing="marginalize").params
    alone = jaxgmm.fit(jax.random.key(0), X, 3, init=start, tol=0.0, max_iter=10, missing="marginalize")
    path = str(tmp_path / "x.npy")
    np.save(path, X)
    for name, leaf in zip(("w", "m", "c"), (start.weights, start.means, start.covariances)):
        np.save(path + f".{name}.npy", np.asarray(leaf))
    env = {**os.environ, "JAX_ENABLE_X64": "1" if X64 else "0", "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
           + " --xla_force_host_platform_device_count=4"}
    out = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, path], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    sharded = np.load(path + ".out.npy")
    rtol = rtol_for(float64=1e-9, float32=2e-4)
    np.testing.assert_allclose(sharded[:-1], np.ravel(alone.params.covariances), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(sharded[-1], alone.log_likelihood, rtol=rtol)


# ------------------------------------------------------------------- edges


def test_estimator_and_select_with_missing_values():
    from jaxgmm.sklearn import GaussianMixture

    X = jaxgmm.load_penguins()
    X = ((X - np.nanmean(X, axis=0)) / np.nanstd(X, axis=0)).astype(DTYPE)
    with pytest.raises(ValueError, match="Input X contains NaN"):  # scikit-learn's error by default
        GaussianMixture(2).fit(X)
    gm = GaussianMixture(3, n_init=2, random_state=0, missing="marginalize").fit(X)
    empty = np.flatnonzero(np.isnan(X).all(axis=1))
    np.testing.assert_allclose(gm.predict_proba(X)[empty], np.broadcast_to(gm.weights_, (len(empty), 3)), rtol=1e-6)
    fitted = jaxgmm.fit(jax.random.key(0), X, 3, missing="marginalize")
    sel = jaxgmm.select(jax.random.key(0), X, [3], ["VVV"], n_init=1, missing="marginalize")
    np.testing.assert_allclose(sel.best.log_likelihood, fitted.log_likelihood * (len(X) - len(empty)),
                               rtol=rtol_for(float32=1e-5))


def test_invalid_missing_input_is_refused_with_a_clear_message():
    X = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, np.nan]])
    with pytest.raises(ValueError, match="column 1 has no observed value"):
        jaxgmm.fit(jax.random.key(0), X, 1, missing="marginalize")
    with pytest.raises(ValueError, match="NaN values.*missing='marginalize'"):
        jaxgmm.fit(jax.random.key(0), X, 1)
    with pytest.raises(ValueError, match="Invalid missing"):
        jaxgmm.fit(jax.random.key(0), X, 1, missing="drop")
    with pytest.raises(ValueError, match="infinite"):
        jaxgmm.fit(jax.random.key(0), np.array([[1.0, np.inf], [2.0, np.nan]]), 1, missing="marginalize")
    with pytest.raises(ValueError, match="features"):
        jaxgmm.impute(random_params(np.random.default_rng(0), "full", 2, 3), X)


def test_command_line_fits_predicts_and_imputes_incomplete_csv(tmp_path, capsys):
    from jaxgmm import cli

    X = jaxgmm.load_penguins()
    data = tmp_path / "penguins.csv"
    with open(data, "w") as f:
        f.write(",".join(jaxgmm.PENGUINS_COLUMNS) + "\n")
        f.writelines(",".join("NA" if np.isnan(v) else repr(float(v)) for v in row) + "\n" for row in X)
    model = tmp_path / "model.npz"
    assert cli.main(["fit", str(data), "-k", "2", "--standardize", "--out", str(model)]) == 1
    assert "--missing marginalize" in capsys.readouterr().err
    assert cli.main(["fit", str(data), "-k", "2", "--standardize", "--out", str(model), "--missing", "marginalize",
                     "--quiet"]) == 0
    assert "35 of 2,064 values missing (1.7 %), in 14 rows; 2 rows have none observed" in capsys.readouterr().out
    labels = tmp_path / "labels.csv"
    assert cli.main(["predict", str(model), str(data), "--missing", "marginalize", "--out", str(labels)]) == 0
    from jaxgmm.io import read_model

    saved = read_model(model)
    standardized = (X - saved.center) / saved.scale
    expected = np.asarray(jaxgmm.predict(saved.model, standardized.astype(DTYPE), missing="marginalize"))
    assert np.array_equal(np.loadtxt(labels, skiprows=1, dtype=int), expected)
    completed = tmp_path / "completed.csv"
    assert cli.main(["impute", str(model), str(data), "--out", str(completed)]) == 0
    out = np.loadtxt(completed, delimiter=",", skiprows=1)
    holes = np.isnan(X)
    assert np.array_equal(out[~holes], X[~holes])  # observed values as read, bit for bit
    reference = jaxgmm.impute(saved.model, standardized) * saved.scale + saved.center
    np.testing.assert_allclose(out[holes], reference[holes], rtol=1e-6)
