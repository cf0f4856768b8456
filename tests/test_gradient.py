"""Gradient methods, and the theory linking them to EM, checked by autodiff.

References come from outside the code under test: numpy/scipy for the
unconstrained map and the log-likelihood, closed-form EM updates, and
autodiff identities (Fisher's identity; Xu & Jordan's preconditioning).
"""

import functools
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import jaxgmm
from conftest import DTYPE, X64, dense_covariances, make_blobs, random_params, rtol_for
from jaxgmm import from_unconstrained, log_likelihood, q_function, to_unconstrained
from jaxgmm.gradient import _draw_batch, _fit_gradient

K, D = 3, 2
# The float64 pass runs the tight version of each check; its float32 twin only in the float32 pass.
float32_only = pytest.mark.skipif(X64, reason="the float64 pass runs the tight version of this check")
# One optimizer object per kind: it is static under jit, so sharing it shares compiled code.
LBFGS = optax.lbfgs()
ADAM_SMALL = optax.adam(1e-4)
ADAM = optax.adam(5e-2)
MOMENTUM = optax.sgd(1e-2, momentum=0.9)
SGD_LARGE = optax.sgd(1.0)


@pytest.fixture(scope="module")
def X():
    data, *_ = make_blobs(seed=3, n=300, k=K, d=D, separation=6.0)
    return jnp.asarray(data, DTYPE)


@functools.cache
def _start(covariance_type):
    X = jnp.asarray(make_blobs(seed=3, n=300, k=K, d=D, separation=6.0)[0], DTYPE)
    return jaxgmm.initialize(jax.random.key(1), X, K, covariance_type=covariance_type, method="k-means++")


@functools.cache
def _em_fixed_point(covariance_type):
    """EM run to tol 1e-12 (float32: 1e-5, its rounding) without regularisation: a fixed point of EM."""
    X = jnp.asarray(make_blobs(seed=3, n=300, k=K, d=D, separation=6.0)[0], DTYPE)
    tol = rtol_for(float64=1e-12, float32=1e-5)
    result = jaxgmm.em_loop(_start(covariance_type), X, max_iter=2000, tol=tol, reg_covar=0.0)
    assert bool(result.converged)
    return result.params


# Jitted once per covariance type: eager op-by-op dispatch would compile every small op separately.
ll = jax.jit(log_likelihood)
em_step = jax.jit(lambda p, X: jaxgmm.m_step(jaxgmm.e_step(p, X)[0], reg_covar=0.0))


def _max_abs(tree):
    return max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(tree))


def _max_abs_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _numpy_precision_cholesky(cov, covariance_type):
    """Upper U with Σ⁻¹ = U Uᵀ, by numpy (for full/tied)."""
    L = np.linalg.cholesky(np.asarray(cov, np.float64))
    return np.swapaxes(np.linalg.inv(L), -1, -2)


# --- the unconstrained map ---------------------------------------------------------------------------------


def test_to_unconstrained_matches_numpy(covariance_type, dtype):
    p = random_params(np.random.default_rng(0), covariance_type, k=K, d=3)
    u = to_unconstrained(p)
    log_w = np.log(np.asarray(p.weights, np.float64))
    rtol = rtol_for(float64=1e-12, float32=1e-5)
    np.testing.assert_allclose(u.logits, log_w - log_w.mean(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(np.sum(u.logits), 0.0, atol=rtol)
    if covariance_type in ("full", "tied"):
        U = _numpy_precision_cholesky(p.covariances, covariance_type)
        rows, cols = np.triu_indices(3)
        expected = U[..., rows, cols]
        expected[..., rows == cols] = np.log(expected[..., rows == cols])
    else:
        expected = np.log(np.asarray(p.covariances, np.float64))
    np.testing.assert_allclose(u.cov_coords, expected, rtol=rtol, atol=rtol)
    assert u.cov_coords.dtype == dtype


def test_from_unconstrained_matches_numpy_for_any_real_input(covariance_type, dtype):
    rng = np.random.default_rng(1)
    template = to_unconstrained(random_params(rng, covariance_type, k=K, d=3))
    u = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), dtype), template)
    p = from_unconstrained(u)
    logits = np.asarray(u.logits, np.float64)
    rtol = rtol_for(float64=1e-12, float32=1e-5)
    np.testing.assert_allclose(p.weights, np.exp(logits - logsumexp(logits)), rtol=rtol)
    coords = np.asarray(u.cov_coords, np.float64)
    if covariance_type in ("full", "tied"):
        rows, cols = np.triu_indices(3)
        U = np.zeros(coords.shape[:-1] + (3, 3))
        U[..., rows, cols] = np.where(rows == cols, np.exp(coords), coords)
        expected = np.linalg.inv(U @ np.swapaxes(U, -1, -2))
        np.testing.assert_allclose(p.covariances, expected, rtol=rtol_for(float64=1e-10, float32=1e-3))
        assert np.all(np.linalg.eigvalsh(np.asarray(p.covariances, np.float64)) > 0)
    else:
        np.testing.assert_allclose(p.covariances, np.exp(coords), rtol=rtol)


