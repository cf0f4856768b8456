"""Stepwise (online) EM: the update against a numpy reference, re-centring, and convergence to batch EM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import jaxgmm
from conftest import DTYPE, X64, dense_covariances, make_blobs, random_params, rtol_for

# Checks that do not depend on the float precision run in the float32 pass only (suite runtime).
once = pytest.mark.skipif(X64, reason="precision-independent check; runs in the float32 pass")
from jaxgmm.online import recenter


def reference_stepwise(batches, params, kappa, t0, reg_covar):
    """Cappé & Moulines' stepwise EM with raw moments, densities from scipy (float64)."""
    cov_type = params.covariance_type
    k, d = params.means.shape
    pi, mu = np.asarray(params.weights, float), np.asarray(params.means, float)
    sigma = dense_covariances(params.covariances, cov_type, k, d)
    # Running raw moments, started at those of the initial parameters.
    n, m1 = pi.copy(), pi[:, None] * mu
    m2 = pi[:, None, None] * (sigma + np.einsum("kd,ke->kde", mu, mu))
    out = []
    for t, (X, w) in enumerate(batches, start=1):
        dens = np.stack([pi[j] * multivariate_normal(mu[j], sigma[j]).pdf(X) for j in range(k)], axis=1)
        r = dens / dens.sum(axis=1, keepdims=True) * (w / w.sum())[:, None]
        gamma = (t + t0) ** -kappa
        n = (1 - gamma) * n + gamma * r.sum(0)
        m1 = (1 - gamma) * m1 + gamma * r.T @ X
        m2 = (1 - gamma) * m2 + gamma * np.einsum("nk,nd,ne->kde", r, X, X)
        pi, mu = n / n.sum(), m1 / n[:, None]
        full = m2 / n[:, None, None] - np.einsum("kd,ke->kde", mu, mu)
        if cov_type == "tied":
            full = np.broadcast_to((m2 - n[:, None, None] * np.einsum("kd,ke->kde", mu, mu)).sum(0) / n.sum(), full.shape)
        elif cov_type == "diag":
            full = np.stack([np.diag(np.diag(c)) for c in full])
        elif cov_type == "spherical":
            full = np.stack([np.eye(d) * np.trace(c) / d for c in full])
        sigma = full + reg_covar * np.eye(d)
        out.append((pi, mu, sigma))
    return out


@pytest.mark.x64
def test_online_update_equals_stepwise_em_reference(covariance_type):
    rng = np.random.default_rng(30)
    X, *_ = make_blobs(seed=31, n=900, k=3, d=2, separation=3.0)
    w = rng.uniform(0.5, 2.0, size=len(X))
    params = random_params(rng, covariance_type, k=3, d=2)
    edges = [0, 100, 350, 370, 900]  # mini-batches of any size
    batches = [(X[a:b], w[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    kappa, t0, reg_covar = 0.7, 2.0, 1e-4  # t0 > 0: the initial statistics matter
    expected = reference_stepwise(batches, params, kappa, t0, reg_covar)
    state = jaxgmm.online_init(params)
    for (xb, wb), (pi, mu, sigma) in zip(batches, expected):
        state, _ = jaxgmm.online_update(state, jnp.asarray(xb), jnp.asarray(wb), kappa=kappa, t0=t0, reg_covar=reg_covar)
        p = state.params
        np.testing.assert_allclose(p.weights, pi, rtol=1e-9)
        np.testing.assert_allclose(p.means, mu, rtol=1e-9, atol=1e-12)
        dense = dense_covariances(p.covariances, covariance_type, 3, 2)
        np.testing.assert_allclose(dense, sigma, rtol=1e-8, atol=1e-12)
    assert int(state.step) == len(batches)


def test_recentred_statistics_equal_statistics_taken_about_the_new_centres(covariance_type):
    rng = np.random.default_rng(32)
    X = jnp.asarray(rng.normal(size=(200, 3)) * 3 + 10, DTYPE)
    resp = jnp.asarray(rng.dirichlet(np.ones(4), size=200), DTYPE)
    old, new = (jnp.asarray(rng.normal(size=(4, 3)) + 10, DTYPE) for _ in range(2))
    moved = recenter(jaxgmm.stats_from_responsibilities(X, resp, old, covariance_type), new)
    direct = jaxgmm.stats_from_responsibilities(X, resp, new, covariance_type)
    for name in ("counts", "sums", "scatters", "centers"):
        a, b = getattr(moved, name), getattr(direct, name)
        np.testing.assert_allclose(a, b, rtol=rtol_for(DTYPE, 1e-11, 1e-4), atol=rtol_for(DTYPE, 1e-9, 1e-2))


@once
def test_online_em_approaches_batch_em_on_held_out_data():
    X, *_ = make_blobs(seed=33, n=62000, k=3, d=2, separation=4.0)
    X = X.astype(DTYPE)
    held_out = X[50000:]
    gaps = []
    for n in (2000, 50000):
        batch = jaxgmm.fit(jax.random.key(0), X[:n], 3, n_init=2, tol=1e-6)
        online = jaxgmm.fit_online(jax.random.key(0), X[:n], 3, batch_size=250, kappa=0.6)
        assert online.n_samples == n and online.history.shape == (n // 250,)
        gaps.append(float(jaxgmm.score(batch.params, held_out) - jaxgmm.score(online.params, held_out)))
    assert abs(gaps[1]) < 1e-2, gaps
    assert abs(gaps[1]) < abs(gaps[0]), gaps


@once
def test_fit_online_reads_a_one_shot_stream_and_validates():
    X, _, _, true_means, _ = make_blobs(seed=34, n=1000, k=2, d=2, separation=8.0)
    steps = []
    stream = (X[i : i + 64] for i in range(0, 1000, 64))  # a generator: read once
    result = jaxgmm.fit_online(jax.random.key(1), stream, 2, batch_size=100, callback=lambda t, ll: steps.append(t))
    assert result.n_samples == 1000 and steps == list(range(1, 11))
    assert np.all(np.isfinite(result.history))
    # Two far-apart clusters: one pass finds their means (to sampling error).
    found = np.sort(np.asarray(result.params.means)[:, 0])
    np.testing.assert_allclose(found, np.sort(true_means[:, 0]), atol=0.3)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="kappa must be in"):
        jaxgmm.fit_online(key, X, 2, kappa=0.5)
    with pytest.raises(ValueError, match="increase batch_size"):
        jaxgmm.fit_online(key, X, 5, batch_size=3)
    with pytest.raises(ValueError, match="block 0 of the source contains NaN"):
        jaxgmm.fit_online(key, np.full((10, 2), np.nan), 2)
    with pytest.raises(ValueError, match="t0"):
        jaxgmm.fit_online(key, X, 2, t0=-1.0)
