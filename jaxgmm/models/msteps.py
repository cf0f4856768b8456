"""Covariance M-steps of ten of mclust's parsimonious models, as pure JAX functions.

Each component's covariance is decomposed as ``Σ_k = λ_k D_k A_k D_kᵀ``
(Celeux & Govaert 1995): volume ``λ_k = |Σ_k|^{1/D}``, shape ``A_k``
(diagonal, ``|A_k| = 1``), orientation ``D_k`` (orthogonal). The three letters
of a model name say whether volume, shape and orientation are Equal across
components, Variable, or the Identity (shape ``I``: spherical; orientation
``I``: axis-aligned).

Inputs are the M-step's statistics about the *new* means, already
regularised::

    W_k = Σ_n r_nk (x_n − μ_k)(x_n − μ_k)ᵀ + n_k·reg_covar·I,   n_k = Σ_n r_nk > 0,

reduced to what the storage needs: traces ``(K,)`` for EII, diagonals
``(K, D)`` for EEI, EVI, VEI, full matrices ``(K, D, D)`` for EEV, EVV, VEV,
VEE, EVE, VVE. Each function returns the covariances that maximise the
expected complete-data log-likelihood

    Q(Σ) = −½ Σ_k [n_k log|Σ_k| + tr(W_k Σ_k⁻¹)]

over its model's constraint set, in the same storage: ``(K,)`` variances,
``(K, D)`` variances or ``(K, D, D)`` matrices.

All share one signature, ``fn(scatters, counts, previous, *, inner_tol,
inner_max_iter)`` (EII also takes ``n_features``). The closed forms (EII,
EEI, EVI, EEV, EVV) ignore ``previous``, ``inner_tol`` and
``inner_max_iter``. The iterative ones (VEI, VEV, VEE, EVE, VVE) alternate
conditional maximisations in a ``jax.lax.while_loop`` that starts from the
volumes (VEI, VEV, VEE) or the orientation and shapes (EVE, VVE) of
``previous``, the previous EM iterate in the same storage, so every inner
iteration increases ``Q`` from the previous parameters and EM stays monotone
however early the loop stops. The loop stops after ``max(inner_max_iter, 1)``
iterations or once the largest relative change of a covariance (max-norm per
component) is at most ``inner_tol``. Below the dtype's rounding level
(about 1e-6 in float32, 1e-14 in float64) the change never gets that small
and the loop runs to ``inner_max_iter``.

Conventions follow mclust (src/mclust.f: ``mseev``, ``msvei``, ``msvev``;
src/mclust2.f, the former "addson" code: ``msevv``, ``msvee``, ``mseve``,
``msvve``). Where the sources differ from the exact conditional maximiser
(VVE's orientation step) the exact one is implemented; see :func:`VVE`.

Numerics: determinants only as log-determinants (sums of logs of
eigenvalues, floored at ``eps·λ_max``), so ``1e-21·I`` in 16 dimensions is
fine in float32; an empty component (``n_k ≈ 1e-15``, ``W_k ≈ n_k·reg·I``)
gives finite covariances near ``reg·I``. All functions are pure, jit- and
vmap-safe, and work in float32 and float64.
"""

import jax
import jax.numpy as jnp

from jaxgmm.matmul_precision import float32_matmuls

__all__ = ["EII", "EEI", "EVI", "VEI", "EEV", "EVV", "VEV", "VEE", "EVE", "VVE", "MSTEPS"]

# Relative margin on the majorisation constants of the orientation (MM) step:
# ω_k(1 + margin) ≥ λ_max(W_k) even after the eigenvalue's rounding, and the
# majoriser's matrix never vanishes (with all shapes isotropic the second MM
# step's matrix is exactly zero, and the SVD of zero is arbitrary). The fixed
# points are unchanged; the step shrinks by a factor of about 1 − margin.
_MM_MARGIN = 2.0**-10

# Distinct weights for combining the previous covariances before finding
# their common eigenvectors (equal weights could make distinct shapes add up
# to a multiple of the identity).
_ORIENTATION_WEIGHT_STEP = 0.6180339887498949


