"""Expectation–maximisation for Gaussian mixtures: ``e_step``, ``m_step``, ``em_loop``.

The seam between the two steps is the set of weighted sufficient statistics
(:class:`SuffStats`). They add up over rows, so sample weights, zero-weight
padding, row blocks, streamed data and data sharded over devices all reduce to
summing statistics before one ``m_step``.

Moments are accumulated about a per-component centre ``c_k`` (the means of
the parameters the E-step used), never raw: ``E[xxᵀ] − μμᵀ`` cancels
catastrophically in float32 for data far from the origin (scikit-learn issue
#30382). Since ``c_k`` is close to the new mean, the correction ``δ_k δ_kᵀ``
with ``δ_k = μ_k' − c_k`` is small.
"""

import dataclasses
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.density import component_log_norm, component_log_prob_from_diff
from jaxgmm.matmul_precision import float32_matmuls
from jaxgmm.params import GMMParams
from jaxgmm.xla_options import jit

# Rows per block in the E-step: bounds the (rows, K, D) intermediate to about
# this many elements so memory stays flat in N. On CPU blocks stay cache-sized
# (4 MB). On an accelerator each block costs a dozen kernel launches whatever
# its size, so blocks are 32× larger: on an H200, 4,096-row blocks left the
# mid benchmark (100,000 × 16, K = 16) launch-bound at 47 µs per block.
_CPU_BLOCK_ELEMENTS = 1 << 20
_ACCELERATOR_BLOCK_ELEMENTS = 1 << 25


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SuffStats:
    """Weighted sufficient statistics of each component (an additive pytree).

    With responsibilities ``r_nk``, sample weights ``w_n`` and centres ``c_k``:

    * ``counts``   ``(K,)``    ``Σ_n w_n r_nk``
    * ``sums``     ``(K, D)``  ``Σ_n w_n r_nk (x_n − c_k)``
    * ``scatters`` ``Σ_n w_n r_nk (x_n − c_k)(x_n − c_k)ᵀ`` reduced to what the
      covariance type needs: ``(K, D, D)`` full, ``(D, D)`` tied (summed over
      components), ``(K, D)`` diag (diagonal only), ``(K,)`` spherical (trace).
    * ``centers``  ``(K, D)``  the ``c_k``; statistics with the same centres add.
    """

    counts: jax.Array
    sums: jax.Array
    scatters: jax.Array
    centers: jax.Array
    covariance_type: str = dataclasses.field(default="full", metadata=dict(static=True))

    def __add__(self, other: "SuffStats") -> "SuffStats":
        """Statistics of the union of two row sets (same centres assumed)."""
        return dataclasses.replace(
            self,
            counts=self.counts + other.counts,
            sums=self.sums + other.sums,
            scatters=self.scatters + other.scatters,
        )


def _scatter(weighted_resp: jax.Array, diff: jax.Array, covariance_type: str) -> jax.Array:
    """``Σ_n w_n r_nk (x_n − c_k)(x_n − c_k)ᵀ`` in the shape the covariance type needs."""
    if covariance_type == "full":
        return jnp.einsum("nk,nkd,nke->kde", weighted_resp, diff, diff)
    if covariance_type == "tied":
        return jnp.einsum("nk,nkd,nke->de", weighted_resp, diff, diff)
    if covariance_type == "diag":
        return jnp.einsum("nk,nkd->kd", weighted_resp, diff * diff)
    return jnp.einsum("nk,nk->k", weighted_resp, jnp.sum(diff * diff, axis=-1))


@float32_matmuls
def stats_from_responsibilities(
    X: jax.Array, weighted_resp: jax.Array, centers: jax.Array, covariance_type: str
) -> SuffStats:
    """Sufficient statistics of rows ``X (N, D)`` with weighted responsibilities ``(N, K)``.

    ``weighted_resp[n, k] = w_n r_nk``; ``centers (K, D)`` are the ``c_k``.
    """
    diff = X[:, None, :] - centers[None, :, :]
    return _stats_from_diff(diff, weighted_resp, centers, covariance_type)


def _stats_from_diff(diff, weighted_resp, centers, covariance_type) -> SuffStats:
    return SuffStats(
        counts=jnp.sum(weighted_resp, axis=0),
        sums=jnp.einsum("nk,nkd->kd", weighted_resp, diff),
        scatters=_scatter(weighted_resp, diff, covariance_type),
        centers=centers,
        covariance_type=covariance_type,
    )