def test_round_trips_are_exact(covariance_type, dtype):
    rng = np.random.default_rng(2)
    p = random_params(rng, covariance_type, k=K, d=3)
    rtol = rtol_for(float64=1e-12, float32=2e-5)
    back = from_unconstrained(to_unconstrained(p))
    for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(p)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    assert back.covariance_type == covariance_type
    # Any real coordinates come back, up to the softmax's shift, which is pinned to mean-zero logits.
    u = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), dtype), to_unconstrained(p))
    again = to_unconstrained(from_unconstrained(u))
    np.testing.assert_allclose(again.logits, u.logits - jnp.mean(u.logits), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(again.means, u.means, rtol=rtol)
    np.testing.assert_allclose(again.cov_coords, u.cov_coords, rtol=rtol, atol=rtol_for(float64=1e-12, float32=1e-4))


# --- log-likelihood and Q ----------------------------------------------------------------------------------


def test_log_likelihood_matches_scipy_in_both_parameterisations(covariance_type, dtype):
    rng = np.random.default_rng(4)
    p = random_params(rng, covariance_type, k=K, d=3)
    X = rng.normal(size=(50, 3)) * 2
    w = rng.uniform(0.1, 2.0, size=50)
    covs = dense_covariances(p.covariances, covariance_type, K, 3)
    comp = np.stack(
        [np.log(float(p.weights[k])) + multivariate_normal(np.asarray(p.means[k], np.float64), covs[k]).logpdf(X)
         for k in range(K)], axis=1,
    )
    log_p = logsumexp(comp, axis=1)
    rtol = rtol_for(float64=1e-12, float32=1e-5)
    Xj = jnp.asarray(X, dtype)
    np.testing.assert_allclose(log_likelihood(p, Xj), log_p.mean(), rtol=rtol)
    np.testing.assert_allclose(log_likelihood(to_unconstrained(p), Xj), log_p.mean(), rtol=rtol)
    np.testing.assert_allclose(log_likelihood(p, Xj, jnp.asarray(w, dtype)), np.sum(w * log_p) / w.sum(), rtol=rtol)


def test_padding_rows_are_ignored_and_keep_gradients_finite(dtype):
    p = random_params(np.random.default_rng(5), "full", k=K, d=D)
    X = np.random.default_rng(6).normal(size=(20, D))
    padded = np.vstack([X, np.full((5, D), np.nan)])
    w = np.r_[np.ones(20), np.zeros(5)]
    value, grads = jax.jit(jax.value_and_grad(log_likelihood))(p, jnp.asarray(padded, dtype), jnp.asarray(w, dtype))
    np.testing.assert_allclose(value, log_likelihood(p, jnp.asarray(X, dtype)), rtol=rtol_for())
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    q_grads = jax.jit(jax.grad(q_function))(p, p, jnp.asarray(padded, dtype), jnp.asarray(w, dtype))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(q_grads))