def _positive(x):
    """``x`` floored at the dtype's smallest normal number (logs stay finite)."""
    return jnp.maximum(x, jnp.finfo(x.dtype).tiny)


def _log_geomean(v):
    """``mean(log v)`` over the last axis: ``log |diag(v)|^{1/D}``."""
    return jnp.mean(jnp.log(_positive(v)), axis=-1)


def _normalise(v):
    """``(v / g, g)`` with ``g = |diag(v)|^{1/D}`` over the last axis (so the shape has determinant one)."""
    log_g = _log_geomean(v)
    return jnp.exp(jnp.log(_positive(v)) - log_g[..., None]), jnp.exp(log_g)


def _floored_eigenvalues(ev):
    """Eigenvalues (ascending, last axis) floored at ``eps·λ_max`` (rounding can leave them ≤ 0)."""
    finfo = jnp.finfo(ev.dtype)
    return jnp.maximum(ev, jnp.maximum(finfo.eps * ev[..., -1:], finfo.tiny))


def _eigh(W):
    """Ascending eigenvalues (floored) and eigenvectors of a batch of symmetric matrices."""
    ev, vec = jnp.linalg.eigh(W)
    return _floored_eigenvalues(ev), vec


def _log_volumes(covariances):
    """``log |Σ_k|^{1/D}`` of ``(K, D, D)`` matrices, from their eigenvalues."""
    return _log_geomean(_floored_eigenvalues(jnp.linalg.eigvalsh(covariances)))


def _symmetric(S):
    return 0.5 * (S + jnp.swapaxes(S, -1, -2))


def _recompose(vectors, values):
    """``V_k diag(values_k) V_kᵀ``: ``vectors`` ``(K, D, D)`` or shared ``(D, D)``, ``values`` ``(K, D)``."""
    if vectors.ndim == 2:
        return _symmetric(jnp.einsum("ij,kj,lj->kil", vectors, values, vectors))
    return _symmetric(jnp.einsum("kij,kj,klj->kil", vectors, values, vectors))


def _relative_change(new, old):
    """Largest over components of ``max|new_k − old_k| / max|new_k|`` (no squares: no underflow)."""
    axes = tuple(range(1, new.ndim))
    return jnp.max(jnp.max(jnp.abs(new - old), axis=axes) / _positive(jnp.max(jnp.abs(new), axis=axes)))


def _iterate(body, init, reference, inner_tol, inner_max_iter):
    """``while_loop`` over ``(state, covariances)``; ``body(state) -> (state, covariances)``.

    Stops after ``max(inner_max_iter, 1)`` iterations or when the relative
    change of the covariances is ``≤ inner_tol``; the first change is
    measured from ``reference`` (the previous iterate).
    """
    dtype = reference.dtype
    tol = jnp.asarray(inner_tol, dtype)
    max_iter = jnp.maximum(jnp.asarray(inner_max_iter, jnp.int32), 1)

    def cond(carry):
        it, _, _, change = carry
        return (it < max_iter) & (change > tol)

    def step(carry):
        it, state, old, _ = carry
        state, new = body(state)
        return it + 1, state, new, _relative_change(new, old)

    carry = (jnp.zeros((), jnp.int32), init, reference, jnp.asarray(jnp.inf, dtype))
    _, _, covariances, _ = jax.lax.while_loop(cond, step, carry)
    return covariances


# ----------------------------------------------------------------------------- closed forms


@float32_matmuls
def EII(trace_W, counts, previous=None, *, n_features, inner_tol=None, inner_max_iter=None):
    """M-step of EII, ``Σ_k = λ I`` (equal spherical).

    Update: ``λ = Σ_k tr W_k / (D Σ_k n_k)``.

    Parameters
    ----------
    trace_W : array, shape (K,)
        ``tr W_k``.
    counts : array, shape (K,)
        ``n_k``.
    previous, inner_tol, inner_max_iter
        Ignored (uniform signature).
    n_features : int
        ``D`` (static).

    Returns
    -------
    array, shape (K,)
        The common variance ``λ``, repeated.
    """
    lam = jnp.sum(trace_W) / (n_features * jnp.sum(counts))
    return jnp.broadcast_to(lam, trace_W.shape).astype(trace_W.dtype)


