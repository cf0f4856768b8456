"""The params pytree and the log-densities, against scipy and scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

import jaxgmm
from jaxgmm.params import covariance_from_precision_cholesky
from conftest import dense_covariances, random_params, rtol_for


def scipy_log_prob(params, X):
    k, d = np.asarray(params.means).shape
    covs = dense_covariances(params.covariances, params.covariance_type, k, d)
    comp = np.stack(
        [multivariate_normal(np.asarray(params.means[j], np.float64), covs[j]).logpdf(X) for j in range(k)], axis=1
    )
    return comp + np.log(np.asarray(params.weights, np.float64))


def test_log_densities_match_scipy(covariance_type, dtype):
    rng = np.random.default_rng(1)
    params = random_params(rng, covariance_type, k=3, d=4)
    X = rng.normal(size=(50, 4)) * 3
    expected = scipy_log_prob(params, X)
    rtol = rtol_for(dtype, 1e-12, 1e-5)
    got = jaxgmm.weighted_log_prob(params, jnp.asarray(X, dtype))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)
    ref = np.logaddexp.reduce(expected, axis=1)
    np.testing.assert_allclose(jaxgmm.log_prob(params, jnp.asarray(X, dtype)), ref, rtol=rtol)
    np.testing.assert_allclose(jaxgmm.score_samples(params, jnp.asarray(X, dtype)), ref, rtol=rtol)
    np.testing.assert_allclose(jaxgmm.score(params, jnp.asarray(X, dtype)), ref.mean(), rtol=rtol)
    proba = jaxgmm.predict_proba(params, jnp.asarray(X, dtype))
    np.testing.assert_allclose(proba, np.exp(expected - ref[:, None]), rtol=rtol_for(dtype, 1e-10, 1e-4), atol=1e-6)
    np.testing.assert_array_equal(jaxgmm.predict(params, jnp.asarray(X, dtype)), expected.argmax(1))


def test_precisions_cholesky_match_sklearn(covariance_type):
    rng = np.random.default_rng(2)
    params = random_params(rng, covariance_type, k=3, d=3)
    expected = _compute_precision_cholesky(np.asarray(params.covariances, np.float64), covariance_type)
    np.testing.assert_allclose(params.precisions_cholesky, expected, rtol=rtol_for(float64=1e-12, float32=1e-5))
    back = covariance_from_precision_cholesky(params.precisions_cholesky, covariance_type)
    np.testing.assert_allclose(back, params.covariances, rtol=rtol_for(float64=1e-12, float32=1e-4))
    if covariance_type in ("full", "tied"):  # upper triangular, as scikit-learn stores it
        assert np.allclose(np.tril(np.asarray(params.precisions_cholesky), -1), 0)


def test_params_is_a_pytree(covariance_type):
    rng = np.random.default_rng(3)
    params = random_params(rng, covariance_type)
    leaves, treedef = jax.tree.flatten(params)
    assert len(leaves) == 3  # the covariance type is static metadata, not a leaf
    assert jax.tree.unflatten(treedef, leaves).covariance_type == covariance_type
    doubled = jax.tree.map(lambda a: 2 * a, params)
    np.testing.assert_allclose(doubled.means, 2 * np.asarray(params.means))
    assert jax.jit(lambda p: p)(params).covariance_type == covariance_type
    stacked = jax.tree.map(lambda *a: jnp.stack(a), params, params)
    X = jnp.asarray(rng.normal(size=(7, 2)), params.dtype)
    batched = jax.vmap(jaxgmm.log_prob, in_axes=(0, None))(stacked, X)
    np.testing.assert_allclose(batched[1], jaxgmm.log_prob(params, X), rtol=1e-6)
    grads = jax.grad(lambda p: jnp.sum(jaxgmm.log_prob(p, X)))(params)
    assert isinstance(grads, jaxgmm.GMMParams) and grads.covariance_type == covariance_type
    # d/dμ_k Σ_n log p(x_n) = Σ_n r_nk Σ_k⁻¹ (x_n − μ_k): check against a closed form.
    resp = np.asarray(jaxgmm.predict_proba(params, X), np.float64)
    precisions = np.asarray(dense_covariances(params.precisions, covariance_type, 3, 2))
    diff = np.asarray(X)[:, None, :] - np.asarray(params.means)[None]
    expected = np.einsum("nk,kde,nke->kd", resp, precisions, diff)
    np.testing.assert_allclose(grads.means, expected, rtol=rtol_for(float64=1e-10, float32=1e-3), atol=1e-5)
    with pytest.raises(dataclasses_error()):
        params.weights = None


def dataclasses_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_far_from_origin_log_density_is_accurate(dtype):
    """x − μ is formed before squaring: no cancellation for data near 1e6."""
    rng = np.random.default_rng(4)
    offset = 1e6
    params = jaxgmm.GMMParams.from_arrays([1.0], [[offset, offset]], [[[2.0, 0.3], [0.3, 1.0]]], "full")
    X = offset + rng.normal(size=(20, 2))
    expected = multivariate_normal([offset, offset], [[2.0, 0.3], [0.3, 1.0]]).logpdf(X)
    got = jaxgmm.log_prob(params, jnp.asarray(X, dtype))
    # float32 cannot even represent 1e6 + x to better than 0.06; allow for that input rounding only.
    np.testing.assert_allclose(got, expected, rtol=rtol_for(dtype, 1e-9, 5e-2))


def test_n_parameters_matches_sklearn(covariance_type):
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(4, covariance_type=covariance_type)
    gm.means_ = np.zeros((4, 3))
    assert jaxgmm.n_parameters(covariance_type, 4, 3) == gm._n_parameters()