def _fisher_check(params, X, to_params, rtol, atol):
    grad_l = jax.jit(jax.grad(lambda t: log_likelihood(to_params(t), X)))(params)
    grad_q = jax.jit(jax.grad(lambda t, s: q_function(to_params(t), to_params(s), X)))(params, params)
    assert _max_abs(grad_l) > 1e-2  # away from an optimum, so the identity is not 0 = 0
    for got, want in zip(jax.tree.leaves(grad_q), jax.tree.leaves(grad_l)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.x64
def test_fisher_identity(X, covariance_type):
    """∇ℓ(θ) = ∇_θ′ Q(θ′ | θ) at θ′ = θ, in both parameterisations, both sides by autodiff."""
    p = random_params(np.random.default_rng(7), covariance_type, k=K, d=D)
    _fisher_check(p, X, lambda t: t, rtol=1e-10, atol=1e-10)
    _fisher_check(to_unconstrained(p), X, from_unconstrained, rtol=1e-10, atol=1e-10)


@float32_only
def test_fisher_identity_float32_sanity(X, covariance_type):
    p = random_params(np.random.default_rng(7), covariance_type, k=K, d=D)
    _fisher_check(to_unconstrained(p), X, from_unconstrained, rtol=1e-3, atol=rtol_for(float32=1e-4))


def test_q_function_is_maximised_by_the_m_step(X, covariance_type):
    """The M-step's θ′ beats nearby θ′ in Q(· | θ): its gradient vanishes there (reg_covar = 0)."""
    p = random_params(np.random.default_rng(8), covariance_type, k=K, d=D)
    new = em_step(p, X)
    u_new = to_unconstrained(new)
    grad = jax.jit(jax.grad(lambda u: q_function(from_unconstrained(u), p, X)))(u_new)
    assert _max_abs(grad) < rtol_for(float64=1e-9, float32=2e-3)
    assert float(q_function(new, p, X)) > float(q_function(p, p, X))


def _xu_jordan_check(params, X, rtol, atol):
    n = X.shape[0]
    summed = lambda t: n * log_likelihood(t, X)  # L, the summed log-likelihood
    grads = jax.jit(jax.grad(summed))(params)
    resp = np.asarray(jaxgmm.predict_proba(params, X), np.float64)
    counts = resp.sum(axis=0)
    alpha = np.asarray(params.weights, np.float64)
    covs = dense_covariances(params.covariances, params.covariance_type, K, X.shape[1])
    g_mu = np.asarray(grads.means, np.float64)
    expected_means = np.asarray(params.means, np.float64) + np.einsum("kde,ke->kd", covs, g_mu) / counts[:, None]
    expected_weights = alpha + (np.diag(alpha) - np.outer(alpha, alpha)) @ np.asarray(grads.weights, np.float64) / n
    em = em_step(params, X)
    np.testing.assert_allclose(em.means, expected_means, rtol=rtol, atol=atol)
    np.testing.assert_allclose(em.weights, expected_weights, rtol=rtol, atol=atol)
    assert np.abs(expected_means - np.asarray(params.means)).max() > 1e-2  # the step is not trivial


@pytest.mark.x64
def test_em_is_a_preconditioned_gradient_step(X, covariance_type):
    """Xu & Jordan (1996): μ_k' = μ_k + (Σ_k/N_k)∇_μk L and α' = α + (diag α − ααᵀ)/N ∇_α L."""
    p = random_params(np.random.default_rng(9), covariance_type, k=K, d=D)
    _xu_jordan_check(p, X, rtol=1e-10, atol=1e-10)


@float32_only
def test_em_is_a_preconditioned_gradient_step_float32_sanity(X, covariance_type):
    p = random_params(np.random.default_rng(9), covariance_type, k=K, d=D)
    _xu_jordan_check(p, X, rtol=1e-4, atol=rtol_for(float32=1e-3))


# --- EM fixed points and gradient methods ------------------------------------------------------------------


@pytest.mark.x64
def test_em_fixed_points_are_stationary_points(X, covariance_type):
    fixed = _em_fixed_point(covariance_type)
    grad_unconstrained = jax.jit(jax.grad(lambda v: log_likelihood(from_unconstrained(v), X)))
    assert _max_abs(grad_unconstrained(to_unconstrained(fixed))) <= 1e-6
    # ... and the start was not (the test can fail).
    assert _max_abs(grad_unconstrained(to_unconstrained(_start(covariance_type)))) > 1e-3
    # In the constrained coordinates ∂ℓ/∂α_k = 1 for all k: the Lagrange multiplier of Σα = 1.
    grad_p = jax.jit(jax.grad(log_likelihood))(fixed, X)
    np.testing.assert_allclose(grad_p.weights, np.ones(K), atol=1e-6)
    assert _max_abs(grad_p.means) <= 1e-6 and _max_abs(grad_p.covariances) <= 1e-6


# L-BFGS for every type; Adam (whose normalised steps jitter by about its learning rate) for one.
@pytest.mark.x64
@pytest.mark.parametrize(
    "covariance_type, optimizer",
    [(t, LBFGS) for t in jaxgmm.COVARIANCE_TYPES] + [("full", ADAM_SMALL)],
    ids=[f"{t}-lbfgs" for t in jaxgmm.COVARIANCE_TYPES] + ["full-adam"],
)
def test_gradient_ascent_cannot_improve_an_em_fixed_point(X, covariance_type, optimizer):
    fixed = _em_fixed_point(covariance_type)
    result = jaxgmm.fit_gradient(fixed, X, optimizer=optimizer, num_steps=50)
    gain = float(result.log_likelihood) - float(ll(fixed, X))
    assert gain <= 1e-9
    assert _max_abs_diff(result.params, fixed) < 1e-4


@pytest.mark.x64
def test_lbfgs_and_em_reach_the_same_optimum(X, covariance_type):
    start = _start(covariance_type)
    em = _em_fixed_point(covariance_type)
    gd = jaxgmm.fit_gradient(start, X, optimizer=LBFGS, num_steps=50)
    np.testing.assert_allclose(gd.log_likelihood, ll(em, X), rtol=0, atol=1e-8)
    # Match components by their means (scipy's assignment), then compare everything.
    cost = np.linalg.norm(np.asarray(gd.params.means)[:, None] - np.asarray(em.means)[None], axis=-1)
    rows, perm = linear_sum_assignment(cost)
    np.testing.assert_allclose(np.asarray(gd.params.weights)[perm], em.weights, atol=1e-4)
    np.testing.assert_allclose(np.asarray(gd.params.means)[perm], em.means, atol=1e-4)
    cov = np.asarray(gd.params.covariances)
    np.testing.assert_allclose(cov if covariance_type == "tied" else cov[perm], em.covariances, atol=1e-4)
    assert gd.history[0] < gd.log_likelihood - 1e-3  # it had somewhere to go


@float32_only
def test_lbfgs_float32_reaches_the_em_optimum(X, covariance_type):
    em = _em_fixed_point(covariance_type)
    gd = jaxgmm.fit_gradient(_start(covariance_type), X, optimizer=LBFGS, num_steps=50)
    np.testing.assert_allclose(gd.log_likelihood, ll(em, X), rtol=1e-5)
    assert gd.params.means.dtype == DTYPE


def test_history_is_the_log_likelihood_before_each_step(X):
    start = _start("diag")
    result = jaxgmm.fit_gradient(start, X, optimizer=ADAM, num_steps=50)
    np.testing.assert_allclose(result.history[0], ll(start, X), rtol=rtol_for(float32=1e-5))
    assert float(result.log_likelihood) > float(result.history[0])
    # Entry 49 is the value before step 50, i.e. where a run of 49 steps ends.
    again = jaxgmm.fit_gradient(start, X, optimizer=ADAM, num_steps=49)
    np.testing.assert_allclose(result.history[-1], again.log_likelihood, rtol=rtol_for(float32=1e-5))


# --- the comparison helper ---------------------------------------------------------------------------------


def test_em_is_monotone_and_a_large_gradient_step_is_not(X):
    start = _start("full")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no run may diverge here
        out = jaxgmm.compare(start, X, {"SGD, step 1": SGD_LARGE}, num_steps=50, epsilon=1e-6)
    assert list(out.methods) == ["EM", "SGD, step 1"]
    em, sgd = out.methods.values()
    for m in out.methods.values():
        assert m.trace.shape == (51,) and np.all(np.isfinite(m.trace))
        np.testing.assert_allclose(m.trace[0], ll(start, X), rtol=rtol_for(float32=1e-5))
        np.testing.assert_allclose(m.trace[-1], ll(m.params, X), rtol=rtol_for(float32=1e-5))
    slack = 20 * np.finfo(DTYPE).eps * np.abs(em.trace).max()
    assert np.all(np.diff(em.trace) >= -slack)
    assert np.any(np.diff(sgd.trace) < -1e-3)
    # EM after n iterations is e_step/m_step applied n times.
    p = start
    for _ in range(5):
        p = em_step(p, X)
    np.testing.assert_allclose(em.trace[5], ll(p, X), rtol=rtol_for(float32=1e-5))
    # "Reached": the first iteration within epsilon of the best of all traces.
    best = max(np.nanmax(m.trace) for m in out.methods.values())
    assert out.best_log_likelihood == best
    i = em.iterations_to_epsilon
    assert 0 < i <= 50 and em.trace[i] >= best - 1e-6 and np.all(em.trace[:i] < best - 1e-6)
    assert 0 < em.seconds_to_epsilon <= em.seconds
    assert sgd.iterations_to_epsilon == -1 and np.isnan(sgd.seconds_to_epsilon)


def test_compare_warns_about_a_diverging_run(X):
    with pytest.warns(RuntimeWarning, match="exploding"):
        out = jaxgmm.compare(_start("diag"), X, {"exploding": optax.sgd(1e4)}, num_steps=5)
    assert np.isnan(out.methods["exploding"].trace).any()


# --- batching, mini-batches, compilation -------------------------------------------------------------------


# L-BFGS (line search: a while_loop per step) for every type (float32: one), SGD with momentum for one.
# Adam is left out: where a gradient is ~0 its normalised step m/√v turns rounding noise into steps of
# size ~lr, so batched and looped runs drift apart by more than rounding.
@pytest.mark.parametrize(
    "covariance_type, optimizer",
    [pytest.param(t, LBFGS, marks=[] if t == "full" else [pytest.mark.x64]) for t in jaxgmm.COVARIANCE_TYPES]
    + [("full", MOMENTUM)],
    ids=[f"{t}-lbfgs" for t in jaxgmm.COVARIANCE_TYPES] + ["full-sgd-momentum"],
)
def test_vmap_over_restarts_equals_a_loop(X, covariance_type, optimizer):
    starts = [jaxgmm.initialize(jax.random.key(s), X, K, covariance_type=covariance_type, method="k-means++")
              for s in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *starts)
    run = lambda p: jaxgmm.fit_gradient(p, X, optimizer=optimizer, num_steps=50)
    batched = jax.vmap(run)(stacked)
    rtol = rtol_for(float64=1e-8, float32=1e-3)
    for i, start in enumerate(starts):
        alone = run(start)
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(alone)):
            np.testing.assert_allclose(got[i], want, rtol=rtol, atol=rtol)