@float32_matmuls
def EEI(diag_W, counts, previous=None, *, inner_tol=None, inner_max_iter=None):
    """M-step of EEI, ``Σ_k = λ A`` (equal diagonal).

    Update: ``Σ = diag(Σ_k W_k) / Σ_k n_k`` for every ``k``.

    Parameters
    ----------
    diag_W : array, shape (K, D)
        Diagonals of ``W_k``.
    counts : array, shape (K,)
    previous, inner_tol, inner_max_iter
        Ignored.

    Returns
    -------
    array, shape (K, D)
        The common variances, repeated over components.
    """
    variances = jnp.sum(diag_W, axis=0) / jnp.sum(counts)
    return jnp.broadcast_to(variances, diag_W.shape)


@float32_matmuls
def EVI(diag_W, counts, previous=None, *, inner_tol=None, inner_max_iter=None):
    """M-step of EVI, ``Σ_k = λ A_k`` (equal volume, variable axis-aligned shapes).

    Update (mclust ``msevi``): with ``B_k = diag(W_k)``,
    ``A_k = B_k / |B_k|^{1/D}`` and ``λ = Σ_k |B_k|^{1/D} / Σ_k n_k``.

    Parameters
    ----------
    diag_W : array, shape (K, D)
    counts : array, shape (K,)
    previous, inner_tol, inner_max_iter
        Ignored.

    Returns
    -------
    array, shape (K, D)
        Variances ``λ A_k``.
    """
    shapes, volumes = _normalise(diag_W)
    lam = jnp.sum(volumes) / jnp.sum(counts)
    return lam * shapes


@float32_matmuls
def EEV(W, counts, previous=None, *, inner_tol=None, inner_max_iter=None):
    """M-step of EEV, ``Σ_k = λ D_k A D_kᵀ`` (equal volume and shape, variable orientation).

    Update (mclust ``mseev``): eigendecompose ``W_k = L_k Ω_k L_kᵀ`` with the
    eigenvalues in the same order in every component (mclust: decreasing,
    from an SVD; here increasing, from ``eigh``; the pairing, and so ``Σ_k``,
    is the same); ``A = Σ_k Ω_k / |Σ_k Ω_k|^{1/D}``,
    ``λ = |Σ_k Ω_k|^{1/D} / Σ_k n_k``, ``Σ_k = λ L_k A L_kᵀ``. Pairing the
    sorted eigenvalues is the global maximiser (the sorted sum majorises every
    other pairing's and the determinant is Schur-concave).

    Parameters
    ----------
    W : array, shape (K, D, D)
    counts : array, shape (K,)
    previous, inner_tol, inner_max_iter
        Ignored.

    Returns
    -------
    array, shape (K, D, D)
    """
    omega, L = _eigh(W)
    shape, volume = _normalise(jnp.sum(omega, axis=0))
    lam = volume / jnp.sum(counts)
    return _recompose(L, jnp.broadcast_to(lam * shape, omega.shape))


@float32_matmuls
def EVV(W, counts, previous=None, *, inner_tol=None, inner_max_iter=None):
    """M-step of EVV, ``Σ_k = λ D_k A_k D_kᵀ`` (equal volume, variable shape and orientation).

    Update (mclust ``msevv``): ``C_k = W_k / |W_k|^{1/D}``,
    ``λ = Σ_k |W_k|^{1/D} / Σ_k n_k``, ``Σ_k = λ C_k``.

    Parameters
    ----------
    W : array, shape (K, D, D)
    counts : array, shape (K,)
    previous, inner_tol, inner_max_iter
        Ignored.

    Returns
    -------
    array, shape (K, D, D)
    """
    volumes = jnp.exp(_log_volumes(W))
    lam = jnp.sum(volumes) / jnp.sum(counts)
    return W * (lam / volumes)[:, None, None]


# ----------------------------------------------------------------------------- iterative


