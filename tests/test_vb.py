"""Variational Bayes: every iterate against scikit-learn's BayesianGaussianMixture, and the theory by autodiff.

References outside the code under test: scikit-learn's own iterates (its private E-step, M-step and
bound, driven from the same starting responsibilities); an evidence lower bound written out here from
Bishop (2006, eqs. 10.71-10.77) and Blei & Jordan (2006) — its gradients at a fixed point, and a Monte
Carlo estimate of ``E_q[log p − log q]`` with scipy's densities; repeated rows for integer weights.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import digamma, gammaln
from scipy import special as scipy_special
from scipy import stats as scipy_stats

import jaxgmm
from conftest import DTYPE, rtol_for
from jaxgmm.vb import (
    WEIGHT_PRIORS, bayesian_mixture_prior, effective_n_components, elbo, fit_vb, fit_vb_many, lower_bound,
    vb_e_step, vb_initialize, vb_loop, vb_m_step, vb_posterior_from_responsibilities,
)

COVARIANCE_TYPES = jaxgmm.COVARIANCE_TYPES
FAITHFUL = np.asarray(jaxgmm.load_faithful(), np.float64)
K = 6


def _start_resp(n, k=K, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=n)


def _sklearn_runner(X, resp, covariance_type, weight_prior, reg_covar=1e-6):
    """scikit-learn's BayesianGaussianMixture from responsibilities ``resp``: a generator of its iterates."""
    from sklearn.mixture import BayesianGaussianMixture

    sk = BayesianGaussianMixture(n_components=resp.shape[1], covariance_type=covariance_type,
                                 weight_concentration_prior_type=weight_prior, reg_covar=reg_covar)
    sk._check_parameters(X)
    sk._initialize(X, resp)
    while True:
        log_prob_norm, log_resp = sk._e_step(X)
        sk._m_step(X, log_resp)
        bound = float(np.squeeze(sk._compute_lower_bound(log_resp, log_prob_norm)))
        sk._set_parameters(sk._get_parameters())  # weights_ and precisions_
        yield sk, bound


@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_every_iterate_equals_scikit_learn(covariance_type, weight_prior):
    """From the same responsibilities, 25 iterations of vb_loop (one at a time): weights, means,
    covariances, the posterior's other parameters and the lower bound equal scikit-learn's to 1e-8 in
    float64; in float32 to 3e-4 (parameters, relative to the largest) and 2e-5 (bound)."""
    resp = _start_resp(len(FAITHFUL))
    X = jnp.asarray(FAITHFUL, DTYPE)
    prior = bayesian_mixture_prior(X, K, covariance_type)
    post = vb_posterior_from_responsibilities(X, jnp.asarray(resp, DTYPE), prior, covariance_type=covariance_type,
                                              weight_prior=weight_prior)
    x64 = DTYPE == np.float64
    rtol = 1e-8 if x64 else 3e-4
    for _, (sk, bound) in zip(range(25), _sklearn_runner(FAITHFUL, resp, covariance_type, weight_prior)):
        result = vb_loop(post, X, prior, max_iter=1, tol=0.0)
        post = result.posterior
        np.testing.assert_allclose(float(result.lower_bound), bound, rtol=1e-8 if x64 else 2e-5)
        concentration = np.stack(sk.weight_concentration_) if weight_prior == "dirichlet_process" else (
            sk.weight_concentration_)
        for ours, theirs in [(post.weights, sk.weights_), (post.means, sk.means_),
                             (post.covariances, sk.covariances_), (post.mean_precision, sk.mean_precision_),
                             (post.weight_concentration, concentration),
                             (post.degrees_of_freedom, np.broadcast_to(sk.degrees_of_freedom_, (K,))),
                             (post.precisions_cholesky, sk.precisions_cholesky_)]:
            theirs = np.asarray(theirs)
            np.testing.assert_allclose(np.asarray(ours, np.float64), theirs, rtol=rtol,
                                       atol=0 if x64 else rtol * np.abs(theirs).max())


@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_lower_bound_never_decreases(covariance_type, weight_prior):
    result = fit_vb(jax.random.key(1), FAITHFUL.astype(DTYPE), K, covariance_type=covariance_type,
                    weight_prior=weight_prior, max_iter=200, tol=0.0, reg_covar=0.0)
    history = np.asarray(result.history, np.float64)
    assert np.all(np.isfinite(history))
    assert np.all(np.diff(history) >= -rtol_for(float64=1e-12, float32=3e-6) * np.abs(history[1:]))
    assert float(result.lower_bound) == history[-1]


