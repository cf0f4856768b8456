"""Eigen-decomposition coordinates of mclust's 14 parsimonious covariance models.

Each component's covariance is ``Σ_k = λ_k D_k A_k D_kᵀ`` (Celeux & Govaert,
1995; R's mclust): volume ``λ_k > 0``, shape ``A_k`` diagonal positive with
``det A_k = 1``, orientation ``D_k`` orthogonal. A model is named by three
letters for volume, shape, orientation: ``E`` equal across components, ``V``
variable, ``I`` identity (shape ``A = I``, orientation ``D = I``); see
:data:`~jaxgmm.models.MODELS`. ``λ_k = det(Σ_k)^(1/D)`` is the geometric mean of the
eigenvalues and ``λ_k A_k`` are the eigenvalues.

Unconstrained coordinates (a dict; a key is present only where its letter is
not ``I``; ``K`` components, ``D`` features):

* ``"log_volume"``: ``()`` for E, ``(K,)`` for V; ``λ = exp(log_volume)``.
* ``"log_shape"``: ``(D,)`` for E, ``(K, D)`` for V;
  ``A = exp(v − mean(v))``, so ``det A = 1`` for every real ``v`` (one
  direction, adding a constant to ``v``, changes nothing).
* ``"orientation"``: ``(D, D)`` for E, ``(K, D, D)`` for V; any real
  (non-singular) matrix ``M``; ``D`` is the ``Q`` of ``M = QR`` with the signs
  chosen so that ``R`` has a positive diagonal. An orthogonal ``M`` maps to
  itself, so :func:`to_coords` stores the eigenvectors as they are. The
  ``D² − D(D−1)/2`` directions of ``R`` change nothing.

:func:`from_coords` maps coordinates to ``(K, D, D)`` matrices,
:func:`to_coords` is its inverse on matrices with the model's structure,
:func:`decompose` returns ``(λ_k, diag A_k, D_k)``, and
:func:`structure_error` (numpy, for validating input at the edge) says which
constraint a set of matrices breaks.

Examples
--------
>>> import jax.numpy as jnp
>>> coords = {"log_volume": jnp.log(jnp.array([1.0, 4.0])), "log_shape": jnp.log(jnp.array([2.0, 0.5]))}
>>> cov = from_coords("VEI", coords, 2, 2)
>>> cov.tolist()
[[[2.0, 0.0], [0.0, 0.5]], [[8.0, 0.0], [0.0, 2.0]]]
>>> volumes, shapes, orientations = decompose("VEI", cov)
>>> [round(float(v), 4) for v in volumes], [round(float(a), 4) for a in shapes[1]]
([1.0, 4.0], [2.0, 0.5])
>>> bool(jnp.allclose(from_coords("VEI", to_coords("VEI", cov), 2, 2), cov))
True
>>> structure_error("EEI", cov)
"components 0 and 1 have different volumes (det^(1/D) 1 vs 4), but model 'EEI' has equal volumes"
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.matmul_precision import float32_matmuls

MODELS = (
    "EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE",
    "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV",
)  # fmt: skip


def _check_letters(letters: str) -> None:
    if letters not in MODELS:
        raise ValueError(f"unknown covariance model {letters!r}; expected one of {', '.join(MODELS)}")


def coord_shapes(letters: str, n_components: int, n_features: int) -> dict:
    """The shape of each coordinate of model ``letters`` (the keys :func:`from_coords` expects).

    Examples
    --------
    >>> coord_shapes("EVE", 3, 2)
    {'log_volume': (), 'log_shape': (3, 2), 'orientation': (2, 2)}
    """
    _check_letters(letters)
    K, D = n_components, n_features
    vol, shape, orient = letters
    shapes = {"log_volume": () if vol == "E" else (K,)}
    if shape != "I":
        shapes["log_shape"] = (D,) if shape == "E" else (K, D)
    if orient != "I":
        shapes["orientation"] = (D, D) if orient == "E" else (K, D, D)
    return shapes


def orthogonal_from_matrix(M: jax.Array) -> jax.Array:
    """The ``Q`` of ``M = QR`` (``(..., D, D)``), with signs making ``diag R`` positive.

    Orthogonal ``M`` maps to itself; a zero on the diagonal of ``R`` (singular
    ``M``) keeps its column's sign.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> (orthogonal_from_matrix(jnp.array([[0.0, -2.0], [3.0, 0.0]])) + 0.0).tolist()
    [[0.0, -1.0], [1.0, 0.0]]
    """
    Q, R = jnp.linalg.qr(M)
    signs = jnp.where(jnp.diagonal(R, axis1=-2, axis2=-1) < 0, -1.0, 1.0).astype(Q.dtype)
    return Q * signs[..., None, :]


@float32_matmuls
def _components(letters: str, coords: dict, n_components: int, n_features: int):
    """``(log λ (K,), diag A (K, D), D (K, D, D) or None for orientation I)`` from coordinates."""
    expected = coord_shapes(letters, n_components, n_features)
    if set(coords) != set(expected):
        raise ValueError(f"model {letters!r} takes coordinates {sorted(expected)}, got {sorted(coords)}")
    for name, shape in expected.items():
        if tuple(jnp.shape(coords[name])) != shape:
            got = jnp.shape(coords[name])
            raise ValueError(f"coordinate {name!r} of model {letters!r} has shape {got}, expected {shape}")
    K, D = n_components, n_features
    vol, shape, orient = letters
    log_volume = jnp.asarray(coords["log_volume"])
    dtype = jnp.result_type(*[jnp.asarray(c).dtype for c in coords.values()])
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    log_volume = jnp.broadcast_to(log_volume.astype(dtype), (K,))
    if shape == "I":
        shapes = jnp.ones((K, D), dtype)
    else:
        v = jnp.asarray(coords["log_shape"]).astype(dtype)
        shapes = jnp.broadcast_to(jnp.exp(v - jnp.mean(v, axis=-1, keepdims=True)), (K, D))
    if orient == "I":
        orientations = None
    else:
        orientations = jnp.broadcast_to(
            orthogonal_from_matrix(jnp.asarray(coords["orientation"]).astype(dtype)), (K, D, D)
        )
    return log_volume, shapes, orientations


@float32_matmuls
def from_coords(letters: str, coords: dict, n_components: int, n_features: int) -> jax.Array:
    """Covariance matrices ``Σ_k = λ_k D_k A_k D_kᵀ`` ``(K, D, D)`` from eigen coordinates.

    Parameters
    ----------
    letters : str
        One of :data:`~jaxgmm.models.MODELS` (static).
    coords : dict
        The coordinates of the module docstring; any real values (orientation
        matrices must be non-singular).
    n_components, n_features : int
        ``K`` and ``D`` (static; shared coordinates do not carry ``K``).

    Returns
    -------
    array, shape (K, D, D)
        Symmetric positive-definite matrices, symmetrised as ``(S + Sᵀ)/2``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from_coords("EII", {"log_volume": jnp.log(jnp.array(2.0))}, 2, 1).tolist()
    [[[2.0]], [[2.0]]]
    """
    log_volume, shapes, orientations = _components(letters, coords, n_components, n_features)
    eigenvalues = jnp.exp(log_volume)[:, None] * shapes
    if orientations is None:
        cov = eigenvalues[:, :, None] * jnp.eye(n_features, dtype=eigenvalues.dtype)
    else:
        cov = jnp.einsum("kij,kj,klj->kil", orientations, eigenvalues, orientations)
    return 0.5 * (cov + jnp.swapaxes(cov, -1, -2))


@float32_matmuls
def to_coords(letters: str, covariances: jax.Array) -> dict:
    """Eigen coordinates of ``(K, D, D)`` matrices that have model ``letters``' structure.

    ``from_coords(letters, to_coords(letters, S), K, D)`` reproduces ``S``.
    Volumes are ``exp(mean log eigenvalues)`` (never a determinant, which
    underflows in float32). Orientation V: each ``Σ_k``'s eigenvectors in
    ascending eigenvalue order, so a common shape (EEV, VEV) is the same sorted
    vector for all ``k``; it is averaged over ``k`` in log space. Orientation E:
    one ``D`` from the eigenvectors of ``Σ_k (k+1) Σ_k / λ_k``, and
    ``A_k = diag(Dᵀ Σ_k D) / λ_k``. Orientation I: ``A_k = diag(Σ_k) / λ_k``.
    Shared quantities are averaged over ``k`` (in log space); log-shapes are
    returned with mean zero. On matrices without the structure the result is a
    projection onto the model, not a best fit.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> c = to_coords("VII", jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[4.0, 0.0], [0.0, 4.0]]]))
    >>> [round(float(v), 4) for v in c["log_volume"]]
    [0.0, 1.3863]
    """
    _check_letters(letters)
    cov = jnp.asarray(covariances)
    if not jnp.issubdtype(cov.dtype, jnp.floating):
        cov = cov.astype(jnp.result_type(float))
    K = cov.shape[-3]
    vol, shape, orient = letters
    eigenvalues, eigenvectors = jnp.linalg.eigh(cov)
    log_eigenvalues = jnp.log(eigenvalues)
    log_volume = jnp.mean(log_eigenvalues, axis=-1)  # (K,)
    coords = {"log_volume": jnp.mean(log_volume) if vol == "E" else log_volume}
    if shape == "I":
        return coords
    if orient == "I":
        log_shape = jnp.log(jnp.diagonal(cov, axis1=-2, axis2=-1))
    elif orient == "E":
        weights = jnp.arange(1, K + 1, dtype=cov.dtype) * jnp.exp(-log_volume)
        _, common = jnp.linalg.eigh(jnp.einsum("k,kij->ij", weights, cov))
        log_shape = jnp.log(jnp.einsum("ji,kjl,li->ki", common, cov, common))
        coords["orientation"] = common
    else:
        log_shape = log_eigenvalues
        coords["orientation"] = eigenvectors
    log_shape = log_shape - jnp.mean(log_shape, axis=-1, keepdims=True)
    coords["log_shape"] = jnp.mean(log_shape, axis=0) if shape == "E" else log_shape
    return coords


def decompose(letters: str, covariances: jax.Array):
    """``(volumes (K,), shapes (K, D), orientations (K, D, D))``: ``λ_k``, ``diag A_k``, ``D_k``.

    The values :func:`to_coords` encodes, with shared ones broadcast to ``K``
    (orientation I gives identity matrices, shape I ones);
    ``Σ_k = λ_k D_k diag(A_k) D_kᵀ``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> vol, shp, ori = decompose("EEE", jnp.array([[[2.0, 0.0], [0.0, 8.0]]]))
    >>> [round(float(v), 4) for v in vol], [round(float(a), 4) for a in shp[0]]
    ([4.0], [0.5, 2.0])
    """
    cov = jnp.asarray(covariances)
    K, D = cov.shape[-3], cov.shape[-1]
    log_volume, shapes, orientations = _components(letters, to_coords(letters, cov), K, D)
    if orientations is None:
        orientations = jnp.broadcast_to(jnp.eye(D, dtype=shapes.dtype), (K, D, D))
    return jnp.exp(log_volume), shapes, orientations


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def structure_error(letters: str, covariances, rtol: float = 1e-6) -> str | None:
    """Whether ``(K, D, D)`` matrices have model ``letters``' structure (numpy, float64; not traced).

    Returns ``None`` if they do, to relative tolerance ``rtol``, else a
    one-line message naming the first violated constraint and the
    component(s). Checked in order: equal volumes ``det(Σ_k)^(1/D)`` (volume
    E); equal sorted normalised eigenvalues (shape E) or all eigenvalues of a
    component equal (shape I, which also makes the orientation irrelevant);
    common orientation, i.e. ``Σ_j Σ_k = Σ_k Σ_j`` relative to
    ``‖Σ_j‖‖Σ_k‖`` for every pair (orientation E), or zero off-diagonal
    entries relative to ``sqrt(Σ_ii Σ_jj)`` (orientation I); finally, for a
    common shape with a common or identity orientation (EEE, VEE, EEI, VEI),
    that the shape sits on the same axes: equal ``Σ_k / λ_k``. Symmetric
    positive definiteness is assumed (checked elsewhere).

    Examples
    --------
    >>> import numpy as np
    >>> print(structure_error("VVI", np.array([[[1.0, 0.5], [0.5, 1.0]]])))
    component 0 is not diagonal (entry (0, 1) is 0.5 of sqrt(Σ_ii Σ_jj)), but model 'VVI' has diagonal ...
    """
    _check_letters(letters)
    S = np.asarray(covariances, dtype=np.float64)
    if S.ndim != 3 or S.shape[-1] != S.shape[-2]:
        raise ValueError(f"expected covariance matrices of shape (K, D, D), got {S.shape}")
    S = 0.5 * (S + np.swapaxes(S, -1, -2))
    K = S.shape[0]
    vol, shape, orient = letters
    model = f"model '{letters}'"
    eigenvalues = np.linalg.eigvalsh(S)  # ascending
    volumes = np.exp(np.mean(np.log(eigenvalues), axis=-1))
    normalised = eigenvalues / volumes[:, None]

    if vol == "E":
        for k in range(1, K):
            if abs(volumes[k] - volumes[0]) > rtol * max(volumes[0], volumes[k]):
                return (
                    f"components 0 and {k} have different volumes (det^(1/D) {volumes[0]:.4g} vs "
                    f"{volumes[k]:.4g}), but {model} has equal volumes"
                )
    if shape == "I":
        for k in range(K):
            if normalised[k, -1] - normalised[k, 0] > rtol * normalised[k, -1]:
                return (
                    f"component {k} has unequal eigenvalues ({eigenvalues[k, 0]:.4g} to "
                    f"{eigenvalues[k, -1]:.4g}), but {model} has spherical covariances (shape I)"
                )
        return None
    if shape == "E":
        for k in range(1, K):
            scale = max(normalised[0].max(), normalised[k].max())
            if np.max(np.abs(normalised[k] - normalised[0])) > rtol * scale:
                return (
                    f"components 0 and {k} have different shapes (normalised eigenvalues "
                    f"{_fmt(normalised[0])} vs {_fmt(normalised[k])}), but {model} has equal shapes"
                )
    if orient == "I":
        diag = np.diagonal(S, axis1=-2, axis2=-1)
        for k in range(K):
            ratio = np.abs(S[k]) / np.sqrt(np.outer(diag[k], diag[k]))
            np.fill_diagonal(ratio, 0.0)
            i, j = np.unravel_index(np.argmax(ratio), ratio.shape)
            if ratio[i, j] > rtol:
                i, j = min(i, j), max(i, j)
                return (
                    f"component {k} is not diagonal (entry ({i}, {j}) is {ratio[i, j]:.3g} of "
                    f"sqrt(Σ_ii Σ_jj)), but {model} has diagonal covariances (orientation I)"
                )
        axes = diag / volumes[:, None]
    elif orient == "E":
        norms = np.linalg.norm(S, axis=(-2, -1))
        for j in range(K):
            for k in range(j + 1, K):
                commutator = np.linalg.norm(S[j] @ S[k] - S[k] @ S[j]) / (norms[j] * norms[k])
                if commutator > rtol:
                    return (
                        f"components {j} and {k} have different orientations (they do not commute: "
                        f"‖Σ_jΣ_k − Σ_kΣ_j‖/(‖Σ_j‖‖Σ_k‖) = {commutator:.3g}), but {model} has a common "
                        "orientation"
                    )
        axes = (S / volumes[:, None, None]).reshape(K, -1)
    if shape == "E" and orient != "V":
        for k in range(1, K):
            scale = max(np.abs(axes[0]).max(), np.abs(axes[k]).max())
            if np.max(np.abs(axes[k] - axes[0])) > rtol * scale:
                return (
                    f"components 0 and {k} have the same normalised eigenvalues but on different axes "
                    f"(Σ_k/λ_k differ), but {model} has equal shapes"
                )
    return None