def _variable_volume_loop(B, counts, previous, inner_tol, inner_max_iter):
    """Common shape, variable volumes on axis-aligned statistics ``B (K, D)`` (VEI; VEV in eigenbases).

    Alternates ``A ∝ Σ_k B_k / λ_k`` (normalised to ``|A| = 1``) and
    ``λ_k = Σ_j B_kj / A_j / (D n_k)``, starting from the volumes of
    ``previous`` (``(K, D)`` variances in the same order as ``B``). Returns
    the variances ``λ_k A`` ``(K, D)``. (Convex in ``(log λ, log A)``: one
    optimum.)
    """
    n_features = B.shape[-1]

    def body(lam):
        shape, _ = _normalise(jnp.sum(B / lam[:, None], axis=0))
        lam = jnp.sum(B / shape, axis=-1) / (n_features * counts)
        return lam, lam[:, None] * shape

    lam0 = jnp.exp(_log_geomean(previous))
    return _iterate(body, lam0, previous, inner_tol, inner_max_iter)


@float32_matmuls
def VEI(diag_W, counts, previous, *, inner_tol, inner_max_iter):
    """M-step of VEI, ``Σ_k = λ_k A`` (variable volume, equal axis-aligned shape).

    Iterative (mclust ``msvei``): with ``B_k = diag(W_k)``, alternate
    ``A = diag(Σ_k B_k / λ_k)`` normalised to ``|A| = 1`` and
    ``λ_k = tr(B_k A⁻¹) / (D n_k)``. mclust starts from ``A = I`` and
    updates ``λ`` first; this starts from the volumes
    ``λ_k = |previous_k|^{1/D}`` and updates ``A`` first, so every iteration
    increases ``Q`` from the previous iterate. The
    problem is convex in ``(log λ, log A)``, so the limit does not depend on
    the start.

    Parameters
    ----------
    diag_W : array, shape (K, D)
    counts : array, shape (K,)
    previous : array, shape (K, D)
        Previous EM iterate's variances.
    inner_tol : scalar
        Stop when the largest relative change of the variances is at most this.
    inner_max_iter : int scalar
        At most this many iterations (at least one).

    Returns
    -------
    array, shape (K, D)
        Variances ``λ_k A``.
    """
    return _variable_volume_loop(diag_W, counts, previous, inner_tol, inner_max_iter)


@float32_matmuls
def VEV(W, counts, previous, *, inner_tol, inner_max_iter):
    """M-step of VEV, ``Σ_k = λ_k D_k A D_kᵀ`` (equal shape, variable volume and orientation).

    Iterative (mclust ``msvev``): eigendecompose ``W_k = L_k Ω_k L_kᵀ``
    (eigenvalues in the same order in every component; ``D_k = L_k`` is the
    optimal orientation for every shape) and alternate
    ``A = Σ_k Ω_k / λ_k`` normalised and ``λ_k = tr(Ω_k A⁻¹) / (D n_k)``.
    mclust starts from EEV's shape ``A ∝ Σ_k Ω_k``; this starts from the
    volumes of ``previous`` and updates ``A`` first (monotone from the
    previous iterate; convex in the logs, so the same limit).

    Parameters
    ----------
    W : array, shape (K, D, D)
    counts : array, shape (K,)
    previous : array, shape (K, D, D)
    inner_tol, inner_max_iter
        As in :func:`VEI` (the change is measured on ``λ_k A``).

    Returns
    -------
    array, shape (K, D, D)
    """
    omega, L = _eigh(W)
    # previous's eigenvalues (ascending, like omega): its volumes, and the reference for the first change.
    previous_eigenvalues = _floored_eigenvalues(jnp.linalg.eigvalsh(previous))
    variances = _variable_volume_loop(omega, counts, previous_eigenvalues, inner_tol, inner_max_iter)
    return _recompose(L, variances)


