"""Shared fixtures: the suite runs twice, float32 then float64 (JAX_ENABLE_X64=1) in its own process."""

import jax
import numpy as np
import pytest

from jaxgmm import COVARIANCE_TYPES

X64 = bool(jax.config.jax_enable_x64)
DTYPE = np.float64 if X64 else np.float32


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="float64-only check; runs in the JAX_ENABLE_X64=1 pass")
    for item in items:
        if "x64" in item.keywords and not X64:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"jaxgmm tests: jax {jax.__version__}, float dtype {np.dtype(DTYPE).name}"


@pytest.fixture(params=COVARIANCE_TYPES)
def covariance_type(request):
    return request.param


@pytest.fixture
def dtype():
    return DTYPE


# The default E-step's exact forms (jaxgmm.kernels): statistics straight from x − μ_k
# (full and diag with few components, and spherical); nearest-mean moments with
# by-group terms ("nearest-mean"); for full covariances with many features, the
# same moments with the Mahalanobis terms from their packed products ("packed").
# "fast" is the opt-in shared-centre form (fast=True).
E_STEP_FORMS = ("direct", "nearest-mean", "packed", "fast")
# (covariance type, form) pairs that run different code: "packed" exists for full only.
FORM_CASES = [(t, f) for t in COVARIANCE_TYPES for f in E_STEP_FORMS if f != "packed" or t == "full"]


def use_e_step_form(monkeypatch, form):
    """Make the E-step take ``form`` whatever the numbers of components and features; returns the ``fast`` flag.

    The form is chosen while tracing, so compile with :func:`fresh_jit` after
    this: an earlier trace of the same function and shapes holds the other form.
    """
    import jaxgmm.kernels

    if form != "fast":  # fast=True ignores the limits
        monkeypatch.setattr(jaxgmm.kernels, "_DIRECT_MAX_COMPONENTS", 10**6 if form == "direct" else 0)
        monkeypatch.setattr(jaxgmm.kernels, "_PACKED_MIN_FEATURES", 0 if form == "packed" else 10**6)
    return form == "fast"


def fresh_jit(fn, **jit_kwargs):
    """``jax.jit`` of a new wrapper of ``fn``: JAX caches traces by function, so
    even a new ``jax.jit(fn)`` would reuse an earlier trace of ``fn``."""
    return jax.jit(lambda *args, **kwargs: fn(*args, **kwargs), **jit_kwargs)


def rtol_for(dtype=DTYPE, float64=1e-10, float32=1e-4):
    """A relative tolerance that depends on the precision the suite runs in."""
    return float64 if np.dtype(dtype) == np.float64 else float32


def make_blobs(seed=0, n=600, k=3, d=2, separation=6.0, scale=1.0):
    """Data from a known, well-separated mixture, drawn with numpy (independent of jaxgmm)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, d)) * separation
    weights = rng.dirichlet(np.full(k, 5.0))
    labels = rng.choice(k, size=n, p=weights)
    A = rng.normal(size=(k, d, d)) * 0.4 + np.eye(d) * scale
    X = means[labels] + np.einsum("nde,ne->nd", A[labels], rng.normal(size=(n, d)))
    return X, labels, weights, means, A @ np.swapaxes(A, 1, 2)


def random_covariances(rng, covariance_type, k, d):
    """Well-conditioned random covariances of the given type (numpy float64)."""
    if covariance_type == "full":
        A = rng.normal(size=(k, d, d))
        return A @ np.swapaxes(A, 1, 2) / d + 0.5 * np.eye(d)
    if covariance_type == "tied":
        A = rng.normal(size=(d, d))
        return A @ A.T / d + 0.5 * np.eye(d)
    if covariance_type == "diag":
        return rng.uniform(0.5, 2.0, size=(k, d))
    return rng.uniform(0.5, 2.0, size=k)


def dense_covariances(covariances, covariance_type, k, d):
    """(K, D, D) matrices from any covariance type (numpy)."""
    c = np.asarray(covariances, dtype=np.float64)
    if covariance_type == "full":
        return c
    if covariance_type == "tied":
        return np.broadcast_to(c, (k, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(v) for v in c])
    return c[:, None, None] * np.eye(d)


def random_params(rng, covariance_type, k=3, d=2, dtype=DTYPE):
    from jaxgmm import GMMParams

    weights = rng.dirichlet(np.full(k, 3.0))
    means = rng.normal(size=(k, d)) * 3
    cov = random_covariances(rng, covariance_type, k, d)
    return GMMParams.from_arrays(weights, means, cov, covariance_type).replace(
        weights=np.asarray(weights, dtype), means=np.asarray(means, dtype), covariances=np.asarray(cov, dtype)
    )


def scipy_log_density(params, X) -> np.ndarray:
    """``log p(x_n)`` of a mixture, ``(N,)``, in float64 from scipy's Gaussian density (independent of jaxgmm).

    ``params`` is a :class:`jaxgmm.GMMParams` of any covariance model (no batch axes).
    """
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    S = np.asarray(params.covariance_matrices, np.float64)
    w, mu = np.asarray(params.weights, np.float64), np.asarray(params.means, np.float64)
    X = np.asarray(X, np.float64)
    logs = np.stack([np.log(w[k]) + multivariate_normal(mu[k], S[k]).logpdf(X).reshape(len(X))
                     for k in range(len(w)) if w[k] > 0], axis=1)
    return logsumexp(logs, axis=1)


def scipy_mean_log_likelihood(params, X, sample_weight=None) -> float:
    """The (weighted) mean of :func:`scipy_log_density`: what a fit reports as ``log_likelihood``."""
    log_p = scipy_log_density(params, X)
    w = np.ones(len(log_p)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    return float(np.sum(np.where(w > 0, w * log_p, 0.0)) / np.sum(w))


def assert_reports_own_log_likelihood(result, X, sample_weight=None, rtol=None):
    """Every restart of a ``FitResult`` reports the log-likelihood of the parameters it returns (scipy's
    density), and the best restart is the one with the highest."""
    import jax

    rtol = rtol_for(float64=1e-10, float32=2e-5) if rtol is None else rtol
    n_init = np.shape(result.restarts.log_likelihood)[0]
    for r in range(n_init):
        params = jax.tree.map(lambda leaf: leaf[r], result.restarts.params)
        expected = scipy_mean_log_likelihood(params, X, sample_weight)
        np.testing.assert_allclose(result.restarts.log_likelihood[r], expected, rtol=rtol, err_msg=f"restart {r}")
    assert int(result.best_index) == int(np.nanargmax(np.asarray(result.restarts.log_likelihood)))
    np.testing.assert_array_equal(result.log_likelihood, result.restarts.log_likelihood[int(result.best_index)])
