"""Eigen-decomposition coordinates of mclust's 14 models (jaxgmm.models.eigen).

References come from outside the code under test: matrices built with numpy
from known λ, A, D (scipy.stats.ortho_group), structure checked with numpy
determinants, eigenvalues, commutators and off-diagonal entries; gradients
against central finite differences and the closed form of ∂ log det Σ;
degrees of freedom against mclust's ``nVarParams``.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.stats import ortho_group

from conftest import DTYPE, X64, rtol_for
from jaxgmm.models.eigen import (
    MODELS,
    coord_shapes,
    decompose,
    from_coords,
    orthogonal_from_matrix,
    structure_error,
    to_coords,
)

ALL_MODELS = "EII VII EEI VEI EVI VVI EEE VEE EVE VVE EEV VEV EVV VVV".split()
SIZES = [(3, 3), (2, 4)]  # (K, D): the few shapes every test shares, to keep compilations few

# Jitted once: letters, K and D are static, so every test reuses the same compiled code per shape.
FROM = jax.jit(from_coords, static_argnums=(0, 2, 3))
TO = jax.jit(to_coords, static_argnums=0)
DECOMPOSE = jax.jit(decompose, static_argnums=0)


def test_model_list():
    assert list(MODELS) == ALL_MODELS


# ---------------------------------------------------------------- numpy references


def numpy_model(rng, letters, K, D):
    """(Σ (K, D, D), λ (K,), A (K, D), D (K, D, D)) built with numpy for model ``letters``."""
    vol, shape, orient = letters
    lam = np.full(K, np.exp(rng.normal() * 0.5)) if vol == "E" else np.exp(rng.uniform(-1.0, 1.0, K))
    if shape == "I":
        A = np.ones((K, D))
    else:
        v = rng.normal(size=D if shape == "E" else (K, D)) * 0.6
        A = np.broadcast_to(np.exp(v - v.mean(-1, keepdims=True)), (K, D)).copy()
    if orient == "I":
        Ds = np.broadcast_to(np.eye(D), (K, D, D)).copy()
    elif orient == "E":
        Ds = np.broadcast_to(ortho_group.rvs(D, random_state=rng), (K, D, D)).copy()
    else:
        Ds = np.stack([ortho_group.rvs(D, random_state=rng) for _ in range(K)])
    S = lam[:, None, None] * np.einsum("kij,kj,klj->kil", Ds, A, Ds)
    return S, lam, A, Ds


def random_coords(rng, letters, K, D, orthogonal=False):
    """Random coordinates (numpy); orientation matrices generic or, with ``orthogonal``, orthogonal."""
    coords = {}
    for name, shape in coord_shapes(letters, K, D).items():
        if name == "orientation":
            if orthogonal:
                mats = [ortho_group.rvs(D, random_state=rng) for _ in range(int(np.prod(shape[:-2])))]
                coords[name] = np.reshape(mats, shape)
            else:
                coords[name] = rng.normal(size=shape)
        else:
            coords[name] = rng.normal(size=shape) * 0.5
    return coords


def as_dtype(coords, dtype=DTYPE):
    return {k: jnp.asarray(v, dtype) for k, v in coords.items()}


def properties(S, tol):
    """Which structural properties the matrices have, each checked with numpy directly."""
    S = np.asarray(S, np.float64)
    K, D = S.shape[0], S.shape[-1]
    vols = np.linalg.det(S) ** (1.0 / D)
    eig = np.linalg.eigh(S)[0]
    shapes = eig / vols[:, None]
    normalised = S / vols[:, None, None]
    off = S - np.stack([np.diag(np.diag(s)) for s in S])
    pairs = list(itertools.combinations(range(K), 2))
    return {
        "equal_volumes": np.ptp(vols) <= tol * vols.max(),
        "equal_shapes": np.ptp(shapes, axis=0).max() <= tol * shapes.max(),
        "spherical": (np.ptp(eig, axis=1) <= tol * eig.max(axis=1)).all(),
        "commuting": all(
            np.linalg.norm(S[j] @ S[k] - S[k] @ S[j]) <= tol * np.linalg.norm(S[j]) * np.linalg.norm(S[k])
            for j, k in pairs
        ),
        "diagonal": (np.abs(off) <= tol * np.abs(S).max()).all(),
        "equal_normalised": np.ptp(normalised, axis=0).max() <= tol * np.abs(normalised).max(),
    }


def expected_properties(letters):
    vol, shape, orient = letters
    return {
        "equal_volumes": vol == "E",
        "equal_shapes": shape in "EI",
        "spherical": shape == "I",
        "commuting": orient in "EI",
        "diagonal": orient == "I",
        "equal_normalised": shape in "EI" and orient in "EI",
    }


def constraints(letters):
    """The properties model ``letters`` requires, with the word its message must use."""
    vol, shape, orient = letters
    out = {}
    if vol == "E":
        out["equal_volumes"] = "equal volumes"
    if shape == "E":
        out["equal_shapes"] = "equal shapes"
        if orient != "V":
            out["equal_normalised"] = "equal shapes"
    if shape == "I":
        out["spherical"] = "spherical"
    if orient == "E":
        out["commuting"] = "common orientation"
    if orient == "I":
        out["diagonal"] = "diagonal"
    return out


def nvarparams(letters, K, D):
    """mclust's nVarParams: free covariance parameters of each model."""
    r = D * (D - 1) // 2
    return {
        "EII": 1, "VII": K, "EEI": D, "VEI": K + D - 1, "EVI": 1 + K * (D - 1), "VVI": K * D,
        "EEE": D * (D + 1) // 2, "VEE": K + D * (D + 1) // 2 - 1, "EVE": 1 + K * (D - 1) + r,
        "VVE": K * D + r, "EEV": 1 + (D - 1) + K * r, "VEV": K + (D - 1) + K * r,
        "EVV": 1 + K * (D * (D + 1) // 2 - 1), "VVV": K * D * (D + 1) // 2,
    }[letters]  # fmt: skip


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize("K, D", SIZES)
@pytest.mark.parametrize("letters", ALL_MODELS)
def test_from_coords_has_the_structure(letters, K, D):
    rng = np.random.default_rng([K, D, ALL_MODELS.index(letters)])
    S = np.asarray(FROM(letters, as_dtype(random_coords(rng, letters, K, D)), K, D), np.float64)
    assert S.shape == (K, D, D)
    assert np.all(np.isfinite(S))
    np.testing.assert_array_equal(S, np.swapaxes(S, 1, 2))
    assert np.all(np.linalg.eigvalsh(S) > 0)
    tol = rtol_for(float64=1e-10, float32=1e-4)
    # Exactly the model's constraints hold: the V letters really vary at a random point.
    assert properties(S, tol) == expected_properties(letters)
    assert structure_error(letters, S, rtol=tol) is None


@pytest.mark.parametrize("given", ALL_MODELS)
def test_structure_error_names_the_broken_constraint(given):
    """Matrices of model ``given`` checked against each of the 14 models."""
    K, D = 3, 3
    S = numpy_model(np.random.default_rng(ALL_MODELS.index(given)), given, K, D)[0]
    props = properties(S, 1e-8)
    assert props == expected_properties(given)
    if given == "VVV":  # breaks every constraint: each of the other 13 models reports one
        assert [m for m in ALL_MODELS if structure_error(m, S) is None] == ["VVV"]
    for letters in ALL_MODELS:
        required = constraints(letters)
        broken = {name for name in required if not props[name]}
        message = structure_error(letters, S)
        if not broken:
            assert message is None, (given, letters, message)
            continue
        assert isinstance(message, str) and "\n" not in message, (given, letters)
        assert f"model '{letters}'" in message and "component" in message
        words = {required[name] for name in broken}
        assert any(w in message for w in words), (given, letters, message)
        other = set(required.values()) - words
        assert not any(w in message for w in other), (given, letters, message)


def test_structure_error_messages():
    rng = np.random.default_rng(7)
    S = numpy_model(rng, "VVV", 3, 3)[0]
    vols = np.exp(np.mean(np.log(np.linalg.eigvalsh(S)), axis=1))
    msg = structure_error("EVV", S)
    assert msg == (
        f"components 0 and 1 have different volumes (det^(1/D) {vols[0]:.4g} vs {vols[1]:.4g}), "
        "but model 'EVV' has equal volumes"
    )
    # Scale component 2 only: components 0 and 1 agree, so the message names 0 and 2.
    S2 = numpy_model(rng, "EVV", 3, 3)[0]
    S2[2] *= 1.5
    assert structure_error("EVV", S2).startswith("components 0 and 2 have different volumes")
    # Tolerance: a relative change of 1e-8 passes at rtol 1e-6, 1e-4 does not.
    S3 = numpy_model(rng, "EEE", 3, 3)[0]
    S3[1] *= 1 + 1e-8
    assert structure_error("EEE", S3) is None
    S3[1] *= 1 + 1e-4
    assert "equal volumes" in structure_error("EEE", S3)
    assert structure_error("EEE", S3, rtol=1e-3) is None
    with pytest.raises(ValueError, match="unknown covariance model"):
        structure_error("IVV", S)


def test_same_eigenvalues_on_different_axes_are_different_shapes():
    """Sorted eigenvalues agree and orientation holds, but A_k sits on different axes."""
    A = np.array([1.0, 2.0, 0.5])
    diag = np.stack([np.diag(A), np.diag(A[[1, 0, 2]])])
    assert structure_error("EVI", diag) is None
    for letters in ("EEI", "VEI", "EEE", "VEE"):
        assert "equal shapes" in structure_error(letters, diag), letters
    Q = ortho_group.rvs(3, random_state=np.random.default_rng(1))
    rotated = Q @ diag @ Q.T * np.array([1.0, 3.0])[:, None, None]
    assert structure_error("VVE", rotated) is None
    assert structure_error("VEV", rotated) is None
    assert "equal shapes" in structure_error("VEE", rotated)


# ---------------------------------------------------------------- inverse maps


@pytest.mark.parametrize("K, D", SIZES)
@pytest.mark.parametrize("letters", ALL_MODELS)
def test_round_trip(letters, K, D):
    rng = np.random.default_rng([K, D, 100 + ALL_MODELS.index(letters)])
    S = numpy_model(rng, letters, K, D)[0]
    coords = TO(letters, jnp.asarray(S, DTYPE))
    assert {k: v.shape for k, v in coords.items()} == coord_shapes(letters, K, D)
    assert all(v.dtype == DTYPE for v in coords.values())
    back = np.asarray(FROM(letters, coords, K, D), np.float64)
    tol = rtol_for(float64=1e-10, float32=1e-5)
    np.testing.assert_allclose(back, S, rtol=0, atol=tol * np.abs(S).max())


@pytest.mark.parametrize("K, D", SIZES)
@pytest.mark.parametrize("letters", ALL_MODELS)
def test_decompose(letters, K, D):
    rng = np.random.default_rng([K, D, 200 + ALL_MODELS.index(letters)])
    S, lam, A, Ds = numpy_model(rng, letters, K, D)
    out = DECOMPOSE(letters, jnp.asarray(S, DTYPE))
    volumes, shapes, orientations = (np.asarray(a, np.float64) for a in out)
    tol = rtol_for(float64=1e-10, float32=1e-5)
    assert volumes.shape == (K,) and shapes.shape == (K, D) and orientations.shape == (K, D, D)
    np.testing.assert_allclose(volumes, lam, rtol=tol)
    np.testing.assert_allclose(np.sort(shapes, axis=1), np.sort(A, axis=1), rtol=10 * tol)
    np.testing.assert_allclose(np.prod(shapes, axis=1), 1.0, rtol=10 * tol)
    eye = np.eye(D)
    for k in range(K):
        np.testing.assert_allclose(orientations[k].T @ orientations[k], eye, atol=10 * tol)
        # Each returned axis is ± one of the built axes (a signed permutation).
        overlap = np.abs(orientations[k].T @ Ds[k])
        if letters[1] != "I":
            np.testing.assert_allclose(np.sort(overlap, axis=1)[:, -1], 1.0, atol=1e3 * tol)
        rebuilt = volumes[k] * orientations[k] @ np.diag(shapes[k]) @ orientations[k].T
        np.testing.assert_allclose(rebuilt, S[k], atol=10 * tol * np.abs(S).max())
    if letters[1] != "V":
        np.testing.assert_array_equal(shapes, np.broadcast_to(shapes[0], shapes.shape))
    if letters[1] == "I":
        np.testing.assert_array_equal(shapes, 1.0)
    if letters[2] == "E":
        np.testing.assert_array_equal(orientations, np.broadcast_to(orientations[0], orientations.shape))
    if letters[2] == "I":
        np.testing.assert_array_equal(orientations, np.broadcast_to(eye, orientations.shape))


def test_tiny_covariances_in_many_dimensions():
    """Volumes come from log-eigenvalues: det(1e-6 I_40) = 1e-240 underflows float32 (and det^(1/D) too)."""
    S = np.stack([1e-6 * np.eye(40), 2e-6 * np.eye(40)])
    volumes = np.asarray(DECOMPOSE("VII", jnp.asarray(S, DTYPE))[0])
    np.testing.assert_allclose(volumes, [1e-6, 2e-6], rtol=rtol_for(float32=1e-5))
    back = np.asarray(FROM("VII", TO("VII", jnp.asarray(S, DTYPE)), 2, 40))
    np.testing.assert_allclose(back, S, rtol=0, atol=rtol_for(float32=1e-5) * 2e-6)
    assert structure_error("VII", S) is None
    assert "equal volumes" in structure_error("EII", S)


def test_orthogonal_input_maps_to_itself():
    rng = np.random.default_rng(3)
    Q = np.stack([ortho_group.rvs(4, random_state=rng) for _ in range(3)])
    Q[1] = -Q[1]  # determinant −1 and negative diagonals are fine too
    out = np.asarray(orthogonal_from_matrix(jnp.asarray(Q, DTYPE)))
    np.testing.assert_allclose(out, Q, atol=rtol_for(float64=1e-13, float32=1e-6))
    # For any M: orthogonal Q with M = QR, R upper triangular with positive diagonal.
    M = rng.normal(size=(4, 4))
    Qm = np.asarray(orthogonal_from_matrix(jnp.asarray(M, DTYPE)), np.float64)
    R = Qm.T @ M
    tol = rtol_for(float64=1e-12, float32=1e-5)
    np.testing.assert_allclose(np.tril(R, -1), 0.0, atol=tol * 10)
    assert np.all(np.diag(R) > 0)


def test_jit_vmap_and_argument_checks():
    rng = np.random.default_rng(4)
    batch = [as_dtype(random_coords(rng, "VEV", 3, 3)) for _ in range(2)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batch)
    out = jax.vmap(lambda c: from_coords("VEV", c, 3, 3))(stacked)
    for i, c in enumerate(batch):
        np.testing.assert_allclose(out[i], FROM("VEV", c, 3, 3), rtol=rtol_for(float32=1e-5), atol=1e-6)
    with pytest.raises(ValueError, match="takes coordinates"):
        from_coords("VEV", {"log_volume": jnp.zeros(3)}, 3, 3)
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        from_coords("VII", {"log_volume": jnp.zeros(2)}, 3, 3)
    with pytest.raises(ValueError, match="unknown covariance model"):
        to_coords("VVX", jnp.eye(3)[None])


# ---------------------------------------------------------------- derivatives


def _flat_fn(fn, letters, coords, K, D):
    flat, unravel = ravel_pytree(coords)
    return flat, lambda x: fn(from_coords(letters, unravel(x), K, D))


@pytest.mark.parametrize("letters", ALL_MODELS)
def test_grad_log_det_closed_form(letters):
    """∑_k log det Σ_k = D ∑_k log λ_k: gradient D per log-volume, 0 for shape and orientation."""
    K, D = SIZES[0]
    rng = np.random.default_rng(ALL_MODELS.index(letters))
    coords = as_dtype(random_coords(rng, letters, K, D, orthogonal=True))
    grad = jax.jit(jax.grad(lambda c: jnp.sum(jnp.linalg.slogdet(from_coords(letters, c, K, D))[1])))(coords)
    tol = rtol_for(float64=1e-10, float32=1e-4)
    for name, g in grad.items():
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), name
        if name == "log_volume":
            np.testing.assert_allclose(g, D * (K if letters[0] == "E" else 1), rtol=tol)
        else:
            np.testing.assert_allclose(g, 0.0, atol=tol * D * K)


