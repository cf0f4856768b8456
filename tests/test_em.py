"""EM iterates against scikit-learn, monotone ascent, statistics that add up, no recompiles."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

import jaxgmm
from conftest import DTYPE, FORM_CASES, fresh_jit, make_blobs, random_params, rtol_for, use_e_step_form


def sklearn_iterates(X, params, n_iter, reg_covar):
    """(weights, means, covariances, lower bound) after each of scikit-learn's EM iterations."""
    precisions = np.asarray(params.precisions, np.float64)
    gm = GaussianMixture(
        params.n_components, covariance_type=params.covariance_type, max_iter=1, warm_start=True,
        weights_init=np.asarray(params.weights, np.float64), means_init=np.asarray(params.means, np.float64),
        precisions_init=precisions, reg_covar=reg_covar, tol=0.0,
    )
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(n_iter):
            gm.fit(X)
            out.append((gm.weights_.copy(), gm.means_.copy(), gm.covariances_.copy(), gm.lower_bound_))
    return out


@pytest.mark.x64
@pytest.mark.users_compile
@pytest.mark.parametrize("covariance_type, form", FORM_CASES)
def test_every_iterate_equals_sklearn(covariance_type, form, monkeypatch):
    fast = use_e_step_form(monkeypatch, form)
    X, *_ = make_blobs(seed=5, n=400, k=3, d=3, separation=3.0)
    params = random_params(np.random.default_rng(6), covariance_type, k=3, d=3)
    n_iter, reg_covar = 15, 1e-6
    expected = sklearn_iterates(X, params, n_iter, reg_covar)
    Xj = jnp.asarray(X)
    e_step, m_step = fresh_jit(jaxgmm.e_step, static_argnames="fast"), jax.jit(jaxgmm.m_step)
    current = params
    for i, (w, mu, cov, lower_bound) in enumerate(expected):
        stats, ll = e_step(current, Xj, fast=fast)
        current = m_step(stats, reg_covar=reg_covar)
        np.testing.assert_allclose(ll / X.shape[0], lower_bound, rtol=1e-10, err_msg=f"lower bound, iter {i}")
        np.testing.assert_allclose(current.weights, w, rtol=1e-8, err_msg=f"weights, iter {i}")
        np.testing.assert_allclose(current.means, mu, rtol=1e-8, atol=1e-12, err_msg=f"means, iter {i}")
        np.testing.assert_allclose(current.covariances, cov, rtol=1e-8, atol=1e-12, err_msg=f"cov, iter {i}")
    # The compiled loop runs the same iterations.
    em_loop = fresh_jit(jaxgmm.em_loop.__wrapped__, static_argnames=("max_iter", "fast"))
    result = em_loop(params, Xj, max_iter=n_iter, tol=0.0, reg_covar=reg_covar, fast=fast)
    np.testing.assert_allclose(result.history, [e[3] for e in expected], rtol=1e-10)
    np.testing.assert_allclose(result.params.covariances, expected[-1][2], rtol=1e-8, atol=1e-12)
    assert int(result.n_iter) == n_iter and not bool(result.converged)


@pytest.mark.x64
def test_em_loop_converges_like_sklearn(covariance_type):
    X, *_ = make_blobs(seed=7, n=500, k=3, d=2)
    params = random_params(np.random.default_rng(8), covariance_type, k=3, d=2)
    gm = GaussianMixture(
        3, covariance_type=covariance_type, weights_init=np.asarray(params.weights),
        means_init=np.asarray(params.means), precisions_init=np.asarray(params.precisions), tol=1e-3, max_iter=200,
    ).fit(X)
    result = jaxgmm.em_loop(params, jnp.asarray(X), max_iter=200, tol=1e-3)
    assert bool(result.converged) == gm.converged_
    assert int(result.n_iter) == gm.n_iter_
    np.testing.assert_allclose(result.history[int(result.n_iter) - 1], gm.lower_bound_, rtol=1e-10)
    # What em_loop reports is the log-likelihood of the parameters it returns: scikit-learn's score of its own.
    np.testing.assert_allclose(result.log_likelihood, gm.score(X), rtol=1e-10)
    np.testing.assert_allclose(result.params.means, gm.means_, rtol=1e-8)


def test_log_likelihood_never_decreases(covariance_type, dtype):
    X, *_ = make_blobs(seed=9, n=500, k=3, d=3, separation=2.5)
    key = jax.random.key(0)
    Xj = jnp.asarray(X, dtype)
    params = jaxgmm.initialize(key, Xj, 4, covariance_type=covariance_type, method="random")
    result = jaxgmm.em_loop(params, Xj, max_iter=60, tol=0.0, reg_covar=0.0)
    history = np.asarray(result.history, np.float64)
    assert np.all(np.isfinite(history))
    slack = 20 * np.finfo(dtype).eps * np.abs(history).max()  # rounding of the mean itself
    assert np.all(np.diff(history) >= -slack), np.diff(history).min()
    assert history[-1] > history[0]