# ----------------------------------------------------------------------------- an ELBO written out


def _expected_log_det(nu, W_chol, d):
    """E[log|Λ|] for Λ ~ Wishart(W, ν), W = L Lᵀ."""
    return (jnp.sum(digamma(0.5 * (nu[:, None] - jnp.arange(d))), axis=1) + d * math.log(2.0)
            + 2 * jnp.sum(jnp.log(jnp.diagonal(W_chol, axis1=1, axis2=2)), axis=1))


def _log_wishart_norm(W_chol, nu, d):
    """log B(W, ν) of the Wishart density (Bishop B.79)."""
    log_det_w = 2 * jnp.sum(jnp.log(jnp.diagonal(W_chol, axis1=-2, axis2=-1)), axis=-1)
    return (-0.5 * nu * log_det_w - 0.5 * nu * d * math.log(2.0) - 0.25 * d * (d - 1) * math.log(math.pi)
            - jnp.sum(gammaln(0.5 * (nu[..., None] - jnp.arange(d))), axis=-1))


def _expected_log_weights(weights, weight_prior):
    if weight_prior == "dirichlet_distribution":
        return digamma(weights) - digamma(jnp.sum(weights)), None
    a, b = weights
    e_log_v, e_log_rest = digamma(a) - digamma(a + b), digamma(b) - digamma(a + b)
    return e_log_v + jnp.concatenate([jnp.zeros(1), jnp.cumsum(e_log_rest)[:-1]]), (e_log_v, e_log_rest)


def independent_elbo(logits, weights, m, beta, W_chol, nu, X, w, prior, weight_prior):
    """The evidence lower bound of the full-covariance model as a function of every variational parameter:
    E_q[log p(X, Z | π, μ, Λ)] + E_q[log p(π) + log p(μ, Λ)] − E_q[log q(Z) + log q(π) + log q(μ, Λ)]."""
    n, d = X.shape
    k = m.shape[0]
    gamma, beta0, m0, nu0, scale0 = prior
    r = jax.nn.softmax(logits, axis=1) * w[:, None]
    log_r = jax.nn.log_softmax(logits, axis=1)
    W = W_chol @ jnp.swapaxes(W_chol, 1, 2)
    e_log_det = _expected_log_det(nu, W_chol, d)
    e_log_pi, sticks = _expected_log_weights(weights, weight_prior)
    diff = X[:, None, :] - m[None]
    e_maha = d / beta + nu * jnp.einsum("nkd,kde,nke->nk", diff, W, diff)  # E[(x − μ)ᵀΛ(x − μ)]
    e_log_lik = jnp.sum(r * (0.5 * e_log_det - 0.5 * d * math.log(2 * math.pi) - 0.5 * e_maha + e_log_pi))
    W0_chol = jnp.linalg.cholesky(jnp.linalg.inv(scale0))
    prior_offset = m - m0
    e_log_p_theta = jnp.sum(
        0.5 * (d * jnp.log(beta0 / (2 * math.pi)) + e_log_det - d * beta0 / beta
               - beta0 * nu * jnp.einsum("kd,kde,ke->k", prior_offset, W, prior_offset))
        + _log_wishart_norm(W0_chol, nu0, d) + 0.5 * (nu0 - d - 1) * e_log_det
        - 0.5 * nu * jnp.trace(scale0 @ W, axis1=1, axis2=2))
    entropy_theta = jnp.sum(-0.5 * e_log_det - 0.5 * d * jnp.log(beta / (2 * math.pi)) + 0.5 * d
                            - _log_wishart_norm(W_chol, nu, d) - 0.5 * (nu - d - 1) * e_log_det + 0.5 * nu * d)
    if weight_prior == "dirichlet_distribution":
        e_log_p_pi = gammaln(k * gamma) - k * gammaln(gamma) + (gamma - 1) * jnp.sum(e_log_pi)
        e_log_q_pi = gammaln(jnp.sum(weights)) - jnp.sum(gammaln(weights)) + jnp.sum((weights - 1) * e_log_pi)
    else:
        (a, b), (e_log_v, e_log_rest) = weights, sticks
        e_log_p_pi = jnp.sum(-(gammaln(1.0) + gammaln(gamma) - gammaln(1 + gamma)) + (gamma - 1) * e_log_rest)
        e_log_q_pi = jnp.sum(-(gammaln(a) + gammaln(b) - gammaln(a + b)) + (a - 1) * e_log_v + (b - 1) * e_log_rest)
    return e_log_lik + e_log_p_theta + e_log_p_pi - e_log_q_pi + entropy_theta - jnp.sum(r * log_r)