@float32_matmuls
def VEE(W, counts, previous, *, inner_tol, inner_max_iter):
    """M-step of VEE, ``Σ_k = λ_k C`` with ``|C| = 1`` (variable volume, equal shape and orientation).

    Iterative (mclust ``msvee``; Celeux & Govaert 1995): alternate
    ``C = Σ_k W_k / λ_k`` normalised to ``|C| = 1`` and
    ``λ_k = tr(W_k C⁻¹) / (D n_k)``, starting (like mclust, which starts
    from ``λ_k = 1``) with the ``C`` update, from the volumes of ``previous``.
    The objective is geodesically convex, so the limit does not depend on
    the start.

    Parameters
    ----------
    W : array, shape (K, D, D)
    counts : array, shape (K,)
    previous : array, shape (K, D, D)
    inner_tol, inner_max_iter
        As in :func:`VEI`.

    Returns
    -------
    array, shape (K, D, D)
        ``λ_k C``.
    """
    n_features = W.shape[-1]

    def body(lam):
        S = jnp.sum(W / lam[:, None, None], axis=0)
        c, V = _eigh(S)
        _, g = _normalise(c)
        # tr(W_k C⁻¹) = Σ_j (Vᵀ W_k V)_jj g / c_j
        projected = jnp.einsum("ij,kil,lj->kj", V, W, V)
        lam = jnp.sum(projected * (g / c), axis=-1) / (n_features * counts)
        return lam, lam[:, None, None] * (S / g)

    lam0 = jnp.exp(_log_volumes(previous))
    return _iterate(body, lam0, previous, inner_tol, inner_max_iter)


def _polar(F):
    """Orthogonal polar factor ``U Vᵀ`` of ``F = U S Vᵀ``: the orthogonal ``X`` maximising ``tr(Xᵀ F)``."""
    U, _, Vh = jnp.linalg.svd(F)
    return U @ Vh


def _common_orientation(W, counts, previous, inner_tol, inner_max_iter, equal_volume):
    """EVE (``equal_volume``) and VVE: ``Σ_k = D Ψ_k Dᵀ`` with one orthogonal ``D``.

    Given ``D``, ``V_k = diag(Dᵀ W_k D)`` gives the closed forms (EVE:
    ``A_k = V_k / |V_k|^{1/D}``, ``λ = Σ_k |V_k|^{1/D} / N``; VVE:
    ``Ψ_k = V_k / n_k``). Given the shapes, ``D`` takes one MM1 and one MM2
    step of Browne & McNicholas (2014) on ``f(D) = Σ_k tr(Dᵀ W_k D P_k)``
    with ``P_k = Ψ_k⁻¹`` (EVE: ``A_k⁻¹``; the common ``1/λ`` does not
    matter).
    """
    K = W.shape[0]
    margin = 1.0 + _MM_MARGIN
    # MM1 majorises W_k by ω_k I, ω_k ≥ λ_max(W_k).
    omega = jnp.linalg.eigvalsh(W)[:, -1] * margin

    # Start: D from the eigenvectors of a generic combination of the previous
    # (volume-normalised) covariances, the shapes from diag(Dᵀ Σ_k D).
    weights = 1.0 + _ORIENTATION_WEIGHT_STEP * jnp.arange(K, dtype=W.dtype)
    scaled = previous * (weights * jnp.exp(-_log_volumes(previous)))[:, None, None]
    _, D0 = jnp.linalg.eigh(jnp.sum(scaled, axis=0))

    previous_variances = _positive(jnp.einsum("ij,kil,lj->kj", D0, previous, D0))
    P0 = 1.0 / (_normalise(previous_variances)[0] if equal_volume else previous_variances)
    total = jnp.sum(counts)

    def body(state):
        D, P = state
        # MM1: maximise tr(Xᵀ F1), F1 = Σ_k (ω_k I − W_k) D P_k.
        WD = jnp.einsum("kij,jl->kil", W, D)
        F1 = jnp.einsum("kil,kl->il", omega[:, None, None] * D[None] - WD, P)
        D = _polar(F1)
        # MM2 (on Dᵀ): majorise P_k by α_k I; maximise tr(Xᵀ F2), F2 = Σ_k W_k D (α_k I − P_k).
        alpha = jnp.max(P, axis=-1) * margin
        WD = jnp.einsum("kij,jl->kil", W, D)
        F2 = jnp.einsum("kil,kl->il", WD, alpha[:, None] - P)
        D = _polar(F2)
        V = _positive(jnp.einsum("ij,kil,lj->kj", D, W, D))
        if equal_volume:
            shapes, volumes = _normalise(V)
            variances = (jnp.sum(volumes) / total) * shapes
            P = 1.0 / shapes
        else:
            variances = V / counts[:, None]
            P = 1.0 / variances
        return (D, P), _recompose(D, variances)

    return _iterate(body, (D0, P0), previous, inner_tol, inner_max_iter)