def _pack_outer(A: jax.Array) -> jax.Array:
    """Row-wise products ``a_i a_j`` for ``i <= j``: ``(B, D) -> (B, D(D+1)/2)``, row-major upper triangle.

    Built from ``D`` slices rather than a gather: XLA fuses these into one
    cheap pass, while a constant-index gather was several times slower.
    """
    n = A.shape[-1]
    return jnp.concatenate([A[:, i : i + 1] * A[:, i:] for i in range(n)], axis=1)


def _unpack_symmetric(packed: jax.Array, n_features: int) -> jax.Array:
    """Inverse of the packing: ``(..., D(D+1)/2) -> (..., D, D)`` symmetric."""
    iu, ju = np.triu_indices(n_features)
    out = jnp.zeros(packed.shape[:-1] + (n_features, n_features), packed.dtype)
    return out.at[..., iu, ju].set(packed).at[..., ju, iu].set(packed)


def _responsibilities(wlp: jax.Array, w: jax.Array):
    """Weighted responsibilities ``w_n r_nk`` and ``Σ_n w_n log p(x_n)`` from ``(B, K)`` log-probs."""
    log_norm = jax.nn.logsumexp(wlp, axis=-1)
    weighted_resp = w[:, None] * jnp.exp(wlp - log_norm[:, None])
    return weighted_resp, jnp.sum(jnp.where(w > 0, w * log_norm, 0.0))


# Components up to which full and diagonal covariances take their statistics
# straight from the differences ``x − μ_k`` (:func:`_block_e_step_direct`). For so
# few components that is cheaper than the product form with its by-group
# terms, and compiles faster: on CPU, 1,000 × 2 with K = 3 ran 46 against 81 µs
# per iteration (compile 0.75 against 1.15 s), fit_many on 1,000 sets of 300 × 2
# 1.3× faster. On 100,000 rows the product form was as fast at K = 5 (full) and
# faster from K = 4 (diag) and K = 6 (full). Tied covariances gain nothing from
# the direct form.
_DIRECT_MAX_COMPONENTS = 3


def _uses_direct_statistics(covariance_type: str, n_components: int) -> bool:
    """Whether the default E-step takes statistics straight from ``x − μ_k`` (see ``_DIRECT_MAX_COMPONENTS``)."""
    return covariance_type == "spherical" or (
        covariance_type in ("full", "diag") and n_components <= _DIRECT_MAX_COMPONENTS
    )


def _block_e_step_direct(params: GMMParams, prec_chol: jax.Array, X: jax.Array, w: jax.Array):
    """Statistics straight from the ``(B, K, D)`` differences ``x − μ_k``: the textbook sums.

    Spherical covariances always (they cost ``O(B·K·D)`` whichever way, and
    a trace needs no by-group terms); full and diagonal ones for a few
    components (``_DIRECT_MAX_COMPONENTS``).
    """
    diff = X[:, None, :] - params.means[None, :, :]
    weighted_resp, log_likelihood = _responsibilities(component_log_prob_from_diff(diff, params, prec_chol), w)
    return _stats_from_diff(diff, weighted_resp, params.means, params.covariance_type), log_likelihood


def _block_e_step_diag(params: GMMParams, prec_chol: jax.Array, X: jax.Array, w: jax.Array):
    """Diagonal covariances: log-probabilities from the differences, the cheaper moments of
    :func:`_nearest_mean_moments` (1.4× faster on CPU than the direct sums at K = 16)."""
    diff = X[:, None, :] - params.means[None, :, :]
    wlp = component_log_prob_from_diff(diff, params, prec_chol)
    return _nearest_mean_moments(X, wlp, w, params.means, "diag")


class _Moments(NamedTuple):
    """Per-block moments about each row's nearest mean ``a_n = x_n − μ_{z_n}`` (see :func:`_nearest_mean_moments`)."""

    counts: jax.Array  # (K,)      Σ_n w r_nk
    sums: jax.Array  # (K, D)      Σ_n w r_nk a_n
    scatters: jax.Array  # Σ w r_nk a_n a_nᵀ: packed (K, P) full, (P,) tied (P = D(D+1)/2); diagonal (K, D) diag
    cross: jax.Array  # (K, K, D)  G_jk = Σ_{n: z_n = j} w r_nk a_n
    mixing: jax.Array  # (K, K)    N_jk = Σ_{n: z_n = j} w r_nk

    def __add__(self, other: "_Moments") -> "_Moments":  # elementwise, not tuple concatenation
        return jax.tree.map(jnp.add, self, other)


