"""The four ways a covariance model stores its matrices, and what the E-step needs of each.

Every covariance model (:mod:`jaxgmm.models.table`) stores its covariances in
one of scikit-learn's four layouts; the kernels of the E-step, the density,
sampling and the sufficient statistics work on the layout, never on a model's
name:

============  ===============  ============================================  =========================
layout        shape            ``U`` (precision Cholesky factor)             statistics ``scatters``
============  ===============  ============================================  =========================
``full``      ``(K, D, D)``    upper triangular, ``Σ_k⁻¹ = U_k U_kᵀ``         ``(K, D, D)``
``tied``      ``(D, D)``       upper triangular, one for all components      ``(D, D)`` summed over k
``diag``      ``(K, D)``       ``1 / σ_kd``                                  ``(K, D)`` diagonals
``spherical`` ``(K,)``         ``1 / σ_k``                                   ``(K,)`` traces
============  ===============  ============================================  =========================

A model with fewer free parameters than its layout (mclust's EII is stored
``spherical`` with equal variances, EEI ``diag`` with equal rows, VEV ``full``
with a common shape) keeps its constraint through its M-step; the layout
only says how to evaluate and accumulate.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.matmul_precision import float32_matmuls


@dataclasses.dataclass(frozen=True)
class Storage:
    """One covariance layout: shapes and the layout-specific linear algebra.

    ``kind`` is one of ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``.
    Methods take and return JAX arrays (jit/vmap-safe) unless they say numpy.

    Examples
    --------
    >>> from jaxgmm.models import get_model
    >>> tied = get_model("EEE").storage                        # one (D, D) matrix for every component
    >>> tied.kind, tied.is_matrix
    ('tied', True)
    """

    kind: str

    @property
    def is_matrix(self) -> bool:
        """Whether covariances are full matrices (``full``, ``tied``) rather than variances."""
        return self.kind in ("full", "tied")

    @property
    def per_component(self) -> bool:
        """Whether each component has its own covariance array (all but ``tied``)."""
        return self.kind != "tied"

    def shape(self, n_components: int, n_features: int) -> tuple:
        """The covariances' shape for ``K`` components and ``D`` features."""
        return {
            "full": (n_components, n_features, n_features),
            "tied": (n_features, n_features),
            "diag": (n_components, n_features),
            "spherical": (n_components,),
        }[self.kind]

    # --- the precision factor and the density ---------------------------------------------

    def precision_cholesky(self, covariances: jax.Array) -> jax.Array:
        """scikit-learn's ``precisions_cholesky_``: upper triangular ``U = L⁻ᵀ`` (``Σ = L Lᵀ``) for
        matrices, ``1/σ`` for variances. A non-positive-definite covariance gives NaN (inputs are
        checked at the edges)."""
        if self.is_matrix:
            chol = jnp.linalg.cholesky(covariances)
            eye = jnp.broadcast_to(jnp.eye(chol.shape[-1], dtype=chol.dtype), chol.shape)
            inv_chol = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
            return jnp.swapaxes(inv_chol, -1, -2)
        return jax.lax.rsqrt(covariances)

    @float32_matmuls
    def covariance_from_precision_cholesky(self, prec_chol: jax.Array) -> jax.Array:
        """Inverse of :meth:`precision_cholesky`: ``Σ = (U Uᵀ)⁻¹``."""
        if self.is_matrix:
            eye = jnp.broadcast_to(jnp.eye(prec_chol.shape[-1], dtype=prec_chol.dtype), prec_chol.shape)
            inv_u = jax.scipy.linalg.solve_triangular(prec_chol, eye, lower=False)  # Σ = U⁻ᵀ U⁻¹
            return jnp.swapaxes(inv_u, -1, -2) @ inv_u
        return 1.0 / prec_chol**2

    @float32_matmuls
    def precisions(self, prec_chol: jax.Array) -> jax.Array:
        """Precision matrices ``U Uᵀ`` (inverse variances for variance layouts)."""
        if self.is_matrix:
            return prec_chol @ jnp.swapaxes(prec_chol, -1, -2)
        return prec_chol**2

    @float32_matmuls
    def precision_matrices(self, prec_chol: jax.Array) -> jax.Array:
        """Matrix layouts: ``(K', D, D)`` precisions, ``K' = K`` for ``full`` and ``1`` for ``tied``."""
        precision = self.precisions(prec_chol)
        return precision.reshape((-1,) + precision.shape[-2:])

    def per_coordinate(self, values: jax.Array, n_features: int) -> jax.Array:
        """Variance layouts: ``(K, D)`` per-feature values from the layout's ``(K, D)`` (diag) or ``(K,)``
        (spherical), e.g. the precision factor of each feature."""
        if self.kind == "diag":
            return values
        return jnp.broadcast_to(values[..., None], values.shape + (n_features,))

    def reduce_scatter(self, per_component: jax.Array) -> jax.Array:
        """This layout's ``scatters`` from per-component ones: ``(K, D, D)`` matrices for matrix layouts
        (summed over components for ``tied``), ``(K, D)`` diagonals for variance layouts (summed over
        features for ``spherical``)."""
        if self.kind in ("full", "diag"):
            return per_component
        return jnp.sum(per_component, axis=0 if self.is_matrix else -1)

    def log_det_precision_cholesky(self, prec_chol: jax.Array, n_features: int) -> jax.Array:
        """``log det U`` per component (a scalar for ``tied``): half the precision's log-determinant."""
        if self.is_matrix:
            return jnp.sum(jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)
        if self.kind == "diag":
            return jnp.sum(jnp.log(prec_chol), axis=-1)
        return n_features * jnp.log(prec_chol)

    @float32_matmuls
    def squared_mahalanobis(self, diff: jax.Array, prec_chol: jax.Array) -> jax.Array:
        """``‖(x_n − μ_k)ᵀ U_k‖²`` from ``diff (N, K, D) = x_n − μ_k``; returns ``(N, K)``."""
        if self.kind == "full":
            y = jnp.einsum("nkd,kde->nke", diff, prec_chol)
        elif self.kind == "tied":
            y = diff @ prec_chol
        elif self.kind == "diag":
            y = diff * prec_chol
        else:
            return jnp.sum(diff * diff, axis=-1) * prec_chol**2
        return jnp.sum(y * y, axis=-1)

    # --- views of the covariances ---------------------------------------------------------

    def matrices(self, covariances: jax.Array, n_components: int, n_features: int) -> jax.Array:
        """The ``(K, D, D)`` covariance matrices (numpy in, numpy out; JAX in, JAX out)."""
        xp = np if isinstance(covariances, np.ndarray) else jnp
        eye = xp.eye(n_features, dtype=covariances.dtype)
        if self.kind == "full":
            return covariances
        if self.kind == "tied":
            return xp.broadcast_to(covariances, (n_components, n_features, n_features))
        if self.kind == "diag":
            return covariances[:, :, None] * eye
        return covariances[:, None, None] * eye

    def from_matrices(self, matrices: jax.Array) -> jax.Array:
        """Covariances in this layout from ``(K, D, D)`` matrices that have its structure."""
        if self.kind == "full":
            return matrices
        if self.kind == "tied":
            return matrices[0]
        diagonal = jnp.diagonal(matrices, axis1=-2, axis2=-1)
        return diagonal if self.kind == "diag" else jnp.mean(diagonal, axis=-1)

    def switch_off(self, covariances: jax.Array, active: jax.Array) -> jax.Array:
        """The identity in place of the covariances of components not ``active (K,)`` (``tied``:
        unchanged, it has no per-component part)."""
        if not self.per_component:
            return covariances
        identity = self.add_to_diagonal(jnp.zeros_like(covariances), 1.0)
        return jnp.where(active.reshape((-1,) + (1,) * (covariances.ndim - 1)), covariances, identity)

    def select_components(self, covariances, index):
        """The covariances of the components ``index`` (an integer array)."""
        return covariances[index] if self.per_component else covariances

    def add_to_diagonal(self, covariances: jax.Array, value) -> jax.Array:
        """``Σ + value·I`` in this layout."""
        if self.is_matrix:
            return covariances + value * jnp.eye(covariances.shape[-1], dtype=covariances.dtype)
        return covariances + value

    def cholesky_noise(self, covariances: jax.Array, labels: jax.Array, noise: jax.Array) -> jax.Array:
        """``L_{z_n} ε_n`` for standard normal ``noise (N, D)`` and components ``labels (N,)``."""
        if self.kind == "full":
            return jnp.einsum("nde,ne->nd", jnp.linalg.cholesky(covariances)[labels], noise)
        if self.kind == "tied":
            return noise @ jnp.linalg.cholesky(covariances).T
        if self.kind == "diag":
            return noise * jnp.sqrt(covariances[labels])
        return noise * jnp.sqrt(covariances[labels])[:, None]

    # --- sufficient statistics ------------------------------------------------------------

    def scatter(self, weighted_resp: jax.Array, diff: jax.Array) -> jax.Array:
        """``Σ_n w_n r_nk (x_n − c_k)(x_n − c_k)ᵀ`` reduced to this layout's ``scatters``."""
        if self.kind == "full":
            return jnp.einsum("nk,nkd,nke->kde", weighted_resp, diff, diff)
        if self.kind == "tied":
            return jnp.einsum("nk,nkd,nke->de", weighted_resp, diff, diff)
        # Variance layouts as sums over rows of elementwise products: XLA:CPU ran the equivalent einsums as
        # batched products behind two (N, K, D) transposes (on mid with missing values, 100,000 × 16,
        # K = 16, spherical 1.4× slower).
        if self.kind == "diag":
            return jnp.sum(weighted_resp[:, :, None] * diff * diff, axis=0)
        return jnp.sum(weighted_resp * jnp.sum(diff * diff, axis=-1), axis=0)

    def shift_scatter(self, counts: jax.Array, sums: jax.Array, e: jax.Array) -> jax.Array:
        """What moving the centres by ``−e (K, D)`` adds to ``scatters``:
        ``S1 eᵀ + e S1ᵀ + n e eᵀ``, reduced to this layout."""
        if self.is_matrix:
            out = "kde" if self.kind == "full" else "de"
            cross = jnp.einsum(f"kd,ke->{out}", sums, e)
            return cross + jnp.swapaxes(cross, -1, -2) + jnp.einsum(f"k,kd,ke->{out}", counts, e, e)
        if self.kind == "diag":
            return 2 * sums * e + counts[:, None] * e * e
        return 2 * jnp.sum(sums * e, axis=-1) + counts * jnp.sum(e * e, axis=-1)

    def scatter_of_covariances(self, weights: jax.Array, covariances: jax.Array, n_features: int) -> jax.Array:
        """Scatters about the means of rows with these covariances and total weights ``(K,)``."""
        if self.kind == "full":
            return weights[:, None, None] * covariances
        if self.kind == "tied":
            return covariances * jnp.sum(weights)
        if self.kind == "diag":
            return weights[:, None] * covariances
        return weights * covariances * n_features

    def per_component_sum(self, weights: jax.Array, scatter: jax.Array) -> jax.Array:
        """``weights_k · scatter`` for each component ``(K,)``, reduced as this layout's ``scatters``
        are (summed over components for ``tied``): how a prior's scatter ``(D, D)``, ``(D,)`` or
        scalar (in the units of ``SuffStats.scatters``) joins the statistics."""
        if self.kind == "tied":
            return jnp.sum(weights) * scatter
        return weights.reshape((-1,) + (1,) * jnp.ndim(scatter)) * scatter

    @float32_matmuls
    def trace_with_precision(self, scatter: jax.Array, prec_chol: jax.Array) -> jax.Array:
        """``tr(S_k Σ_k⁻¹)`` for scatters ``S`` in this layout's ``scatters`` units, with ``Σ_k⁻¹ = U_k U_kᵀ``:
        ``(K,)``, or a scalar for ``tied`` (one precision, scatters summed over components)."""
        precision = self.precisions(prec_chol)
        if self.is_matrix:
            return jnp.sum(scatter * precision, axis=(-2, -1))
        if self.kind == "diag":
            return jnp.sum(scatter * precision, axis=-1)
        return scatter * precision

    def ml_covariances(self, scatters: jax.Array, counts: jax.Array, delta: jax.Array) -> jax.Array:
        """Unregularised maximum-likelihood covariances in this layout (scikit-learn's four
        estimators) from scatters about the centres ``c_k``, ``counts (K,)`` and the shift
        ``δ_k = μ_k − c_k (K, D)``: ``S2_k / N_k − δ_k δ_kᵀ``, pooled for ``tied``."""
        if self.kind == "full":
            return scatters / counts[:, None, None] - delta[:, :, None] * delta[:, None, :]
        if self.kind == "tied":
            between = jnp.einsum("k,kd,ke->de", counts, delta, delta)
            return (scatters - between) / jnp.sum(counts)
        # Rounding can leave a tiny negative variance; it is ≥ 0 mathematically.
        if self.kind == "diag":
            return jnp.maximum(scatters / counts[:, None] - delta**2, 0.0)
        return jnp.maximum((scatters / counts - jnp.sum(delta**2, axis=-1)) / delta.shape[-1], 0.0)

    # --- edges (numpy, before tracing) ----------------------------------------------------

    def check_positive_definite(self, matrices, name: str, model_name: str) -> None:
        """Raise ``ValueError`` unless ``matrices`` (numpy) are symmetric positive definite (matrix
        layouts) or positive (variance layouts)."""
        matrices = np.asarray(matrices, dtype=np.float64)
        if not self.is_matrix:
            if np.any(matrices <= 0):
                raise ValueError(f"{name} must be positive for covariance_type={model_name!r}.")
            return
        stack = matrices.reshape((-1,) + matrices.shape[-2:])
        for k, m in enumerate(stack):
            if not np.allclose(m, m.T, rtol=1e-6, atol=1e-10 * max(1.0, np.abs(m).max())):
                raise ValueError(f"{name}[{k}] is not symmetric.")
            try:
                np.linalg.cholesky(m)
            except np.linalg.LinAlgError:
                raise ValueError(f"{name}[{k}] is not positive definite.") from None

    def covariances_from_precisions(self, precisions) -> np.ndarray:
        """``Σ = Λ⁻¹`` (numpy, float64), exactly symmetric."""
        precisions = np.asarray(precisions, dtype=np.float64)
        if self.is_matrix:
            cov = np.linalg.inv(precisions)
            return (cov + np.swapaxes(cov, -1, -2)) / 2
        return 1.0 / precisions


    # --- unconstrained coordinates (for gradient fits) -----------------------------------

    def coords_from_covariances(self, covariances: jax.Array) -> jax.Array:
        """Matrix layouts: the precision's upper Cholesky factor with log diagonal, packed
        (``pack_cholesky``); variance layouts: log-variances."""
        if self.is_matrix:
            return pack_cholesky(self.precision_cholesky(covariances))
        return jnp.log(covariances)

    def precision_cholesky_from_coords(self, coords: jax.Array, n_features: int) -> jax.Array:
        """``U`` from :meth:`coords_from_covariances`' coordinates, with no matrix inverse."""
        if self.is_matrix:
            return unpack_cholesky(coords, n_features)
        return jnp.exp(-0.5 * coords)

    def covariances_from_coords(self, coords: jax.Array, n_features: int) -> jax.Array:
        """Inverse of :meth:`coords_from_covariances`."""
        if self.is_matrix:
            return self.covariance_from_precision_cholesky(unpack_cholesky(coords, n_features))
        return jnp.exp(coords)