def test_vmap_over_padded_datasets_equals_separate_fits():
    covariance_type = "diag"  # the 300-row fit alone shares its compiled code with the history test
    sets = [jnp.asarray(make_blobs(seed=s, n=n, k=K, d=D, separation=6.0)[0], DTYPE) for s, n in ((20, 300), (21, 260))]
    padded, weights = jaxgmm.pad_datasets(sets)
    start = _start(covariance_type)
    batched = jax.vmap(lambda x, w: jaxgmm.fit_gradient(start, x, optimizer=ADAM, num_steps=50, sample_weight=w))(
        padded, weights
    )
    rtol = rtol_for(float64=1e-8, float32=1e-3)
    for b, x in enumerate(sets):
        alone = jaxgmm.fit_gradient(start, x, optimizer=ADAM, num_steps=50)
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(alone)):
            np.testing.assert_allclose(got[b], want, rtol=rtol, atol=rtol)


def test_mini_batches_are_drawn_in_proportion_to_the_weights():
    w = jnp.asarray([0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 0.0], DTYPE)
    rows = np.asarray(_draw_batch(jax.random.key(0), jnp.cumsum(w), 5, 40_000))
    counts = np.bincount(rows, minlength=7)
    assert counts[[0, 3, 6]].sum() == 0  # weight 0 is never drawn, padding at the end included
    expected = 40_000 * np.asarray(w) / 10
    assert np.all(np.abs(counts - expected) <= 4 * np.sqrt(expected + 1))