def _variational_args(post, log_resp):
    W_chol = jnp.linalg.cholesky(jnp.linalg.inv(post.covariances * post.degrees_of_freedom[:, None, None]))
    return (log_resp, post.weight_concentration, post.means, post.mean_precision, W_chol, post.degrees_of_freedom)


def _prior_args(prior):
    return (prior.weight_concentration, prior.shrinkage, prior.mean, prior.dof, prior.scale)


def _log_resp(post, X):
    """The variational E-step's log-responsibilities (the fixed point's), from the E-step's own terms."""
    return jax.nn.log_softmax(jaxgmm.weighted_log_prob(post.variational_params, X), axis=1)


@pytest.mark.x64
@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
def test_elbo_equals_the_written_out_bound_at_every_iterate(weight_prior):
    """elbo (scikit-learn's bound plus the prior's constants) equals the bound written out above, for the
    responsibilities of each E-step and the posterior its M-step made, with sample weights."""
    X = jnp.asarray(FAITHFUL)
    w = jnp.asarray(np.random.default_rng(2).integers(1, 4, len(FAITHFUL)), X.dtype)
    prior = bayesian_mixture_prior(X, K, sample_weight=w)
    post = vb_posterior_from_responsibilities(X, jnp.asarray(_start_resp(len(X))), prior, weight_prior=weight_prior,
                                              reg_covar=0.0, sample_weight=w)
    for _ in range(5):
        log_resp = _log_resp(post, X)
        stats, entropy = vb_e_step(post, X, w)
        post = vb_m_step(stats, prior, reg_covar=0.0, weight_prior=weight_prior)
        written = independent_elbo(*_variational_args(post, log_resp), X, w, _prior_args(prior), weight_prior)
        np.testing.assert_allclose(float(elbo(post, entropy, prior, jnp.sum(w))), float(written), rtol=1e-10)


def _fixed_point(weight_prior):
    X = jnp.asarray(FAITHFUL)
    prior = bayesian_mixture_prior(X, 4)
    start = vb_initialize(jax.random.key(0), X, 4, prior, weight_prior=weight_prior, reg_covar=0.0)
    result = vb_loop(start, X, prior, max_iter=1000, tol=0.0, reg_covar=0.0)
    assert result.history[-1] == result.history[-2]  # converged to rounding (the bound stops changing at all)
    return X, prior, result.posterior


@pytest.mark.x64
@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
def test_the_fixed_point_is_stationary_in_every_block(weight_prior):
    """At a converged fixed point, the written-out bound's gradient with respect to the responsibilities
    (through their logits, i.e. on the simplex), the weights' Dirichlet/Beta parameters and the
    Normal-Wishart parameters (m, β, the Cholesky factor of W, ν) is ≈ 0."""
    X, prior, post = _fixed_point(weight_prior)
    args = _variational_args(post, _log_resp(post, X))
    grads = jax.grad(independent_elbo, argnums=tuple(range(6)))(*args, X, jnp.ones(len(X)), _prior_args(prior),
                                                                   weight_prior)
    names = ("responsibilities", "weights", "means", "mean precisions", "Wishart scales", "degrees of freedom")
    for name, grad, value in zip(names, grads, args):
        relative = grad if name == "responsibilities" else grad * value  # the bound's change per relative step
        assert float(jnp.abs(relative).max()) < 1e-9, name
    # and it is not ≈ 0 a few iterations earlier
    early = vb_loop(vb_initialize(jax.random.key(0), X, 4, prior, weight_prior=weight_prior, reg_covar=0.0), X,
                    prior, max_iter=3, tol=0.0, reg_covar=0.0).posterior
    grads = jax.grad(independent_elbo, argnums=2)(*_variational_args(early, _log_resp(early, X)), X,
                                                  jnp.ones(len(X)), _prior_args(prior), weight_prior)
    assert float(jnp.abs(grads).max()) > 1e-3