def _log_likelihood(letters, flat, X, means):
    """∑_k ∑_n log N(x_n | μ_k, Σ_k) with Σ from flattened coordinates (written with jnp, Cholesky)."""
    K, D = means.shape
    _, unravel = ravel_pytree({k: jnp.zeros(v, flat.dtype) for k, v in coord_shapes(letters, K, D).items()})
    S = from_coords(letters, unravel(flat), K, D)
    L = jnp.linalg.cholesky(S)
    diff = X[None] - means[:, None]
    z = jax.scipy.linalg.solve_triangular(L, jnp.swapaxes(diff, 1, 2), lower=True)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=1, axis2=2)), axis=1)
    return jnp.sum(-0.5 * jnp.sum(z**2, axis=1) - 0.5 * logdet[:, None] - 0.5 * D * np.log(2 * np.pi))


# Compiled once per model, shared by the generic and the orthogonal point.
LOGLIK_GRAD = jax.jit(jax.grad(_log_likelihood, argnums=1), static_argnums=0)
LOGLIK_MANY = jax.jit(jax.vmap(_log_likelihood, in_axes=(None, 0, None, None)), static_argnums=0)


@pytest.mark.x64
@pytest.mark.parametrize("orthogonal", [False, True], ids=["generic", "orthogonal"])
@pytest.mark.parametrize("letters", ALL_MODELS)
def test_grad_log_likelihood_matches_finite_differences(letters, orthogonal):
    K, D = SIZES[0]
    rng = np.random.default_rng([ALL_MODELS.index(letters), orthogonal])
    coords = random_coords(rng, letters, K, D, orthogonal=orthogonal)
    X = jnp.asarray(rng.normal(size=(20, D)) * 1.5)
    means = jnp.asarray(rng.normal(size=(K, D)))
    flat = np.asarray(ravel_pytree(as_dtype(coords, np.float64))[0])
    grad = np.asarray(LOGLIK_GRAD(letters, jnp.asarray(flat), X, means))
    assert np.all(np.isfinite(grad))
    h = 1e-5
    steps = h * np.eye(flat.size)
    points = jnp.asarray(np.concatenate([flat + steps, flat - steps]))
    values = np.asarray(LOGLIK_MANY(letters, points, X, means))
    fd = (values[: flat.size] - values[flat.size :]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


@pytest.mark.parametrize("K, D", SIZES)
@pytest.mark.parametrize("letters", ALL_MODELS)
def test_degrees_of_freedom_match_mclust(letters, K, D):
    """Rank of ∂ triu(Σ) / ∂ coords at a generic point = mclust's nVarParams."""
    rng = np.random.default_rng([K, D, 300 + ALL_MODELS.index(letters)])
    coords = as_dtype(random_coords(rng, letters, K, D))
    rows, cols = np.triu_indices(D)
    flat, f = _flat_fn(lambda S: S[:, rows, cols].ravel(), letters, coords, K, D)
    J = np.asarray(jax.jit(jax.jacfwd(f))(flat), np.float64)
    s = np.linalg.svd(J, compute_uv=False)
    rank = int(np.sum(s > s[0] * (1e-9 if X64 else 1e-4)))
    assert rank == nvarparams(letters, K, D)
    # The rank is not borderline: the next singular value is far below the tolerance.
    gap = s[rank] / s[0] if rank < s.size else 0.0
    assert gap < (1e-12 if X64 else 1e-5), gap