def test_mini_batch_gradient_ascent_approaches_the_optimum(X):
    start = random_params(np.random.default_rng(0), "diag", k=K, d=D)  # far from the data's clusters
    em = _em_fixed_point("diag")
    a = jaxgmm.fit_gradient(start, X, optimizer=ADAM, num_steps=200, key=jax.random.key(0), batch_size=64)
    b = jaxgmm.fit_gradient(start, X, optimizer=ADAM, num_steps=200, key=jax.random.key(0), batch_size=64)
    c = jaxgmm.fit_gradient(start, X, optimizer=ADAM, num_steps=200, key=jax.random.key(1), batch_size=64)
    np.testing.assert_array_equal(a.history, b.history)  # same key, same batches
    assert not np.array_equal(a.history, c.history)
    gap_start = float(ll(em, X) - ll(start, X))
    assert float(ll(em, X) - a.log_likelihood) < 0.1 * gap_start


def test_no_recompile_for_new_params_or_data(X):
    run = lambda p, x: jaxgmm.fit_gradient(p, x, optimizer=ADAM, num_steps=50)
    run(_start("spherical"), X)
    size = _fit_gradient._cache_size()
    other = random_params(np.random.default_rng(10), "spherical", k=K, d=D)
    run(other, X + 1.0)
    assert _fit_gradient._cache_size() == size