@float32_matmuls
def EVE(W, counts, previous, *, inner_tol, inner_max_iter):
    """M-step of EVE, ``Σ_k = λ D A_k Dᵀ`` (equal volume and orientation, variable shape).

    Iterative (mclust ``mseve``; Browne & McNicholas 2014): given ``D``,
    ``V_k = diag(Dᵀ W_k D)``, ``A_k = V_k / |V_k|^{1/D}``,
    ``λ = Σ_k |V_k|^{1/D} / Σ_k n_k``. Given the shapes, ``D`` decreases
    ``Σ_k tr(W_k D A_k⁻¹ Dᵀ)`` by one MM1 step (``W_k ≤ ω_k I``, ``ω_k`` the
    largest eigenvalue) and one MM2 step (``A_k⁻¹ ≤ α_k I``), each an SVD.
    The volume is common, so this objective is exactly the conditional one:
    mclust's update and the exact maximiser coincide. mclust starts from
    ``D = I``, ``A_k = I``; this starts from the orientation (eigenvectors of
    a combination of the ``previous`` covariances) and shapes
    ``diag(Dᵀ previous_k D)`` of ``previous``, so every iteration increases
    ``Q`` from the previous iterate (``previous = I`` reproduces mclust's
    start). The problem in ``D`` is not convex: the limit is a stationary
    point that can depend on the start.

    Parameters
    ----------
    W : array, shape (K, D, D)
    counts : array, shape (K,)
    previous : array, shape (K, D, D)
    inner_tol, inner_max_iter
        As in :func:`VEI` (change measured on the covariances).

    Returns
    -------
    array, shape (K, D, D)
    """
    return _common_orientation(W, counts, previous, inner_tol, inner_max_iter, equal_volume=True)


@float32_matmuls
def VVE(W, counts, previous, *, inner_tol, inner_max_iter):
    """M-step of VVE, ``Σ_k = λ_k D A_k Dᵀ`` (equal orientation, variable volume and shape).

    Iterative: given ``D``, ``Ψ_k = λ_k A_k = diag(Dᵀ W_k D) / n_k``; given
    the ``Ψ_k``, ``D`` decreases ``Σ_k tr(W_k D Ψ_k⁻¹ Dᵀ)`` by one MM1 and
    one MM2 step of Browne & McNicholas (2014), as in :func:`EVE`.

    This is the exact conditional maximiser, and it differs from mclust's
    ``msvve``: mclust's orientation step minimises
    ``Σ_k tr(W_k D A_k⁻¹ Dᵀ)``, leaving out the ``1/λ_k`` weights, which is
    not the conditional objective when the volumes differ (its M-step can
    decrease the log-likelihood). Here the MM weights are ``1/(λ_k A_k)``.
    The two agree when all ``λ_k`` are equal. Otherwise mclust's result is not
    a stationary point of ``Q`` over ``D``: started from it, this M-step
    increases ``Q`` (in the tests, also from mclust's own start ``D = I``).
    Start, stopping and non-convexity as in :func:`EVE`.

    Parameters
    ----------
    W : array, shape (K, D, D)
    counts : array, shape (K,)
    previous : array, shape (K, D, D)
    inner_tol, inner_max_iter
        As in :func:`VEI` (change measured on the covariances).

    Returns
    -------
    array, shape (K, D, D)
    """
    return _common_orientation(W, counts, previous, inner_tol, inner_max_iter, equal_volume=False)


MSTEPS = {
    "EII": EII,
    "EEI": EEI,
    "EVI": EVI,
    "VEI": VEI,
    "EEV": EEV,
    "EVV": EVV,
    "VEV": VEV,
    "VEE": VEE,
    "EVE": EVE,
    "VVE": VVE,
}