@pytest.mark.x64
@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
def test_elbo_equals_a_monte_carlo_estimate(weight_prior):
    """E_q[log p(X, Z, θ) − log q(Z, θ)] by sampling θ ~ q (Z summed exactly), scipy's densities throughout.

    (At the M-step's posterior, q(θ) ∝ exp E_q(Z)[log p(X, Z, θ)], so the integrand is the same for every
    θ up to rounding: the estimate checks every normalising constant of the bound, not just its mean.)"""
    X, prior, post = _fixed_point(weight_prior)
    stats, entropy = vb_e_step(post, X)
    value = float(elbo(post, entropy, prior, len(X)))
    log_resp = np.asarray(_log_resp(post, X))
    resp = np.exp(log_resp)
    rng = np.random.default_rng(9)
    k, d = post.means.shape
    m, beta, nu = (np.asarray(a) for a in (post.means, post.mean_precision, post.degrees_of_freedom))
    W = np.linalg.inv(np.asarray(post.covariances) * nu[:, None, None])
    scale0, m0 = np.asarray(prior.scale), np.asarray(prior.mean)
    gamma, beta0, nu0 = float(prior.weight_concentration), float(prior.shrinkage), float(prior.dof)
    concentration = np.asarray(post.weight_concentration)
    samples = []
    for _ in range(200):
        total = -np.sum(resp * log_resp)
        if weight_prior == "dirichlet_distribution":
            pi = rng.dirichlet(concentration)
            total += scipy_stats.dirichlet([gamma] * k).logpdf(pi) - scipy_stats.dirichlet(concentration).logpdf(pi)
        else:
            v = rng.beta(*concentration)
            pi = v * np.concatenate([[1.0], np.cumprod(1 - v)[:-1]])
            total += np.sum(scipy_stats.beta(1.0, gamma).logpdf(v) - scipy_stats.beta(*concentration).logpdf(v))
        log_components = np.log(pi)[None].repeat(len(X), 0)
        for j in range(k):
            precision = scipy_stats.wishart(df=nu[j], scale=W[j]).rvs(random_state=rng)
            mu = rng.multivariate_normal(m[j], np.linalg.inv(beta[j] * precision))
            total += (scipy_stats.wishart(df=nu0, scale=np.linalg.inv(scale0)).logpdf(precision)
                      + scipy_stats.multivariate_normal(m0, np.linalg.inv(beta0 * precision)).logpdf(mu)
                      - scipy_stats.wishart(df=nu[j], scale=W[j]).logpdf(precision)
                      - scipy_stats.multivariate_normal(m[j], np.linalg.inv(beta[j] * precision)).logpdf(mu))
            log_components[:, j] += scipy_stats.multivariate_normal(mu, np.linalg.inv(precision)).logpdf(X)
        samples.append(total + np.sum(resp * log_components))
    samples = np.asarray(samples)
    standard_error = samples.std(ddof=1) / math.sqrt(len(samples))
    assert abs(samples.mean() - value) < 4 * standard_error + 1e-12 * abs(value), (samples.mean(), value)


@pytest.mark.x64
def test_log_beta_from_gammaln_sums_is_exact_where_betaln_is_not():
    """The issue's measurement: jax's betaln loses ~1e-6 in float64 just above 8; gammaln sums do not."""
    from jaxgmm.vb import _log_beta

    a = np.linspace(8.0, 8.5, 11)
    b = np.full_like(a, 8.25)
    np.testing.assert_allclose(_log_beta(jnp.asarray(a), jnp.asarray(b)), scipy_special.betaln(a, b), rtol=1e-13)


# ----------------------------------------------------------------------------- batching, weights, drivers


def test_restarts_in_one_call_equal_restarts_alone():
    X = jnp.asarray(FAITHFUL, DTYPE)
    result = fit_vb(jax.random.key(3), X, 4, n_init=3, max_iter=60)
    prior = bayesian_mixture_prior(X, 4)
    for i, key in enumerate(jax.random.split(jax.random.key(3), 3)):
        alone = vb_loop(vb_initialize(key, X, 4, prior), X, prior, max_iter=60)
        np.testing.assert_allclose(result.restarts.lower_bound[i], alone.lower_bound, rtol=rtol_for(float32=1e-6))
        np.testing.assert_allclose(result.restarts.posterior.means[i], alone.posterior.means,
                                   rtol=rtol_for(float32=1e-5))
    assert float(result.lower_bound) == float(jnp.max(result.restarts.lower_bound))