# Rows per scatter-add chain in :func:`_sums_by_group`: a scatter adds its rows one
# after another, so each sum's rounding error grows with the chain's length. At
# 4,096-row chains the means of a 2-million-row fit moved 100× further from
# float64 than with matrix products; 256-row chains match them, at no cost.
_SCATTER_CHAIN_ROWS = 256


def _sums_by_group(values: jax.Array, groups: jax.Array, n_groups: int) -> jax.Array:
    """``out[j] = Σ_{n: groups_n = j} values[n]``: ``(B, ...) -> (n_groups, ...)``.

    On CPU scatter-adds, about three times cheaper there than a product with
    a one-hot ``(B, n_groups)`` matrix: one per chunk of
    ``_SCATTER_CHAIN_ROWS`` rows, and the chunks' sums added up. On
    accelerators the product: a scatter-add of many rows into ``n_groups``
    slots would queue on atomic additions, while the product is one
    well-shaped matrix multiply.
    """
    n_rows = values.shape[0]
    if jax.default_backend() == "cpu":
        n_chunks = -(-n_rows // _SCATTER_CHAIN_ROWS)
        slots = groups + n_groups * (jnp.arange(n_rows) // _SCATTER_CHAIN_ROWS)
        per_chunk = jax.ops.segment_sum(values, slots, n_groups * n_chunks)
        return jnp.sum(per_chunk.reshape((n_chunks, n_groups) + values.shape[1:]), axis=0)
    onehot = jax.nn.one_hot(groups, n_groups, dtype=values.dtype)
    return (onehot.T @ values.reshape(n_rows, -1)).reshape((n_groups,) + values.shape[1:])


def _nearest_mean_moments(X: jax.Array, wlp: jax.Array, w: jax.Array, means: jax.Array, covariance_type: str):
    """M-step moments of a block about each row's most probable component's mean, and its log-likelihood.

    Each row is centred at the mean of its most probable component,
    ``a_n = x_n − μ_{z_n}``, so the products ``a_n a_nᵀ`` are of the size of
    a component's own spread (no cancellation, unlike raw ``E[xxᵀ] − μμᵀ``
    or moments about one shared centre), and they do not depend on ``k``:
    ``Σ_n r_nk a_n a_nᵀ`` is one product ``(K, B) @ (B, D(D+1)/2)``.
    :func:`_moments_to_stats` then moves the moments exactly to each
    component's own mean, with the by-group terms ``G`` and ``N``.
    """
    weighted_resp, log_likelihood = _responsibilities(wlp, w)
    nearest = jnp.argmax(wlp, axis=-1)
    a = X - jnp.take(means, nearest, axis=0)
    packed = _pack_outer(a) if covariance_type in ("full", "tied") else None
    return _moments_about(a, nearest, weighted_resp, covariance_type, packed), log_likelihood


def _moments_about(a, nearest, weighted_resp, covariance_type, packed) -> _Moments:
    """:class:`_Moments` of rows ``a_n = x_n − μ_{z_n}`` (``z`` = ``nearest``); ``packed`` is
    ``_pack_outer(a)`` for full and tied, ``None`` for diag."""
    n_components = weighted_resp.shape[1]
    if covariance_type in ("full", "tied"):
        scatters = (weighted_resp.T if covariance_type == "full" else jnp.sum(weighted_resp, axis=1)) @ packed
    else:  # diag
        scatters = weighted_resp.T @ (a * a)
    return _Moments(
        counts=jnp.sum(weighted_resp, axis=0),
        sums=weighted_resp.T @ a,
        scatters=scatters,
        cross=_sums_by_group(weighted_resp[:, :, None] * a[:, None, :], nearest, n_components),
        mixing=_sums_by_group(weighted_resp, nearest, n_components),
    )


def _packed_precision(precision: jax.Array) -> jax.Array:
    """``(..., D, D) -> (..., D(D+1)/2)`` with off-diagonal entries doubled, so that
    ``_pack_outer(v) @ _packed_precision(Λ)ᵀ = vᵀΛv``."""
    n_features = precision.shape[-1]
    iu, ju = np.triu_indices(n_features)
    return precision[..., iu, ju] * np.where(iu == ju, 1.0, 2.0).astype(precision.dtype)


def _block_e_step_gemm(params: GMMParams, prec_chol: jax.Array, center: jax.Array, X: jax.Array, w: jax.Array):
    """Full and tied types: the ``O(B·K·D²)`` E-step as one matrix product.

    ``y_nk = U_kᵀ(x_n − c) − U_kᵀ(μ_k − c)`` for all ``k`` in one product
    ``(B, D) @ (D, K·D)``, about the shared centre ``c``; the moments are
    those of :func:`_nearest_mean_moments`.
    """
    n_rows, n_features = X.shape
    n_components = params.means.shape[0]
    Xc = X - center
    means_c = params.means - center
    if params.covariance_type == "full":
        flat_u = jnp.transpose(prec_chol, (1, 0, 2)).reshape(n_features, n_components * n_features)
        y = (Xc @ flat_u).reshape(n_rows, n_components, n_features)
        y = y - jnp.einsum("kd,kde->ke", means_c, prec_chol)[None]
    else:
        y = (Xc @ prec_chol)[:, None, :] - (means_c @ prec_chol)[None]
    wlp = component_log_norm(params, prec_chol) - 0.5 * jnp.sum(y * y, axis=-1)
    return _nearest_mean_moments(X, wlp, w, params.means, params.covariance_type)


# Features from which full covariances take the E-step's Mahalanobis terms from the
# same packed products ``a_i a_j`` as the moments (:func:`_block_e_step_packed`)
# instead of the ``(B, D) @ (D, K·D)`` product: that halves the E-step's
# multiply-adds, which pays once they dominate. On CPU, ms per iteration (with
# each form's default blocks): 50,000 × 64, K = 32: 473 → 310; 20,000 × 64,
# K = 8: 134 → 79; 50,000 × 32, K = 16: 118 → 104; but 100,000 × 16, K = 16:
# 35 → 58, slower.
_PACKED_MIN_FEATURES = 32


def _uses_packed_products(covariance_type: str, n_components: int, n_features: int) -> bool:
    """Whether the default E-step is :func:`_block_e_step_packed` (see ``_PACKED_MIN_FEATURES``)."""
    return (
        covariance_type == "full"
        and n_features >= _PACKED_MIN_FEATURES
        and not _uses_direct_statistics(covariance_type, n_components)
    )


class _PackedTerms(NamedTuple):
    """What :func:`_block_e_step_packed` needs of the parameters, computed once per E-step.

    With ``e_jk = μ_j − μ_k`` and ``a = x − μ_j``:
    ``(x − μ_k)ᵀΛ_k(x − μ_k) = aᵀΛ_k a + 2 aᵀ(Λ_k e_jk) + e_jkᵀΛ_k e_jk``.
    """

    means: jax.Array  # (K, D)
    precision_packed: jax.Array  # (P, K)  Λ_k packed, off-diagonals doubled
    shifts: jax.Array  # (K, K, D)         [j, k] = Λ_k e_jk
    offsets: jax.Array  # (K, K)           [j, k] = e_jkᵀ Λ_k e_jk
    log_norm: jax.Array  # (K,)
    center: jax.Array  # (D,)              shared centre for choosing each row's nearest mean


def _packed_terms(params: GMMParams, prec_chol: jax.Array, center: jax.Array) -> _PackedTerms:
    precision = prec_chol @ jnp.swapaxes(prec_chol, -1, -2)
    e = params.means[:, None, :] - params.means[None, :, :]  # e[j, k] = μ_j − μ_k
    shifts = jnp.einsum("kde,jke->jkd", precision, e)
    return _PackedTerms(
        means=params.means,
        precision_packed=_packed_precision(precision).T,
        shifts=shifts,
        offsets=jnp.sum(shifts * e, axis=-1),
        log_norm=component_log_norm(params, prec_chol),
        center=center,
    )


def _block_e_step_packed(terms: _PackedTerms, X: jax.Array, w: jax.Array):
    """Full covariances with many features: the E-step shares the moments' packed products.

    Each row is centred at its nearest mean in Euclidean distance,
    ``a_n = x_n − μ_{z_n}``, *before* the E-step, so that the Mahalanobis
    terms of every component come from ``_pack_outer(a)`` — the products the
    moments need anyway — through one ``(B, P) @ (P, K)`` product, plus the
    by-group terms of :class:`_PackedTerms`. Since ``‖a‖ ≤ ‖x − μ_k‖`` for
    every ``k``, no term exceeds about ``9 · cond(Σ_k)`` times their sum, so
    the rounding error does not grow with the distance to the origin or
    between components.
    """
    centered_means = terms.means - terms.center
    score = (X - terms.center) @ centered_means.T - 0.5 * jnp.sum(centered_means**2, axis=-1)
    nearest = jnp.argmax(score, axis=-1)  # argmin_k ‖x − μ_k‖
    a = X - jnp.take(terms.means, nearest, axis=0)
    packed = _pack_outer(a)
    shift = jnp.sum(a[:, None, :] * jnp.take(terms.shifts, nearest, axis=0), axis=-1)  # (B, K)
    maha = packed @ terms.precision_packed + 2 * shift + jnp.take(terms.offsets, nearest, axis=0)
    wlp = terms.log_norm - 0.5 * jnp.maximum(maha, 0.0)  # rounding can leave a tiny negative value
    weighted_resp, log_likelihood = _responsibilities(wlp, w)
    return _moments_about(a, nearest, weighted_resp, "full", packed), log_likelihood


def _block_e_step_shared(params: GMMParams, prec_chol: jax.Array, center: jax.Array, X: jax.Array, w: jax.Array):
    """The opt-in fast path (``fast=True``): every moment about one shared centre ``c``.

    Mahalanobis terms are expanded, ``(x−μ)ᵀΛ(x−μ) = x̃ᵀΛx̃ − 2x̃ᵀΛμ̃ + μ̃ᵀΛμ̃`` with
    ``x̃ = x − c``, ``μ̃ = μ − c``, and the quadratic part shares the packed
    products ``x̃_i x̃_j`` with the M-step moments: two products
    ``(B, D(D+1)/2) @ (D(D+1)/2, K)`` and ``(K, B) @ (B, D(D+1)/2)`` per block,
    without the exact path's ``(B, D) @ (D, K·D)`` product and by-group
    sums. The price is cancellation:
    relative errors of about ``eps · ‖μ_k − c‖²_{Σ_k⁻¹}`` in the covariances
    and Mahalanobis terms (see the README's "Numerics").
    """
    cov_type = params.covariance_type
    n_features = X.shape[1]
    Xc = X - center
    means_c = params.means - center
    if cov_type in ("full", "tied"):
        precision = prec_chol @ jnp.swapaxes(prec_chol, -1, -2)
        packed = _pack_outer(Xc)
        quadratic = packed @ _packed_precision(precision).T  # (B, K) full, (B,) tied
        if cov_type == "tied":
            quadratic = quadratic[:, None]
        if cov_type == "full":
            prec_means = jnp.einsum("kde,ke->kd", precision, means_c)
        else:
            prec_means = means_c @ precision
    elif cov_type == "diag":
        precision = prec_chol**2  # (K, D)
        quadratic = (Xc * Xc) @ precision.T
        prec_means = precision * means_c
    else:
        precision = prec_chol**2  # (K,)
        quadratic = jnp.sum(Xc * Xc, axis=1)[:, None] * precision
        prec_means = precision[:, None] * means_c
    maha = quadratic - 2 * Xc @ prec_means.T + jnp.sum(prec_means * means_c, axis=1)
    # Cancellation can leave a tiny negative value where it is mathematically ≥ 0.
    wlp = component_log_norm(params, prec_chol) - 0.5 * jnp.maximum(maha, 0.0)
    weighted_resp, log_likelihood = _responsibilities(wlp, w)
    if cov_type == "full":
        scatters = _unpack_symmetric(weighted_resp.T @ packed, n_features)
    elif cov_type == "tied":
        scatters = _unpack_symmetric(jnp.sum(weighted_resp, axis=1) @ packed, n_features)
    elif cov_type == "diag":
        scatters = weighted_resp.T @ (Xc * Xc)
    else:
        scatters = weighted_resp.T @ jnp.sum(Xc * Xc, axis=1)
    stats = SuffStats(
        counts=jnp.sum(weighted_resp, axis=0),
        sums=weighted_resp.T @ Xc,
        scatters=scatters,
        centers=jnp.broadcast_to(center, params.means.shape),
        covariance_type=cov_type,
    )
    return stats, log_likelihood


def _moments_to_stats(moments: _Moments, params: GMMParams) -> SuffStats:
    """Exact change of centre from each row's nearest mean to each component's mean.

    With ``e_jk = μ_j − μ_k`` and ``x_n − μ_k = a_n + e_{z_n k}``:
    ``S1_k = Σ r a + Σ_j N_jk e_jk`` and
    ``S2_k = Σ r a aᵀ + Σ_j (G_jk e_jkᵀ + e_jk G_jkᵀ) + Σ_j N_jk e_jk e_jkᵀ``
    (its diagonal for diag). The added terms are
    weighted by the responsibilities of rows that belong to *other*
    components, so they are small where the components separate.
    """
    means = params.means
    cov_type = params.covariance_type
    n_features = means.shape[-1]
    e = means[:, None, :] - means[None, :, :]  # e[j, k] = μ_j − μ_k
    sums = moments.sums + jnp.einsum("jk,jkd->kd", moments.mixing, e)
    if cov_type in ("full", "tied"):
        cross = jnp.einsum("jkd,jke->kde", moments.cross, e)
        correction = cross + jnp.swapaxes(cross, -1, -2) + jnp.einsum("jk,jkd,jke->kde", moments.mixing, e, e)
        scatters = _unpack_symmetric(moments.scatters, n_features)
        scatters = scatters + (correction if cov_type == "full" else jnp.sum(correction, axis=0))
    else:  # diag
        cross = jnp.einsum("jkd,jkd->kd", moments.cross, e)
        scatters = moments.scatters + 2 * cross + jnp.einsum("jk,jkd->kd", moments.mixing, e * e)
    return SuffStats(moments.counts, sums, scatters, means, cov_type)


def default_block_size(n_samples: int, n_components: int, n_features: int, packed_products: bool = False) -> int:
    """Rows per E-step block (static: from the shapes and the default backend).

    A block's largest intermediates take ``K·D`` elements per row, or for
    the packed form (``packed_products``) ``2·K·D + D(D+1)/2``: its packed
    products, gathered shifts and by-group values. Counting all three kept
    those blocks in cache: 50,000 × 64, K = 32 ran 368 → 287 ms per
    iteration (256 rows instead of 512), 20,000 × 64, K = 8 133 → 80 ms.
    """
    budget = _CPU_BLOCK_ELEMENTS if jax.default_backend() == "cpu" else _ACCELERATOR_BLOCK_ELEMENTS
    per_row = n_components * n_features
    if packed_products:
        per_row = 2 * per_row + n_features * (n_features + 1) // 2
    rows = max(256, budget // max(1, per_row))
    return min(n_samples, rows)


@float32_matmuls
def e_step(
    params: GMMParams,
    X: jax.Array,
    sample_weight: jax.Array | None = None,
    *,
    block_size: int | None = None,
    fast: bool = False,
) -> tuple[SuffStats, jax.Array]:
    """E-step: responsibilities reduced to sufficient statistics.

    Parameters
    ----------
    params : GMMParams
        Current parameters (``K`` components, ``D`` features).
    X : array, shape (N, D)
    sample_weight : array, shape (N,), optional
        Non-negative weights; rows of weight 0 contribute nothing (padding).
    block_size : int, optional
        Rows per block; memory is ``O(block_size · K · D)`` whatever ``N``.
    fast : bool
        Opt-in: accumulate every moment about one shared centre, with fewer
        and smaller matrix products (on CPU 1.3-1.6× faster for full with
        many components and fewer than 32 features, 2-3× for diag and
        spherical; no faster for tied or for at most 3 components, and
        slower than the default from 32 features) at the price of cancellation error
        ``≈ eps · ‖μ_k − c‖²_{Σ_k⁻¹}`` relative, ``c`` the weighted mean of
        the means. Harmless in float64
        and for components a few tens of σ from the centre in float32; keep
        the default for float32 data whose components are hundreds of σ
        apart.

    Returns
    -------
    stats : SuffStats
        Statistics centred at ``params.means`` (at the shared centre with
        ``fast=True``).
    log_likelihood : array, shape ()
        The weighted **sum** ``Σ_n w_n log p(x_n)``; divide by
        ``stats.counts.sum()`` for the mean.
    """
    n_samples = X.shape[0]
    if sample_weight is None:
        sample_weight = jnp.ones(n_samples, X.dtype)
    sample_weight = jnp.asarray(sample_weight, X.dtype)
    prec_chol = params.precisions_cholesky
    packed_products = not fast and _uses_packed_products(params.covariance_type, params.n_components,
                                                         params.n_features)
    if block_size is None:
        block_size = default_block_size(n_samples, params.n_components, params.n_features, packed_products)
    block_size = max(1, min(int(block_size), n_samples))
    n_blocks, remainder = divmod(n_samples, block_size)

    # A shared centre near the data, so data far from the origin lose no digits.
    center = params.weights @ params.means
    if fast:
        block_fn = partial(_block_e_step_shared, params, prec_chol, center)
    elif _uses_direct_statistics(params.covariance_type, params.n_components):
        block_fn = partial(_block_e_step_direct, params, prec_chol)
    elif packed_products:
        block_fn = partial(_block_e_step_packed, _packed_terms(params, prec_chol, center))
    elif params.covariance_type in ("full", "tied"):
        block_fn = partial(_block_e_step_gemm, params, prec_chol, center)
    else:
        block_fn = partial(_block_e_step_diag, params, prec_chol)

    def block(xb, wb):
        # Zero-weight rows (padding) may hold anything; keep NaN out of the sums.
        return block_fn(jnp.where(wb[:, None] > 0, xb, 0.0), wb)

    def add(a, b):  # (statistics, log-likelihood) pairs; statistics keep their centres
        return a[0] + b[0], a[1] + b[1]

    def body(i, carry):
        start = i * block_size
        xb = jax.lax.dynamic_slice_in_dim(X, start, block_size)
        wb = jax.lax.dynamic_slice_in_dim(sample_weight, start, block_size)
        return add(carry, block(xb, wb))

    total = block(X[:block_size], sample_weight[:block_size])
    if n_blocks > 1:
        total = jax.lax.fori_loop(1, n_blocks, body, total)
    if remainder:
        total = add(total, block(X[n_blocks * block_size :], sample_weight[n_blocks * block_size :]))
    stats, log_likelihood = total
    if isinstance(stats, _Moments):
        stats = _moments_to_stats(stats, params)
    return stats, log_likelihood


@float32_matmuls
def m_step(stats: SuffStats, *, reg_covar: float | jax.Array = 1e-6) -> GMMParams:
    """M-step: the parameters that maximise the expected complete-data log-likelihood.

    Parameters
    ----------
    stats : SuffStats
    reg_covar : float
        Added to the diagonal of every covariance (traced: changing it does
        not recompile).

    Returns
    -------
    GMMParams
        ``weights = N_k / N``, ``means = c_k + δ_k`` with ``δ_k = S1_k / N_k``
        and covariances ``S2_k / N_k − δ_k δ_kᵀ + reg_covar·I``. As in
        scikit-learn, ``N_k`` gets ``10·eps`` so an empty component keeps
        finite parameters (its mean stays at its centre, its covariance is
        ``reg_covar·I``) instead of producing NaN.
    """
    cov_type = stats.covariance_type
    dtype = stats.sums.dtype
    counts = stats.counts + 10 * jnp.finfo(dtype).eps
    delta = stats.sums / counts[:, None]
    means = stats.centers + delta
    weights = counts / jnp.sum(counts)
    n_features = means.shape[-1]
    eye = jnp.eye(n_features, dtype=dtype)
    if cov_type == "full":
        outer = delta[:, :, None] * delta[:, None, :]
        covariances = stats.scatters / counts[:, None, None] - outer + reg_covar * eye
    elif cov_type == "tied":
        between = jnp.einsum("k,kd,ke->de", counts, delta, delta)
        covariances = (stats.scatters - between) / jnp.sum(counts) + reg_covar * eye
    elif cov_type == "diag":
        # Rounding can leave a tiny negative variance; it is ≥ 0 mathematically.
        covariances = jnp.maximum(stats.scatters / counts[:, None] - delta**2, 0.0) + reg_covar
    else:
        variance = (stats.scatters / counts - jnp.sum(delta**2, axis=-1)) / n_features
        covariances = jnp.maximum(variance, 0.0) + reg_covar
    return GMMParams(weights, means, covariances, cov_type)


class EMResult(NamedTuple):
    """What :func:`em_loop` returns.

    Attributes
    ----------
    params : GMMParams
        Parameters after the last M-step.
    log_likelihood : array, shape ()
        Mean (weighted) per-sample log-likelihood computed in the last E-step,
        i.e. of the parameters *before* the last M-step — scikit-learn's
        ``lower_bound_``.
    n_iter : array, shape (), int
        Number of EM iterations run.
    converged : array, shape (), bool
        True iff the last change in mean log-likelihood was finite and below
        ``tol`` in absolute value. A NaN or infinite log-likelihood is never
        converged.
    history : array, shape (max_iter,)
        Mean log-likelihood per iteration; NaN after ``n_iter``.
    """

    params: GMMParams
    log_likelihood: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    history: jax.Array


def iterate_em(
    stats_fn: Callable[[GMMParams], tuple[SuffStats, jax.Array]],
    params: GMMParams,
    total_weight: jax.Array,
    *,
    max_iter: int,
    tol: float | jax.Array,
    reg_covar: float | jax.Array,
) -> EMResult:
    """The EM ``lax.while_loop``, for any way of computing the statistics.

    ``stats_fn(params) -> (stats, weighted sum of log p)`` is the E-step over
    the whole data set — :func:`e_step` on an array for :func:`em_loop`, or a
    sum over devices (``shard_map`` + ``psum``) for sharded data.
    ``total_weight`` is ``Σ_n w_n``. Not jitted itself: call it inside ``jit``.
    """
    dtype = params.means.dtype
    tol = jnp.asarray(tol, dtype)
    reg_covar = jnp.asarray(reg_covar, dtype)

    def cond(state):
        n_iter, _, log_likelihood, converged, _ = state
        still_finite = (n_iter == 0) | jnp.isfinite(log_likelihood)
        return (n_iter < max_iter) & ~converged & still_finite

    def body(state):
        n_iter, params, previous, _, history = state
        stats, ll_sum = stats_fn(params)
        log_likelihood = ll_sum / total_weight
        new_params = m_step(stats, reg_covar=reg_covar)
        converged = jnp.abs(log_likelihood - previous) < tol  # False for NaN/inf
        history = history.at[n_iter].set(log_likelihood)
        return n_iter + 1, new_params, log_likelihood, converged, history

    init = (
        jnp.asarray(0, jnp.int32),
        params,
        jnp.asarray(-jnp.inf, dtype),
        jnp.asarray(False),
        jnp.full((max_iter,), jnp.nan, dtype),
    )
    n_iter, params, log_likelihood, converged, history = jax.lax.while_loop(cond, body, init)
    return EMResult(params, log_likelihood, n_iter, converged, history)


@partial(jit, static_argnames=("max_iter", "block_size", "fast"))
def em_loop(
    params: GMMParams,
    X: jax.Array,
    *,
    max_iter: int = 100,
    tol: float | jax.Array = 1e-3,
    reg_covar: float | jax.Array = 1e-6,
    sample_weight: jax.Array | None = None,
    block_size: int | None = None,
    fast: bool = False,
) -> EMResult:
    """Run EM from ``params`` until the mean log-likelihood changes by less than ``tol``.

    Compiled with ``jax.jit`` around a ``lax.while_loop``. Only the shapes,
    the covariance type, ``max_iter`` (the history buffer's length) and
    ``block_size`` are static; ``tol``, ``reg_covar``, the data and the
    weights are traced, so new values neither recompile nor block ``vmap``.

    Under ``jax.vmap`` (restarts, many data sets) a member that has converged
    stops changing while the others go on, so a batched run returns what each
    run returns alone.

    Parameters
    ----------
    params : GMMParams
        Initial parameters, ``K`` components.
    X : array, shape (N, D)
    max_iter : int
        Most iterations (static).
    tol : float
        Convergence threshold on the change in mean log-likelihood
        (scikit-learn's definition). ``tol=0`` runs exactly ``max_iter``.
    reg_covar : float
        Added to covariance diagonals in each M-step.
    sample_weight : array, shape (N,), optional
    block_size : int, optional
        Rows per E-step block (static).
    fast : bool
        Opt-in faster E-step with a documented accuracy trade (static); see
        :func:`e_step`.

    Returns
    -------
    EMResult

    Examples
    --------
    >>> import jax, jaxgmm
    >>> X = jax.numpy.asarray(jaxgmm.load_faithful(), "float32")
    >>> start = jaxgmm.initialize(jax.random.key(0), X, 2)
    >>> result = jaxgmm.em_loop(start, X, max_iter=50, tol=1e-6)
    >>> bool(result.converged), result.history.shape
    (True, (50,))
    """
    if sample_weight is None:
        sample_weight = jnp.ones(X.shape[0], X.dtype)
    sample_weight = jnp.asarray(sample_weight, X.dtype)
    stats_fn = partial(e_step, X=X, sample_weight=sample_weight, block_size=block_size, fast=fast)
    return iterate_em(
        stats_fn, params, jnp.sum(sample_weight), max_iter=max_iter, tol=tol, reg_covar=reg_covar
    )