def test_converged_flag_is_defined_by_the_change(dtype):
    X, *_ = make_blobs(seed=10, n=300)
    Xj = jnp.asarray(X, dtype)
    params = jaxgmm.initialize(jax.random.key(1), Xj, 3)
    result = jaxgmm.em_loop(params, Xj, max_iter=500, tol=1e-4)
    n = int(result.n_iter)
    h = np.asarray(result.history)
    assert bool(result.converged)
    assert abs(h[n - 1] - h[n - 2]) < 1e-4 and np.all(np.abs(np.diff(h[: n - 1])) >= 1e-4)
    assert np.all(np.isnan(h[n:]))
    # Converging exactly at the last allowed iteration still counts as converged.
    at_limit = jaxgmm.em_loop(params, Xj, max_iter=n, tol=1e-4)
    assert bool(at_limit.converged) and int(at_limit.n_iter) == n
    short = jaxgmm.em_loop(params, Xj, max_iter=n - 1, tol=1e-4)
    assert not bool(short.converged) and int(short.n_iter) == n - 1


def test_nan_is_never_converged(dtype):
    X, *_ = make_blobs(seed=11, n=100)
    params = jaxgmm.initialize(jax.random.key(0), jnp.asarray(X, dtype), 2)
    bad = params.replace(means=params.means.at[0, 0].set(jnp.nan))
    result = jaxgmm.em_loop(bad, jnp.asarray(X, dtype), max_iter=20, tol=1e10)
    assert not bool(result.converged)
    assert int(result.n_iter) == 1  # stops at the first non-finite log-likelihood


_jit_e_step = jax.jit(jaxgmm.e_step, static_argnames=("block_size", "fast"))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), block=st.sampled_from([None, 1, 7, 50, 119]), k=st.sampled_from([2, 5]))
def test_statistics_add_up_over_rows(seed, block, k):
    """e_step(A ∪ B) = e_step(A) + e_step(B) for any split of the rows, whatever the block size.

    K = 2 takes the direct form for full and diag, K = 5 the nearest-mean moments.
    """
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.normal(size=(120, 3)) * rng.uniform(0.1, 10), DTYPE)
    w = jnp.asarray(rng.uniform(0, 2, size=120), DTYPE)
    in_a = jnp.asarray(rng.random(120) < rng.random(), DTYPE)  # a random subset of the rows
    rtol = rtol_for(float64=1e-10, float32=1e-4)
    for cov_type in ("full", "tied", "diag", "spherical"):
        params = random_params(rng, cov_type, k=k, d=3)
        whole, ll = _jit_e_step(params, X, w)
        a, ll_a = _jit_e_step(params, X, w * in_a, block_size=block)
        b, ll_b = _jit_e_step(params, X, w * (1 - in_a))
        scale = max(float(jnp.max(jnp.abs(whole.scatters))), 1.0)
        for got, want in zip(jax.tree.leaves(a + b), jax.tree.leaves(whole)):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)
        np.testing.assert_allclose(ll_a + ll_b, ll, rtol=rtol)