def test_many_data_sets_equal_separate_fits():
    rng = np.random.default_rng(4)
    sets = [np.concatenate([rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 6]).astype(DTYPE) for n in (40, 55)]
    X, w = jaxgmm.pad_datasets(sets)
    many = fit_vb_many(jax.random.key(5), X, 4, sample_weight=w, max_iter=80, weight_prior="dirichlet_distribution")
    for b, key in enumerate(jax.random.split(jax.random.key(5), 2)):
        alone = fit_vb(key, sets[b], 4, max_iter=80, weight_prior="dirichlet_distribution")
        np.testing.assert_allclose(many.lower_bound[b], alone.lower_bound, rtol=rtol_for(float32=1e-5))
        np.testing.assert_allclose(many.posterior.means[b], alone.posterior.means, rtol=rtol_for(float32=1e-4),
                                   atol=1e-4)


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(6)
    X = FAITHFUL[:80].astype(DTYPE)
    counts = rng.integers(0, 4, len(X))
    resp = _start_resp(len(X), 3)
    prior = bayesian_mixture_prior(np.repeat(X, counts, 0), 3)
    weighted = vb_loop(vb_posterior_from_responsibilities(jnp.asarray(X), jnp.asarray(resp, DTYPE), prior,
                                                          sample_weight=jnp.asarray(counts, DTYPE)),
                       jnp.asarray(X), prior, max_iter=20, tol=0.0, sample_weight=jnp.asarray(counts, DTYPE))
    repeated_X = jnp.asarray(np.repeat(X, counts, 0))
    repeated = vb_loop(vb_posterior_from_responsibilities(repeated_X, jnp.asarray(np.repeat(resp, counts, 0), DTYPE),
                                                          prior), repeated_X, prior, max_iter=20, tol=0.0)
    rtol = rtol_for(float32=1e-4)
    np.testing.assert_allclose(weighted.history, repeated.history, rtol=rtol)
    for a, b in zip(jax.tree.leaves(weighted.posterior), jax.tree.leaves(repeated.posterior)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(jnp.abs(b).max()))


def test_new_prior_values_and_tol_do_not_recompile(monkeypatch):
    import jaxgmm.vb

    traces = []
    original = jaxgmm.vb.vb_m_step
    monkeypatch.setattr(jaxgmm.vb, "vb_m_step", lambda *a, **k: traces.append(1) or original(*a, **k))
    X = jnp.asarray(FAITHFUL[:101], DTYPE)  # a shape no other test uses
    prior = bayesian_mixture_prior(X, 3)
    start = vb_initialize(jax.random.key(0), X, 3, prior)
    count = len(traces)
    vb_loop(start, X, prior, max_iter=9, tol=1e-3, reg_covar=1e-6)
    after_first = len(traces)
    assert after_first > count
    vb_loop(start, X, prior.replace(dof=prior.dof + 1.0, weight_concentration=2.0, shrinkage=0.5), max_iter=9,
            tol=1e-6, reg_covar=1e-3)
    assert len(traces) == after_first


def test_dirichlet_process_switches_unneeded_components_off():
    result = fit_vb(jax.random.key(0), FAITHFUL.astype(DTYPE), 10, n_init=2, max_iter=500, tol=1e-4)
    weights = np.asarray(result.posterior.weights)
    effective = int(effective_n_components(weights))
    assert effective in (2, 3)  # Old Faithful's two or three clusters
    assert np.sort(weights)[-effective:].sum() > 0.95


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="scikit-learn's covariance types"):
        fit_vb(jax.random.key(0), FAITHFUL, 2, covariance_type="VEV")
    with pytest.raises(ValueError, match="weight_prior"):
        fit_vb(jax.random.key(0), FAITHFUL, 2, weight_prior="pitman_yor")
    with pytest.raises(ValueError, match="should be greater than 1"):
        bayesian_mixture_prior(FAITHFUL, 2, degrees_of_freedom=0.5)
    with pytest.raises(ValueError, match="mean_precision must be > 0"):
        bayesian_mixture_prior(FAITHFUL, 2, mean_precision=0.0)
