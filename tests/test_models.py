"""mclust's 14 covariance models: against mclust itself, their definitions, and EM theory.

References outside the code under test: mclust's own fits (``tests/mclust``,
regenerated live where ``Rscript`` with mclust is installed), numpy's
eigen-decompositions and determinants for each model's structure, and
autodiff of the log-likelihood for stationarity.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import adjusted_rand_score

import jaxgmm
from conftest import DTYPE, X64, make_blobs, rtol_for, scipy_log_density
from jaxgmm.init import params_from_responsibilities
from jaxgmm.models import get_model
from mclust_reference import load_reference, rscript_with_mclust

MODELS = jaxgmm.COVARIANCE_MODELS
# One EM program per model serves every test here: the same data shape and max_iter.
MAX_ITER = 3000
TOL = 1e-13 if X64 else 1e-7
INNER = dict(inner_tol=1e-13, inner_max_iter=1000) if X64 else dict(inner_tol=1e-6, inner_max_iter=200)

REFERENCE = load_reference()
CASES = [(name, model) for name, ds in REFERENCE["datasets"].items() for model in ds["fits"]]


def em(params, X, **kwargs):
    return jaxgmm.em_loop(params, X, max_iter=MAX_ITER, tol=TOL, reg_covar=0.0, **INNER, **kwargs)


def start_from(X, z, model):
    return params_from_responsibilities(jnp.asarray(X, DTYPE), jnp.asarray(z, DTYPE), model, reg_covar=0.0)


def total_log_likelihood(params, X) -> float:
    """Σ_n log p(x_n) of ``params``, in float64 numpy from scipy's density (independent of jaxgmm)."""
    return float(scipy_log_density(params, X).sum())


def three_d():
    ds = REFERENCE["datasets"]["three_d"]
    return ds["X"], ds["z"]


# ----------------------------------------------------------------------------- mclust itself


def test_parameter_counts_equal_mclust():
    rows = REFERENCE["n_parameters"]
    assert len(rows) > 100
    for row in rows:
        model, d, g = row["model"], row["d"], row["G"]
        assert jaxgmm.n_parameters(model, g, d) == row["n_parameters"], row
        assert get_model(model).n_covariance_parameters(g, d) == row["nVarParams"], row


def _reference(source):
    if source == "live":
        if not rscript_with_mclust():
            pytest.skip("Rscript with mclust is not installed")
        return load_reference(live=True)
    return REFERENCE


