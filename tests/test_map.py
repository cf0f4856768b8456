"""MAP-EM with a conjugate prior: against mclust's ``me(..., prior = priorControl())``, and its theory.

References outside the code under test: mclust's own MAP fits (``tests/mclust/prior_reference.json``,
regenerated live where ``Rscript`` with mclust is installed); scipy's inverse-Wishart, normal and
Dirichlet densities for the log-prior; maximum-likelihood EM for a vanishing prior; monotone ascent of
the log-posterior.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

import jaxgmm
from conftest import DTYPE, rtol_for
from jaxgmm.conjugate import ConjugatePrior, check_prior, conjugate_posterior, default_prior, log_prior
from jaxgmm.init import params_from_responsibilities
from jaxgmm.models import MODELS, get_model
from jaxgmm.models.priors import MAP_RULES
from jaxgmm.sklearn import GaussianMixture
from mclust_reference import load_prior_reference, rscript_with_mclust

REFERENCE = load_prior_reference()
CASES = [(name, model) for name, ds in REFERENCE["datasets"].items() for model in ds["models"]]
PRIOR_MODELS = tuple(sorted(MAP_RULES))  # mclust's ten models with a prior (E and V: EII and VII)
NO_PRIOR = ("VEE", "EVE", "VVE", "EVV")
INNER = dict(inner_tol=1e-13, inner_max_iter=1000)
FAITHFUL = np.asarray(jaxgmm.load_faithful(), DTYPE)


def _reference(source):
    if source == "live":
        if not rscript_with_mclust():
            pytest.skip("Rscript with mclust is not installed")
        return load_prior_reference(live=True)
    return REFERENCE


def _mclust_prior(entry, model, n_features, dtype=DTYPE) -> ConjugatePrior:
    """mclust's defaultPrior as a ConjugatePrior: its scalar scale on every diagonal entry for diagonal
    storage, added to the trace for spherical storage, the matrix for the others (check_prior's reading)."""
    prior = entry["prior"]
    return check_prior(ConjugatePrior(mean=prior["mean"], shrinkage=prior["shrinkage"], dof=prior["dof"],
                                      scale=prior["scale"]), model, 1, n_features, dtype)


def _variant(fit, model):
    """The mclust run ours must equal, and our prior's difference from mclust's (see jaxgmm.models.priors)."""
    if model == "EEI":
        return fit["no_shrinkage"], {}  # mclust's EEI leaves its means unshrunk: compare without shrinkage
    if model == "EII":
        return fit, {"scale": 0.0}  # mclust's EII M-step leaves the scale out (its one-feature "E" does not)
    return fit, {}


def _assert_params_equal(params, reference, rtol):
    np.testing.assert_allclose(np.asarray(params.weights, np.float64), reference["pro"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(np.asarray(params.means, np.float64), reference["mean"], rtol=rtol,
                               atol=rtol * np.abs(reference["mean"]).max())
    np.testing.assert_allclose(np.asarray(params.covariance_matrices, np.float64), reference["sigma"], rtol=rtol,
                               atol=rtol * np.abs(reference["sigma"]).max())


# ----------------------------------------------------------------------------- mclust itself


@pytest.mark.parametrize("dataset, model", CASES)
def test_default_prior_equals_mclust_default_prior(dataset, model):
    ds = REFERENCE["datasets"][dataset]
    ours = default_prior(np.asarray(ds["X"], DTYPE), ds["G"], model)
    theirs = ds["fits"][model]["prior"]
    rtol = rtol_for(float32=1e-5)
    np.testing.assert_allclose(ours.mean, theirs["mean"], rtol=rtol)
    assert float(ours.shrinkage) == pytest.approx(theirs["shrinkage"]) and float(ours.dof) == theirs["dof"]
    scale = np.broadcast_to(theirs["scale"], np.shape(ours.scale))  # a scalar on each diagonal entry (diag storage)
    np.testing.assert_allclose(ours.scale, scale, rtol=rtol)


@pytest.mark.x64
@pytest.mark.parametrize("source", ["fixture", "live"])
@pytest.mark.parametrize("dataset, model", CASES)
def test_map_em_equals_mclust_me(source, dataset, model):
    """From mclust's starting responsibilities, the first MAP M-step equals ``me(itmax = 1)``'s to 1e-8, and
    after as many iterations as mclust's ``me()`` the parameters equal its to 1e-6 and the log-likelihood
    to 1e-8 — with mclust's own default prior (EII without the scale, EEI without shrinkage: see
    jaxgmm.models.priors)."""
    ds = _reference(source)["datasets"][dataset]
    fit, change = _variant(ds["fits"][model], model)
    X = jnp.asarray(ds["X"])
    prior = _mclust_prior(fit, model, X.shape[1]).replace(**change)
    params = params_from_responsibilities(X, jnp.asarray(ds["z"]), model, reg_covar=0.0, prior=prior)
    _assert_params_equal(params, fit["first"], rtol=1e-8)
    reference = fit["me"]
    if reference["returnCode"] != 0:
        pytest.skip(f"mclust's me() failed on {dataset} {model} (returnCode {reference['returnCode']}: a "
                    "mixing proportion fell below its threshold)")
    for _ in range(reference["n_iter"] - 1):  # me() counts M-steps from z; the first is above
        params = jaxgmm.em_loop(params, X, max_iter=1, tol=0.0, reg_covar=0.0, prior=prior, **INNER).params
    _assert_params_equal(params, reference, rtol=1e-6)
    log_likelihood = float(jnp.sum(jaxgmm.score_samples(params, X)))
    np.testing.assert_allclose(log_likelihood, reference["loglik"], rtol=1e-8)


@pytest.mark.x64
@pytest.mark.parametrize("dataset", [name for name, ds in REFERENCE["datasets"].items() if "EEI" in ds["models"]])
def test_eei_map_step_improves_on_mclust(dataset):
    """With shrinkage, mclust's EEI keeps the unshrunk means; ours (the exact maximiser) reaches at least
    mclust's expected complete-data log-posterior from the same responsibilities."""
    ds = REFERENCE["datasets"][dataset]
    fit = ds["fits"]["EEI"]
    X, z = jnp.asarray(ds["X"]), jnp.asarray(ds["z"])
    prior = _mclust_prior(fit, "EEI", X.shape[1])
    ours = params_from_responsibilities(X, z, "EEI", reg_covar=0.0, prior=prior)
    theirs = jaxgmm.GMMParams.from_arrays(fit["first"]["pro"], fit["first"]["mean"],
                                          np.diagonal(fit["first"]["sigma"], axis1=1, axis2=2), "EEI")

    def objective(params):  # Σ_n Σ_k z_nk log(π_k N(x_n | θ_k)) + log p(θ)
        return float(jnp.sum(z * jaxgmm.weighted_log_prob(params, X)) + log_prior(params, prior))

    assert objective(ours) > objective(theirs)
    assert not np.allclose(ours.means, theirs.means, rtol=1e-6)  # the difference is real


@pytest.mark.skipif(not rscript_with_mclust(), reason="needs Rscript with mclust")
def test_prior_fixture_is_what_the_script_makes():
    live = load_prior_reference(live=True)
    for name, ds in REFERENCE["datasets"].items():
        for model in ds["models"]:
            np.testing.assert_allclose(live["datasets"][name]["fits"][model]["me"]["sigma"],
                                       ds["fits"][model]["me"]["sigma"], rtol=1e-10)


# ----------------------------------------------------------------------------- the theory


@pytest.mark.parametrize("model", PRIOR_MODELS)
def test_map_em_never_decreases_the_log_posterior(model):
    result = jaxgmm.fit(jax.random.key(0), FAITHFUL, 3, covariance_type=model, prior="default", reg_covar=0.0,
                        max_iter=60, tol=0.0)
    history = np.asarray(result.history, np.float64)[: int(result.n_iter)]
    assert np.all(np.isfinite(history)) and len(history) == 60
    assert np.all(np.diff(history) >= -rtol_for(float64=1e-12, float32=2e-6) * np.abs(history[1:]))
    # The reported objective belongs to the returned parameters: at least the last iterate's.
    prior = default_prior(FAITHFUL, 3, model)
    n = FAITHFUL.shape[0]
    expected = (float(jnp.sum(jaxgmm.score_samples(result.params, FAITHFUL))) + float(log_prior(result.params, prior))) / n
    assert float(result.log_posterior) == pytest.approx(expected, rel=rtol_for(float32=1e-5))
    assert float(result.log_posterior) >= history[-1] - rtol_for(float64=1e-12, float32=2e-6) * abs(history[-1])


def _flat_prior(model, n_components, n_features, dtype=DTYPE):
    """A prior that adds nothing: no shrinkage, zero scale, the dof that makes every pseudo-count zero."""
    count = get_model(model).prior_rule.pseudo_count
    at_zero, slope = count(0.0, 0.0, n_components, n_features), count(1.0, 0.0, n_components, n_features)
    dof = 0.0 if slope == at_zero else -at_zero / (slope - at_zero)
    shape = {"full": (n_features, n_features), "tied": (n_features, n_features), "diag": (n_features,),
             "spherical": ()}[get_model(model).storage.kind]
    return ConjugatePrior(mean=jnp.zeros(n_features, dtype), shrinkage=jnp.asarray(0.0, dtype),
                          dof=jnp.asarray(dof, dtype), scale=jnp.zeros(shape, dtype))


@pytest.mark.parametrize("model", PRIOR_MODELS + jaxgmm.COVARIANCE_TYPES)
def test_vanishing_prior_is_maximum_likelihood(model):
    rng = np.random.default_rng(3)
    X = jnp.asarray(rng.normal(size=(50, 3)) * [1.0, 2.0, 0.5] + 4.0, DTYPE)
    resp = jax.nn.softmax(jnp.asarray(rng.normal(size=(50, 3)) * 2, DTYPE), axis=-1)
    ml = params_from_responsibilities(X, resp, model, reg_covar=1e-3)
    flat = params_from_responsibilities(X, resp, model, reg_covar=1e-3, prior=_flat_prior(model, 3, 3))
    rtol = rtol_for(float64=1e-10, float32=1e-5)
    for a, b in zip(jax.tree.leaves(flat), jax.tree.leaves(ml)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(jnp.abs(b).max()))


@pytest.mark.parametrize("alias, model", [("full", "VVV"), ("tied", "EEE"), ("diag", "VVI"), ("spherical", "VII")])
def test_sklearn_aliases_take_mclust_models_prior(alias, model):
    prior = default_prior(FAITHFUL, 3, model)
    resp = jax.nn.one_hot(np.arange(len(FAITHFUL)) % 3, 3, dtype=DTYPE)
    a = params_from_responsibilities(FAITHFUL, resp, alias, prior=prior)
    b = params_from_responsibilities(FAITHFUL, resp, model, prior=prior)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=rtol_for())


@pytest.mark.x64
def test_log_prior_is_the_normal_inverse_wishart_dirichlet_density():
    """For VVV the kernel is Σ_k [log IW(Σ_k; ν, Λ) + log N(μ_k; μ₀, Σ_k/κ)] + log Dir(π; α) up to a constant:
    differences between parameter sets equal scipy's."""
    rng = np.random.default_rng(5)
    d, k = 3, 2
    A = rng.normal(size=(d, d))
    prior = ConjugatePrior(mean=jnp.asarray(rng.normal(size=d)), shrinkage=0.7, dof=6.5,
                           scale=jnp.asarray(A @ A.T + np.eye(d)), weight_concentration=2.5)

    def scipy_log_density(params):
        total = scipy_stats.dirichlet([2.5] * k).logpdf(np.asarray(params.weights))
        for mu, sigma in zip(np.asarray(params.means), np.asarray(params.covariances)):
            total += scipy_stats.invwishart(df=6.5, scale=np.asarray(prior.scale)).logpdf(sigma)
            total += scipy_stats.multivariate_normal(np.asarray(prior.mean), sigma / 0.7).logpdf(mu)
        return total

    first, second = (jaxgmm.GMMParams.from_arrays(rng.dirichlet([3] * k), rng.normal(size=(k, d)),
                                                  np.stack([np.cov(rng.normal(size=(d, 10))) for _ in range(k)]),
                                                  "full") for _ in range(2))
    np.testing.assert_allclose(float(log_prior(first, prior) - log_prior(second, prior)),
                               scipy_log_density(first) - scipy_log_density(second), rtol=1e-10)


def test_conjugate_posterior_is_textbook_normal_wishart():
    """Bishop (2006) eqs. 10.60-10.63 written out in numpy, for weighted responsibilities."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(40, 2)) * 3 + 1
    r = rng.dirichlet([1, 1, 1], size=40) * rng.uniform(0.5, 2.0, size=(40, 1))
    mu0, kappa, nu, scale = np.array([0.5, -1.0]), 0.3, 4.0, np.array([[2.0, 0.3], [0.3, 1.0]])
    stats = jaxgmm.stats_from_responsibilities(jnp.asarray(X, DTYPE), jnp.asarray(r, DTYPE),
                                               jnp.zeros((3, 2), DTYPE), "full")
    post = conjugate_posterior(stats, ConjugatePrior(mean=jnp.asarray(mu0, DTYPE), shrinkage=kappa, dof=nu,
                                                     scale=jnp.asarray(scale, DTYPE)))
    n = r.sum(0)
    xbar = r.T @ X / n[:, None]
    rtol = rtol_for(float32=1e-5)
    np.testing.assert_allclose(post.mean_precision, kappa + n, rtol=rtol)
    np.testing.assert_allclose(post.means, (kappa * mu0 + n[:, None] * xbar) / (kappa + n)[:, None], rtol=rtol)
    np.testing.assert_allclose(post.degrees_of_freedom, nu + n, rtol=rtol)
    for j in range(3):
        diff = X - xbar[j]
        expected = scale + (r[:, j, None] * diff).T @ diff + kappa * n[j] / (kappa + n[j]) * np.outer(
            xbar[j] - mu0, xbar[j] - mu0)
        np.testing.assert_allclose(post.scatter[j], expected, rtol=rtol)


def test_prior_keeps_a_collapsing_component_finite_without_reg_covar():
    """K = number of distinct points, each repeated: ML collapses every component onto a point."""
    rng = np.random.default_rng(7)
    points = rng.normal(size=(3, 2)) * 4
    X = np.repeat(points, 6, axis=0).astype(DTYPE)
    with pytest.raises(ValueError, match="non-finite"):
        jaxgmm.fit(jax.random.key(0), X, 3, reg_covar=0.0, max_iter=20)
    result = jaxgmm.fit(jax.random.key(0), X, 3, reg_covar=0.0, max_iter=20, prior="default")
    covariances = np.asarray(result.params.covariances, np.float64)
    assert np.all(np.isfinite(covariances)) and np.all(np.linalg.eigvalsh(covariances) > 0)
    assert np.isfinite(float(result.log_posterior))


@pytest.mark.parametrize("model", NO_PRIOR)
def test_models_without_a_prior_are_refused(model):
    with pytest.raises(ValueError, match="takes no conjugate prior"):
        jaxgmm.fit(jax.random.key(0), FAITHFUL, 2, covariance_type=model, prior="default")


def test_bad_priors_are_refused_with_their_reason():
    good = default_prior(FAITHFUL, 2, "VVV")
    for change, message in [
        (dict(mean=jnp.zeros(3)), "prior.mean must be"), (dict(shrinkage=-1.0), "shrinkage must be >= 0"),
        (dict(scale=-jnp.eye(2)), "not positive semi-definite"), (dict(scale=jnp.ones(3)), "must have shape"),
        (dict(weight_concentration=0.5), "weight_concentration must be >= 1"),
        (dict(dof=-10.0), "negative pseudo-count"), (dict(dof=float("nan")), "must be finite"),
    ]:
        with pytest.raises(ValueError, match=message):
            jaxgmm.fit(jax.random.key(0), FAITHFUL, 2, prior=good.replace(**change))
    with pytest.raises(ValueError, match="Invalid prior"):
        jaxgmm.fit(jax.random.key(0), FAITHFUL, 2, prior="mclust")
    with pytest.raises(TypeError, match="ConjugatePrior"):
        jaxgmm.fit(jax.random.key(0), FAITHFUL, 2, prior={"dof": 3})
    # MAP-EM does not combine with missing values yet: refused at every entry point, the data untouched
    holey = np.asarray(FAITHFUL, np.float64).copy()
    holey[3, 1] = np.nan
    refused = "prior= with missing values"
    for call in (lambda: jaxgmm.fit(jax.random.key(0), holey, 2, prior="default", missing="marginalize"),
                 lambda: jaxgmm.fit_many(jax.random.key(0), holey[None], 2, prior=good, missing="marginalize"),
                 lambda: jaxgmm.select(jax.random.key(0), holey, [2], ["VVV"], prior="default", missing="marginalize"),
                 lambda: GaussianMixture(2, prior="default", missing="marginalize").fit(holey)):
        with pytest.raises(ValueError, match=refused):
            call()
    assert np.isnan(holey[3, 1]) and np.isnan(holey).sum() == 1


def test_a_matrix_scale_is_reduced_to_each_layout():
    scale = np.array([[2.0, 0.5], [0.5, 3.0]])
    prior = default_prior(FAITHFUL, 2, "VVV").replace(scale=scale)
    np.testing.assert_allclose(check_prior(prior, "VVI", 2, 2, DTYPE).scale, [2.0, 3.0])
    np.testing.assert_allclose(check_prior(prior, "VII", 2, 2, DTYPE).scale, 5.0)


def test_new_prior_values_do_not_recompile(monkeypatch):
    traces = []
    original = jaxgmm.em.m_step
    monkeypatch.setattr(jaxgmm.em, "m_step", lambda *a, **k: traces.append(1) or original(*a, **k))
    X = FAITHFUL[:113]  # a shape no other test uses
    first = jaxgmm.fit(jax.random.key(0), X, 2, prior="default", max_iter=7)
    count = len(traces)
    prior = default_prior(X, 2, "full")
    second = jaxgmm.fit(jax.random.key(0), X, 2, max_iter=7, prior=prior.replace(
        dof=prior.dof + 3, shrinkage=prior.shrinkage * 10, scale=prior.scale * 2, weight_concentration=2.0))
    assert len(traces) == count
    assert not np.allclose(first.params.covariances, second.params.covariances)


def test_fit_many_gives_each_data_set_its_own_default_prior():
    rng = np.random.default_rng(8)
    sets = [rng.normal(size=(n, 2)) * s for n, s in ((60, 1.0), (45, 3.0))]
    X, w = jaxgmm.pad_datasets([x.astype(DTYPE) for x in sets])
    many = jaxgmm.fit_many(jax.random.key(0), X, 2, sample_weight=w, prior="default", max_iter=30)
    keys = jax.random.split(jax.random.key(0), 2)
    for b, x in enumerate(sets):
        alone = jaxgmm.fit(keys[b], x.astype(DTYPE), 2, prior="default", max_iter=30)
        np.testing.assert_allclose(many.params.means[b], alone.params.means, rtol=rtol_for(float32=1e-4),
                                   atol=1e-5)
        np.testing.assert_allclose(many.log_posterior[b], alone.log_posterior, rtol=rtol_for(float32=1e-5))


def test_select_with_the_default_prior_is_a_grid_of_map_fits():
    sel = jaxgmm.select(jax.random.key(0), FAITHFUL, [2, 3], ["EEE", "VEE"], n_init=1, max_iter=40,
                        prior="default")
    cells = {(c.covariance_type, c.n_components): c for c in sel.table}
    assert "takes no conjugate prior" in cells[("VEE", 2)].failed
    alone = jaxgmm.fit(jax.random.key(0), FAITHFUL, 3, covariance_type="EEE", max_iter=40, prior="default")
    np.testing.assert_allclose(cells[("EEE", 3)].log_likelihood, float(alone.log_likelihood) * len(FAITHFUL),
                               rtol=rtol_for(float32=1e-5))
    # mclust's "BIC at the MAP estimate": the MAP parameters' log-likelihood, the usual parameter count.
    assert cells[("EEE", 3)].bic == pytest.approx(
        -2 * cells[("EEE", 3)].log_likelihood + jaxgmm.n_parameters("EEE", 3, 2) * np.log(len(FAITHFUL)))


def test_estimator_takes_a_prior():
    from jaxgmm.sklearn import GaussianMixture

    gm = GaussianMixture(3, covariance_type="tied", prior="default", random_state=0, max_iter=50).fit(FAITHFUL)
    alone = jaxgmm.fit(jax.random.key(0), FAITHFUL, 3, covariance_type="tied", prior="default", max_iter=50)
    np.testing.assert_allclose(gm.means_, alone.params.means, rtol=rtol_for(float32=1e-5))
    assert gm.get_params()["prior"] == "default"