def _triu_layout(n_features: int):
    """Static (rows, cols) of the packed upper triangle and the positions of its diagonal."""
    rows, cols = np.triu_indices(n_features)
    return rows, cols, np.flatnonzero(rows == cols)


def pack_cholesky(prec_chol: jax.Array) -> jax.Array:
    """Upper-triangular ``U (..., D, D)`` with positive diagonal → ``(..., D(D+1)/2)``, log diagonal.

    Entries are taken row by row (``numpy.triu_indices``).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> pack_cholesky(jnp.array([[1.0, 2.0], [0.0, 1.0]])).tolist()
    [0.0, 2.0, 0.0]
    """
    rows, cols, diag = _triu_layout(prec_chol.shape[-1])
    packed = prec_chol[..., rows, cols]
    return packed.at[..., diag].set(jnp.log(packed[..., diag]))


def unpack_cholesky(coords: jax.Array, n_features: int) -> jax.Array:
    """Inverse of :func:`pack_cholesky`: ``(..., D(D+1)/2)`` → upper-triangular ``U (..., D, D)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> unpack_cholesky(jnp.array([0.0, 2.0, 0.0]), 2).tolist()
    [[1.0, 2.0], [0.0, 1.0]]
    """
    rows, cols, diag = _triu_layout(n_features)
    coords = coords.at[..., diag].set(jnp.exp(coords[..., diag]))
    out = jnp.zeros(coords.shape[:-1] + (n_features, n_features), coords.dtype)
    return out.at[..., rows, cols].set(coords)


FULL, TIED, DIAG, SPHERICAL = (Storage(kind) for kind in ("full", "tied", "diag", "spherical"))