def _assert_params_equal_mclust(params, fit, rtol):
    np.testing.assert_allclose(np.asarray(params.weights, np.float64), fit["pro"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(np.asarray(params.means, np.float64), fit["mean"], rtol=rtol,
                               atol=rtol * np.abs(fit["mean"]).max())
    sigma = np.asarray(params.covariance_matrices, np.float64)
    np.testing.assert_allclose(sigma, fit["sigma"], rtol=rtol, atol=rtol * np.abs(fit["sigma"]).max())


@pytest.mark.x64
@pytest.mark.parametrize("source", ["fixture", "live"])
@pytest.mark.parametrize("dataset, model", CASES)
def test_m_step_from_responsibilities_equals_mclust_mstep(source, dataset, model):
    ds = _reference(source)["datasets"][dataset]
    params, reference = start_from(ds["X"], ds["z"], model), ds["fits"][model]["mstep"]
    if get_model(model).letters != "VVE":
        # mclust's inner loops (VEE, EVE) stop on their objective, a few digits short in the parameters.
        _assert_params_equal_mclust(params, reference, rtol=1e-6 if get_model(model).iterative else 1e-8)
        return
    # mclust's VVE step is not the exact maximiser (docs/guide/covariance.md): ours maximises Q at least as well.
    _assert_params_equal_mclust(params, dict(reference, sigma=np.asarray(params.covariance_matrices)), rtol=1e-8)
    X, z, means = ds["X"], ds["z"], reference["mean"]
    diff = X[:, None, :] - means[None]
    scatter = np.einsum("nk,nkd,nke->kde", z, diff, diff)

    def q(sigma):  # −½ Σ_k [n_k log|Σ_k| + tr(W_k Σ_k⁻¹)]
        return -0.5 * sum(z[:, k].sum() * np.linalg.slogdet(sigma[k])[1]
                          + np.trace(np.linalg.solve(sigma[k], scatter[k])) for k in range(len(sigma)))

    ours, theirs = q(np.asarray(params.covariance_matrices, np.float64)), q(reference["sigma"])
    assert ours >= theirs - 1e-10 * abs(theirs)


@pytest.mark.x64
@pytest.mark.parametrize("source", ["fixture", "live"])
@pytest.mark.parametrize("dataset, model", CASES)
def test_em_fixed_point_equals_mclust(source, dataset, model):
    """From mclust's starting responsibilities, jaxgmm's EM ends where mclust's ``me()`` ends:
    after as many iterations as mclust ran, parameters to 1e-6 relative and the log-likelihood
    to 1e-8 (VVE: at least mclust's — see docs/guide/covariance.md); run on to convergence, at least mclust's
    log-likelihood (mclust stops once its log-likelihood stops changing in float64, a little
    short of the fixed point on slow fits)."""
    ds = _reference(source)["datasets"][dataset]
    X, reference = jnp.asarray(ds["X"]), ds["fits"][model]["me"]
    params = start_from(X, ds["z"], model)
    # me() counts M-steps from z; the first is params_from_responsibilities.
    for _ in range(reference["n_iter"] - 1):
        params = jaxgmm.em_loop(params, X, max_iter=1, tol=0.0, reg_covar=0.0, **INNER).params
    ll = total_log_likelihood(params, X)
    if get_model(model).letters == "VVE":
        assert ll >= reference["loglik"] - 1e-8 * abs(reference["loglik"])
    else:
        _assert_params_equal_mclust(params, reference, rtol=1e-6)
        np.testing.assert_allclose(ll, reference["loglik"], rtol=1e-8)
    result = jaxgmm.em_loop(params, X, max_iter=MAX_ITER, tol=1e-15, reg_covar=0.0, **INNER)
    assert bool(result.converged)
    assert total_log_likelihood(result.params, X) >= reference["loglik"] - 1e-10 * abs(reference["loglik"])


# ----------------------------------------------------------------------------- each model is its definition


def assert_structure(letters, S, rtol):
    """Σ_k = λ_k D_k A_k D_kᵀ with the constraints the letters name, checked with numpy alone."""
    K, D, _ = S.shape
    volumes = np.exp(np.linalg.slogdet(S)[1] / D)
    C = S / volumes[:, None, None]  # the shape-and-orientation part, det 1
    scale = np.abs(C).max()
    if letters[0] == "E":
        np.testing.assert_allclose(volumes, volumes[0], rtol=rtol, err_msg="equal volumes")
    if letters[2] == "I":
        off = C - np.einsum("kdd->kd", C)[:, :, None] * np.eye(D)
        assert np.abs(off).max() <= rtol * scale, "diagonal (identity orientation)"
    if letters[2] == "E":
        commutators = np.einsum("jab,kbc->jkac", S, S) - np.einsum("kab,jbc->jkac", S, S)
        assert np.abs(commutators).max() <= rtol * np.abs(S).max() ** 2, "common orientation"
    if letters[1] == "I":
        np.testing.assert_allclose(C, np.broadcast_to(np.eye(D), C.shape), atol=rtol * scale, err_msg="spherical")
    if letters[1] == "E":
        shapes = np.linalg.eigvalsh(C)
        np.testing.assert_allclose(shapes, np.broadcast_to(shapes[0], shapes.shape), rtol=rtol,
                                   err_msg="equal shapes")
        if letters[2] != "V":  # common axes too: the matrices themselves are equal
            np.testing.assert_allclose(C, np.broadcast_to(C[0], C.shape), atol=rtol * scale)


@pytest.mark.parametrize("model", MODELS)
def test_fitted_covariances_have_the_model_structure_and_likelihood_never_decreases(model):
    X, z = three_d()
    result = em(start_from(X, z, model), jnp.asarray(X, DTYPE))
    assert_structure(get_model(model).letters, np.asarray(result.params.covariance_matrices, np.float64),
                     rtol=rtol_for(float64=1e-9, float32=2e-4))
    history = np.asarray(result.history[: int(result.n_iter)], np.float64)
    assert np.all(np.isfinite(history)) and len(history) > 2
    assert np.all(np.diff(history) >= -rtol_for(float64=1e-12, float32=2e-6) * np.abs(history[1:]))


# Each pair (nested, general): the general model contains the nested one.
NESTING = [
    ("EII", "VII"), ("EII", "EEI"), ("VII", "VEI"), ("EEI", "VEI"), ("EEI", "EVI"), ("VEI", "VVI"),
    ("EVI", "VVI"), ("EEI", "EEE"), ("VVI", "VVE"), ("EEE", "VEE"), ("EEE", "EVE"), ("EEE", "EEV"),
    ("VEE", "VVE"), ("EVE", "VVE"), ("VEE", "VEV"), ("EEV", "VEV"), ("EEV", "EVV"), ("EVE", "EVV"),
    ("VEV", "VVV"), ("EVV", "VVV"), ("VVE", "VVV"),
]


@pytest.mark.x64
@pytest.mark.parametrize("nested, general", NESTING)
def test_general_model_started_at_nested_fixed_point_does_not_lose(nested, general):
    X, z = three_d()
    X = jnp.asarray(X)
    at_nested = em(start_from(X, z, nested), X).params
    as_general = jaxgmm.GMMParams(at_nested.weights, at_nested.means,
                                  get_model(general).storage.from_matrices(at_nested.covariance_matrices), general)
    at_general = em(as_general, X).params
    ll_nested, ll_general = total_log_likelihood(at_nested, X), total_log_likelihood(at_general, X)
    assert ll_general >= ll_nested - 1e-9 * abs(ll_nested)


# ----------------------------------------------------------------------------- EM fixed points are stationary

LBFGS = optax.lbfgs()


@pytest.mark.x64
@pytest.mark.parametrize("model", MODELS)
def test_em_fixed_point_is_stationary_within_the_model(model):
    """The gradient of ℓ in the model's own unconstrained coordinates (volumes, shapes,
    orientations, shared where the model shares them) vanishes at EM's fixed point, and
    L-BFGS in those coordinates does not improve it."""
    X, z = three_d()
    X = jnp.asarray(X)
    params = em(start_from(X, z, model), X).params
    u = jaxgmm.to_unconstrained(params)
    grads = jax.grad(lambda v: jaxgmm.log_likelihood(v, X))(u)
    for leaf in jax.tree.leaves(grads):
        assert np.abs(np.asarray(leaf)).max() < 1e-6
    refined = jaxgmm.fit_gradient(params, X, optimizer=LBFGS, num_steps=30)
    ll = float(jaxgmm.log_likelihood(params, X))
    assert float(refined.log_likelihood) <= ll + 1e-9 * abs(ll)


# ----------------------------------------------------------------------------- the rest of the library


def test_one_feature_models_and_their_errors():
    rng = np.random.default_rng(3)
    X1 = np.concatenate([rng.normal(-3, 1, 150), rng.normal(3, 2, 150)])[:, None]
    for name, variable in (("E", False), ("V", True)):
        result = jaxgmm.fit(jax.random.key(0), X1, 2, covariance_type=name)
        variances = np.asarray(result.params.covariances)
        assert variances.shape == (2,)
        assert (abs(variances[0] - variances[1]) > 0.5) == variable
    with pytest.raises(ValueError, match="one-feature model"):
        jaxgmm.fit(jax.random.key(0), np.hstack([X1, X1]), 2, covariance_type="E")
    with pytest.raises(ValueError, match="Invalid covariance_type 'VVX'"):
        jaxgmm.fit(jax.random.key(0), X1, 2, covariance_type="VVX")


def test_user_parameters_must_have_the_model_structure():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(2, 3, 3))
    unconstrained = A @ np.swapaxes(A, 1, 2) + np.eye(3)  # neither volumes nor shapes nor axes shared
    with pytest.raises(ValueError, match="structure of covariance_type='VEV'"):
        jaxgmm.GMMParams.from_arrays([0.5, 0.5], np.zeros((2, 3)), unconstrained, "VEV")
    ok = jaxgmm.GMMParams.from_arrays([0.5, 0.5], np.zeros((2, 3)), unconstrained, "VVV")
    assert ok.covariances.shape == (2, 3, 3)


def test_mclust_model_through_predict_sample_bic_and_save(tmp_path):
    X, labels, *_ = make_blobs(seed=5, n=400, k=3, d=2)
    result = jaxgmm.fit(jax.random.key(1), X, 3, covariance_type="VEV", n_init=2)
    params = result.params
    assert_structure("VEV", np.asarray(params.covariance_matrices, np.float64), rtol=rtol_for(float64=1e-8, float32=1e-4))
    predicted = np.asarray(jaxgmm.predict(params, jnp.asarray(X, DTYPE)))
    assert adjusted_rand_score(labels, predicted) > 0.9  # well-separated blobs are recovered
    n = len(X)
    expected_bic = -2 * total_log_likelihood(params, X) + jaxgmm.n_parameters("VEV", 3, 2) * np.log(n)
    np.testing.assert_allclose(float(jaxgmm.bic(params, jnp.asarray(X, DTYPE))), expected_bic,
                               rtol=rtol_for(float64=1e-10, float32=1e-5))
    samples, z = jaxgmm.sample(jax.random.key(2), params, 20000)
    np.testing.assert_allclose(np.cov(np.asarray(samples)[np.asarray(z) == 0].T),
                               np.asarray(params.covariance_matrices)[0], rtol=0.15, atol=0.05)
    path = tmp_path / "vev.npz"
    jaxgmm.save(path, params)
    loaded = jaxgmm.load(path)
    assert loaded.covariance_type == "VEV"
    np.testing.assert_array_equal(np.asarray(loaded.covariances), np.asarray(params.covariances))


def test_aliases_are_one_implementation():
    """scikit-learn's names and mclust's letters run the same code: identical iterates."""
    X, z = three_d()
    X = jnp.asarray(X, DTYPE)
    for alias, letters in (("full", "VVV"), ("tied", "EEE"), ("diag", "VVI"), ("spherical", "VII")):
        a = jaxgmm.em_loop(start_from(X, z, alias), X, max_iter=5, tol=0.0)
        b = jaxgmm.em_loop(start_from(X, z, letters), X, max_iter=5, tol=0.0)
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_drivers_streamed_online_estimator_and_command_line_take_mclust_models(tmp_path):
    """An iterative model (VEV) through every driver: streamed == in memory, online EM keeps the
    model's structure, the estimator and the command line accept the name."""
    from jaxgmm.sklearn import GaussianMixture

    X, z = three_d()
    X = np.asarray(X, DTYPE)
    options = dict(covariance_type="VEV", n_init=2, tol=1e-8 if X64 else 1e-5, max_iter=60)
    in_memory = jaxgmm.fit(jax.random.key(4), X, 3, **options)
    path = tmp_path / "x.npy"
    np.save(path, X)
    streamed = jaxgmm.fit_stream(jax.random.key(4), path, 3, block_size=128, **options)
    for a, b in zip(jax.tree.leaves(streamed.params), jax.tree.leaves(in_memory.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol_for(float64=1e-9, float32=2e-3),
                                   atol=rtol_for(float64=1e-9, float32=2e-3))
    online = jaxgmm.fit_online(jax.random.key(0), X, 3, batch_size=100, covariance_type="VEV")
    assert_structure("VEV", np.asarray(online.params.covariance_matrices, np.float64),
                     rtol=rtol_for(float64=1e-8, float32=1e-4))
    estimator = GaussianMixture(3, covariance_type="VEV", n_init=2, random_state=0).fit(X)
    assert estimator.covariances_.shape == (3, 3, 3)
    np.testing.assert_allclose(estimator.score(X), total_log_likelihood(
        jaxgmm.GMMParams(jnp.asarray(estimator.weights_), jnp.asarray(estimator.means_),
                         jnp.asarray(estimator.covariances_), "VEV"), X) / len(X), rtol=rtol_for(float32=1e-5))
    assert estimator._n_parameters() == jaxgmm.n_parameters("VEV", 3, 3)
    from jaxgmm import cli

    assert cli.main(["fit", str(path), "-k", "3", "--covariance-type", "VEV", "--quiet",
                     "--out", str(tmp_path / "m.npz")]) == 0
    assert jaxgmm.load(tmp_path / "m.npz").covariance_type == "VEV"