# Every block size for the nearest-mean form (row 1, ragged remainder, even split,
# one block); the other forms share the blocking, so two sizes each.
@pytest.mark.parametrize(
    "covariance_type, form, block_size",
    [(t, "nearest-mean", b) for t in jaxgmm.COVARIANCE_TYPES for b in (1, 16, 100, 300)]
    + [(t, f, b) for t, f in FORM_CASES if f != "nearest-mean" for b in (16, 300)],
)
def test_e_step_equals_a_direct_computation(covariance_type, block_size, form, monkeypatch):
    """Statistics from each form of the blocked E-step equal the textbook sums over rows (numpy, float64)."""
    fast = use_e_step_form(monkeypatch, form)
    rng = np.random.default_rng(14)
    params = random_params(rng, covariance_type, k=3, d=4)
    X = rng.normal(size=(300, 4)) * 2
    w = rng.uniform(0, 2, size=300)
    e_step = fresh_jit(jaxgmm.e_step, static_argnames=("block_size", "fast"))
    stats, ll = e_step(params, jnp.asarray(X, DTYPE), jnp.asarray(w, DTYPE), block_size=block_size, fast=fast)
    if fast:  # moments about the shared centre: move them to the means for the comparison
        shift = np.asarray(params.means, np.float64) - np.asarray(stats.centers, np.float64)
        stats = jaxgmm.SuffStats(
            stats.counts, np.asarray(stats.sums) - stats.counts[:, None] * shift,
            _recentre_scatter(stats, shift, covariance_type), params.means, covariance_type,
        )
    log_dens = np.asarray(jaxgmm.weighted_log_prob(params, jnp.asarray(X, DTYPE)), np.float64)
    log_p = np.logaddexp.reduce(log_dens, axis=1)
    r = w[:, None] * np.exp(log_dens - log_p[:, None])
    diff = X[:, None, :] - np.asarray(params.means, np.float64)[None]
    outer = np.einsum("nk,nkd,nke->kde", r, diff, diff)
    expected = {
        "full": outer, "tied": outer.sum(0), "diag": np.einsum("kdd->kd", outer),
        "spherical": np.einsum("kdd->k", outer),
    }[covariance_type]
    rtol = rtol_for(float64=1e-10, float32=1e-4)
    np.testing.assert_allclose(ll, np.sum(w * log_p), rtol=rtol)
    np.testing.assert_allclose(stats.counts, r.sum(0), rtol=rtol)
    np.testing.assert_allclose(stats.sums, np.einsum("nk,nkd->kd", r, diff), rtol=rtol, atol=rtol * 100)
    np.testing.assert_allclose(stats.scatters, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    np.testing.assert_allclose(stats.centers, params.means)


def _recentre_scatter(stats, shift, covariance_type):
    """Σ r (x−μ)(x−μ)ᵀ from moments about c, with shift = μ − c (parallel-axis theorem)."""
    n = np.asarray(stats.counts, np.float64)
    s1 = np.asarray(stats.sums, np.float64)
    s2 = np.asarray(stats.scatters, np.float64)
    if covariance_type == "full":
        return s2 - np.einsum("kd,ke->kde", s1, shift) - np.einsum("kd,ke->kde", shift, s1) + np.einsum(
            "k,kd,ke->kde", n, shift, shift)
    if covariance_type == "tied":
        return s2 - np.einsum("kd,ke->de", s1, shift) - np.einsum("kd,ke->de", shift, s1) + np.einsum(
            "k,kd,ke->de", n, shift, shift)
    if covariance_type == "diag":
        return s2 - 2 * s1 * shift + n[:, None] * shift**2
    return s2 - 2 * np.sum(s1 * shift, 1) + n * np.sum(shift**2, 1)


def test_no_recompile_for_new_tol_reg_covar_or_data(monkeypatch, dtype):
    traces = []
    original = jaxgmm.em.m_step

    def counting_m_step(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(jaxgmm.em, "m_step", counting_m_step)
    rng = np.random.default_rng(12)
    shape = (37, 3)  # shapes no other test uses, so the first call must trace
    params = random_params(rng, "diag", k=2, d=3)
    jaxgmm.em_loop(params, jnp.asarray(rng.normal(size=shape), dtype), max_iter=17, tol=1e-3, reg_covar=1e-6)
    assert len(traces) == 1
    jaxgmm.em_loop(params, jnp.asarray(rng.normal(size=shape), dtype), max_iter=17, tol=1e-5, reg_covar=1e-3)
    new_params = random_params(rng, "diag", k=2, d=3)
    jaxgmm.em_loop(new_params, jnp.asarray(rng.normal(size=shape), dtype), max_iter=17, tol=0.5, reg_covar=0.0)
    assert len(traces) == 1


def test_fit_does_not_recompile(monkeypatch, dtype):
    traces = []
    original = jaxgmm.em.m_step
    monkeypatch.setattr(jaxgmm.em, "m_step", lambda *a, **k: traces.append(1) or original(*a, **k))
    rng = np.random.default_rng(13)
    jaxgmm.fit(jax.random.key(0), rng.normal(size=(41, 2)).astype(dtype), 3, n_init=2, max_iter=23)
    first = len(traces)
    assert first >= 1
    jaxgmm.fit(jax.random.key(1), rng.normal(size=(41, 2)).astype(dtype), 3, n_init=2, max_iter=23, tol=1e-6,
               reg_covar=1e-4)
    assert len(traces) == first


@pytest.mark.users_compile
@pytest.mark.parametrize("separation", [10.0, 100.0, 1000.0])
@pytest.mark.parametrize("covariance_type, default_form", [case for case in FORM_CASES if case[1] != "fast"])
def test_float32_accuracy_of_default_and_fast_moments(covariance_type, separation, default_form, monkeypatch):
    """Default moments stay accurate for well-separated components; fast=True meets its documented bound.

    Reference: one EM step in float64 numpy from the same parameters (unit
    covariances, so the responsibilities are the same for every type).
    """
    rng = np.random.default_rng(15)
    d = 3
    centres = np.array([[-separation, 0, 0], [separation, 0, 0]]) + 1e3
    X = np.concatenate([c + rng.normal(size=(500, d)) for c in centres])
    start_cov = {"full": np.stack([np.eye(d)] * 2), "tied": np.eye(d), "diag": np.ones((2, d)),
                 "spherical": np.ones(2)}[covariance_type]
    params = jaxgmm.GMMParams.from_arrays([0.5, 0.5], centres, start_cov, covariance_type)
    diff = X[:, None, :] - centres[None]
    logp = -0.5 * np.sum(diff**2, -1)
    r = np.exp(logp - np.logaddexp.reduce(logp, axis=1, keepdims=True))
    n = r.sum(0)
    mu = (r.T @ X) / n[:, None]
    cov = np.einsum("nk,nkd,nke->kde", r, X[:, None] - mu[None], X[:, None] - mu[None]) / n[:, None, None]
    cov = {"full": cov, "tied": np.einsum("k,kde->de", n, cov) / n.sum(), "diag": np.einsum("kdd->kd", cov),
           "spherical": np.einsum("kdd->k", cov) / d}[covariance_type]
    p32 = params.replace(weights=params.weights.astype("float32"), means=params.means.astype("float32"),
                         covariances=params.covariances.astype("float32"))
    X32 = jnp.asarray(X, jnp.float32)
    eps = np.finfo(np.float32).eps
    use_e_step_form(monkeypatch, default_form)  # for fast=False; e_step runs eagerly, tracing anew
    errors = {}
    for fast in (False, True):
        new = jaxgmm.m_step(jaxgmm.e_step(p32, X32, fast=fast)[0], reg_covar=0.0)
        errors[fast] = np.abs(np.asarray(new.covariances, np.float64) - cov).max() / np.abs(cov).max()
        np.testing.assert_allclose(np.asarray(new.means, np.float64), mu, atol=10 * eps * np.abs(X).max())
    assert errors[False] < 100 * eps  # independent of the separation
    assert errors[True] < 10 * eps * separation**2  # docs/guide/em.md, Numerics: ≈ eps · ‖μ_k − c‖²_{Σ⁻¹}


def test_default_block_size_bounds_the_block_and_grows_on_accelerators(monkeypatch):
    from jaxgmm.kernels import default_block_size

    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    cpu = default_block_size(10**7, 16, 16)
    assert cpu * 16 * 16 <= 1 << 21 and default_block_size(100, 16, 16) == 100  # 8 MB of float32
    # The packed form counts its packed products, gathered shifts and by-group values per row.
    packed = default_block_size(10**7, 8, 64, packed_products=True)
    assert packed * (2 * 8 * 64 + 64 * 65 // 2) <= 1 << 20 < (packed + 1) * (2 * 8 * 64 + 64 * 65 // 2)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    gpu = default_block_size(10**7, 16, 16)
    assert gpu > cpu and gpu * 16 * 16 <= 1 << 25


def test_by_group_sums_agree_between_cpu_scatter_and_accelerator_product(monkeypatch, covariance_type):
    """The moments' by-group sums are a scatter-add on CPU and a one-hot product elsewhere; both give the same statistics."""
    use_e_step_form(monkeypatch, "nearest-mean")
    rng = np.random.default_rng(16)
    params = random_params(rng, covariance_type, k=3, d=4)
    X = jnp.asarray(rng.normal(size=(200, 4)) * 2, DTYPE)
    w = jnp.asarray(rng.uniform(0, 2, size=200), DTYPE)
    on_cpu = jaxgmm.e_step(params, X, w, block_size=64)  # eager: each call traces anew
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    on_accelerator = jaxgmm.e_step(params, X, w, block_size=64)
    rtol = rtol_for(float64=1e-12, float32=1e-5)
    for got, want in zip(jax.tree.leaves(on_accelerator), jax.tree.leaves(on_cpu)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(want))))


def test_by_group_sums_keep_float32_accuracy_over_long_blocks():
    """Scatter-add chains are short: a 65,536-row sum by group stays near float32's pairwise accuracy."""
    from jaxgmm.kernels import _sums_by_group

    rng = np.random.default_rng(17)
    values = rng.random((65536, 4, 3))
    groups = rng.integers(0, 4, 65536)
    expected = np.zeros((4, 4, 3))
    np.add.at(expected, groups, values)
    got = np.asarray(_sums_by_group(jnp.asarray(values, DTYPE), jnp.asarray(groups), 4), np.float64)
    assert np.abs(got - expected).max() / np.abs(expected).max() < rtol_for(float64=1e-13, float32=1e-6)