# --- validation at the edge --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(X=np.zeros(10)), "2-D"),
        (dict(X=np.full((10, D), np.nan)), "NaN"),
        (dict(X=np.zeros((10, D + 1))), "features"),
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=2.5), "num_steps"),
        (dict(batch_size=8), "key"),
        (dict(key=jax.random.key(0)), "batch_size"),
        (dict(batch_size=0, key=jax.random.key(0)), "batch_size"),
        (dict(sample_weight=-np.ones(10)), "negative"),
        (dict(params0="zero-weight"), "positive"),
    ],
)
def test_fit_gradient_rejects_bad_input(change, message):
    rng = np.random.default_rng(11)
    kwargs = dict(X=rng.normal(size=(10, D)), optimizer=ADAM, num_steps=3,
                  params0=random_params(rng, "diag", k=2, d=D))
    if change.get("params0") == "zero-weight":
        change["params0"] = kwargs["params0"].replace(weights=jnp.asarray([1.0, 0.0], DTYPE))
    kwargs.update(change)
    params0, X = kwargs.pop("params0"), kwargs.pop("X")
    with pytest.raises(ValueError, match=message):
        jaxgmm.fit_gradient(params0, X, **kwargs)


def test_fit_gradient_rejects_a_non_optimizer_and_raw_arrays():
    rng = np.random.default_rng(12)
    p = random_params(rng, "diag", k=2, d=D)
    with pytest.raises(TypeError, match="optax"):
        jaxgmm.fit_gradient(p, rng.normal(size=(10, D)), optimizer="adam", num_steps=3)
    with pytest.raises(TypeError, match="GMMParams"):
        jaxgmm.fit_gradient(p.means, rng.normal(size=(10, D)), optimizer=ADAM, num_steps=3)


def test_divergence_raises_instead_of_returning_nan(X):
    with pytest.raises(ValueError, match="diverged"):
        jaxgmm.fit_gradient(_start("diag"), X, optimizer=optax.sgd(1e4), num_steps=5)


def test_compare_rejects_bad_input(X):
    start = _start("diag")
    with pytest.raises(ValueError, match="reserved"):
        jaxgmm.compare(start, X, {"EM": ADAM}, num_steps=3)
    with pytest.raises(ValueError, match="num_steps"):
        jaxgmm.compare(start, X, {"Adam": ADAM}, num_steps=0)
    with pytest.raises(ValueError, match="epsilon"):
        jaxgmm.compare(start, X, {"Adam": ADAM}, num_steps=3, epsilon=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        jaxgmm.compare(start, np.full((10, D), np.nan), {"Adam": ADAM}, num_steps=3)
    with pytest.raises(TypeError, match="mapping"):
        jaxgmm.compare(start, X, [ADAM], num_steps=3)
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda x: jaxgmm.compare(start, x, {"Adam": ADAM}, num_steps=3))(X)


def test_inputs_are_not_modified(X):
    X = np.array(X)  # shapes and settings as in the mini-batch test: no new compilation
    w = np.random.default_rng(13).uniform(0.5, 1.5, size=X.shape[0]).astype(X.dtype)
    X0, w0 = X.copy(), w.copy()
    start = random_params(np.random.default_rng(0), "diag", k=K, d=D)
    jaxgmm.fit_gradient(start, X, optimizer=ADAM, num_steps=200, sample_weight=w, key=jax.random.key(0),
                        batch_size=64)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(w, w0)


def test_importing_jaxgmm_leaves_optax_until_a_gradient_fit():
    """optax costs 0.12 s of a cold start; EM-only users never load it."""
    code = "import sys, jaxgmm; print('optax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
