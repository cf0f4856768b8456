"""The E-step's fast kernels, and the rule that picks one.

Each kernel turns one block of rows into the block's sufficient statistics
(or moments that :func:`finish_statistics` turns into them) and its weighted
log-likelihood; all are numerically equal to the textbook sums
(:func:`jaxgmm.stats.stats_from_responsibilities` of ``x − μ_k``) and tested
against them. They work on a covariance model's *layout*
(:class:`jaxgmm.models.Storage`), never on its name, so every model stored
``full`` shares the full-matrix kernels.

* **direct** — statistics straight from the ``(B, K, D)`` differences:
  spherical layouts, and full/diag with at most ``_DIRECT_MAX_COMPONENTS``.
* **nearest-mean** (default otherwise) — Mahalanobis terms from one product
  ``(B, D) @ (D, K·D)``; moments about each row's most probable mean, moved
  exactly to each component's mean with by-group terms.
* **packed** — full layouts with at least ``_PACKED_MIN_FEATURES`` features:
  rows centred at their nearest mean first, Mahalanobis terms from the
  moments' own packed products.
* **shared centre** (``fast=True``, opt-in) — every moment about one centre,
  at the price of documented cancellation.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.density import component_log_norm, component_log_prob_from_diff
from jaxgmm.models.storage import DIAG, FULL, SPHERICAL, Storage
from jaxgmm.params import GMMParams
from jaxgmm.stats import SuffStats, stats_from_diff

# Rows per block in the E-step: bounds the (rows, K, D) intermediate to about
# this many elements so memory stays flat in N. On CPU, 8 MB: on mid (100,000
# × 16, K = 16; 2 cores, 32 MB L3) 8,192-row blocks ran full 24-25 → 21-22 ms
# per iteration, tied 15.5 → 14.3, diag 15.3 → 13.1 against 4,096 rows, and
# 16,384 rows were slower again (full 30, diag 16). The packed form keeps 4 MB
# blocks (see default_block_size). On an accelerator each block costs a dozen
# kernel launches whatever its size, so blocks are larger still: on an H200,
# 4,096-row blocks left mid launch-bound at 47 µs per block.
_CPU_BLOCK_ELEMENTS = 1 << 21
_CPU_PACKED_BLOCK_ELEMENTS = 1 << 20
_ACCELERATOR_BLOCK_ELEMENTS = 1 << 25


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
    """Weighted responsibilities ``w_n r_nk`` and ``Σ_n w_n log p(x_n)`` from ``(B, K)`` log-probs.

    One exponential per entry: ``p = exp(wlp − max)`` gives both the
    log-normaliser ``max + log Σ p`` and ``r = p / Σ p`` (``logsumexp`` and
    then ``exp(wlp − log p(x))`` took two; on mid, 100,000 × 16, K = 16, one
    fewer cut the iteration by 6%).
    """
    top = jax.lax.stop_gradient(jnp.max(wlp, axis=-1))
    top = jnp.where(jnp.isfinite(top), top, 0.0)  # as logsumexp: a row of −inf gives −inf, not NaN
    p = jnp.exp(wlp - top[:, None])
    total = jnp.sum(p, axis=-1)
    log_norm = top + jnp.log(total)
    weighted_resp = p * (w / total)[:, None]
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


def _uses_direct_statistics(storage: Storage, n_components: int) -> bool:
    """Whether the default E-step takes statistics straight from ``x − μ_k`` (see ``_DIRECT_MAX_COMPONENTS``)."""
    return storage is SPHERICAL or (storage in (FULL, DIAG) and n_components <= _DIRECT_MAX_COMPONENTS)


def _block_e_step_direct(params: GMMParams, prec_chol: jax.Array, X: jax.Array, w: jax.Array):
    """Statistics straight from the ``(B, K, D)`` differences ``x − μ_k``: the textbook sums.

    Spherical covariances always (they cost ``O(B·K·D)`` whichever way, and
    a trace needs no by-group terms); full and diagonal ones for a few
    components (``_DIRECT_MAX_COMPONENTS``).
    """
    diff = X[:, None, :] - params.means[None, :, :]
    weighted_resp, log_likelihood = _responsibilities(component_log_prob_from_diff(diff, params, prec_chol), w)
    return stats_from_diff(diff, weighted_resp, params.means, params.covariance_type), log_likelihood


def _block_e_step_diag(params: GMMParams, prec_chol: jax.Array, X: jax.Array, w: jax.Array):
    """Diagonal covariances: log-probabilities from the differences, the cheaper moments of
    :func:`_nearest_mean_moments` (1.4× faster on CPU than the direct sums at K = 16)."""
    diff = X[:, None, :] - params.means[None, :, :]
    wlp = component_log_prob_from_diff(diff, params, prec_chol)
    return _nearest_mean_moments(X, wlp, w, params.means, DIAG)


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


def _nearest_mean_moments(X: jax.Array, wlp: jax.Array, w: jax.Array, means: jax.Array, storage: Storage):
    """M-step moments of a block about each row's most probable component's mean, and its log-likelihood.

    Each row is centred at the mean of its most probable component,
    ``a_n = x_n − μ_{z_n}``, so the products ``a_n a_nᵀ`` are of the size of
    a component's own spread (no cancellation, unlike raw ``E[xxᵀ] − μμᵀ``
    or moments about one shared centre), and they do not depend on ``k``:
    ``Σ_n r_nk a_n a_nᵀ`` is one product ``(K, B) @ (B, D(D+1)/2)``.
    :func:`moments_to_stats` then moves the moments exactly to each
    component's own mean, with the by-group terms ``G`` and ``N``.
    """
    weighted_resp, log_likelihood = _responsibilities(wlp, w)
    nearest = jnp.argmax(wlp, axis=-1)
    a = X - jnp.take(means, nearest, axis=0)
    packed = _pack_outer(a) if storage.is_matrix else None
    return _moments_about(a, nearest, weighted_resp, storage, packed), log_likelihood


def _moments_about(a, nearest, weighted_resp, storage: Storage, packed) -> _Moments:
    """:class:`_Moments` of rows ``a_n = x_n − μ_{z_n}`` (``z`` = ``nearest``); ``packed`` is
    ``_pack_outer(a)`` for full and tied, ``None`` for diag."""
    n_components = weighted_resp.shape[1]
    if storage.is_matrix:
        scatters = (weighted_resp.T if storage is FULL else jnp.sum(weighted_resp, axis=1)) @ packed
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
    ``(B, D) @ (D, D·K)``, about the shared centre ``c``; the moments are
    those of :func:`_nearest_mean_moments`. ``y`` is laid out ``(B, D, K)``
    so that ``‖y_nk‖²`` sums over a middle axis, adding whole ``K``-vectors:
    summing over a short last axis instead took twice as long (on mid,
    100,000 × 16, K = 16, 8% of the iteration).
    """
    n_rows, n_features = X.shape
    n_components = params.means.shape[0]
    Xc = X - center
    means_c = params.means - center
    if params.model.storage is FULL:
        flat_u = jnp.transpose(prec_chol, (1, 2, 0)).reshape(n_features, n_features * n_components)  # [d, e·K + k]
        y = (Xc @ flat_u).reshape(n_rows, n_features, n_components)
        y = y - jnp.einsum("kd,kde->ek", means_c, prec_chol)[None]
    else:
        y = (Xc @ prec_chol)[:, :, None] - (means_c @ prec_chol).T[None]
    wlp = component_log_norm(params, prec_chol) - 0.5 * jnp.sum(y * y, axis=1)
    return _nearest_mean_moments(X, wlp, w, params.means, params.model.storage)


# Features from which full covariances take the E-step's Mahalanobis terms from the
# same packed products ``a_i a_j`` as the moments (:func:`_block_e_step_packed`)
# instead of the ``(B, D) @ (D, K·D)`` product: that halves the E-step's
# multiply-adds, which pays once they dominate. On CPU, ms per iteration (with
# each form's default blocks): 50,000 × 64, K = 32: 473 → 310; 20,000 × 64,
# K = 8: 134 → 79; 50,000 × 32, K = 16: 118 → 104; but 100,000 × 16, K = 16:
# 35 → 58, slower.
_PACKED_MIN_FEATURES = 32


def _uses_packed_products(storage: Storage, n_components: int, n_features: int) -> bool:
    """Whether the default E-step is :func:`_block_e_step_packed` (see ``_PACKED_MIN_FEATURES``)."""
    return (
        storage is FULL
        and n_features >= _PACKED_MIN_FEATURES
        and not _uses_direct_statistics(storage, n_components)
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
    return _moments_about(a, nearest, weighted_resp, FULL, packed), log_likelihood


def _block_e_step_shared(params: GMMParams, prec_chol: jax.Array, center: jax.Array, X: jax.Array, w: jax.Array):
    """The opt-in fast path (``fast=True``): every moment about one shared centre ``c``.

    Mahalanobis terms are expanded, ``(x−μ)ᵀΛ(x−μ) = x̃ᵀΛx̃ − 2x̃ᵀΛμ̃ + μ̃ᵀΛμ̃`` with
    ``x̃ = x − c``, ``μ̃ = μ − c``, and the quadratic part shares the packed
    products ``x̃_i x̃_j`` with the M-step moments: two products
    ``(B, D(D+1)/2) @ (D(D+1)/2, K)`` and ``(K, B) @ (B, D(D+1)/2)`` per block,
    without the exact path's ``(B, D) @ (D, K·D)`` product and by-group
    sums. The price is cancellation:
    relative errors of about ``eps · ‖μ_k − c‖²_{Σ_k⁻¹}`` in the covariances
    and Mahalanobis terms (see the user guide's page on EM, "Numerics").
    """
    kind = params.model.storage.kind
    Xc = X - center
    means_c = params.means - center
    packed = None
    if kind in ("full", "tied"):
        precision = prec_chol @ jnp.swapaxes(prec_chol, -1, -2)
        packed = _pack_outer(Xc)
        quadratic = packed @ _packed_precision(precision).T  # (B, K) full, (B,) tied
        if kind == "tied":
            quadratic = quadratic[:, None]
            prec_means = means_c @ precision
        else:
            prec_means = jnp.einsum("kde,ke->kd", precision, means_c)
    elif kind == "diag":
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
    return _shared_centre_statistics(params, center, Xc, wlp, w, packed)


def _shared_centre_statistics(params: GMMParams, center, Xc, wlp, w, packed=None):
    """Statistics about the shared centre ``c`` of rows ``Xc = X − c`` with log-probabilities ``wlp (B, K)``;
    ``packed`` is ``_pack_outer(Xc)`` where the caller has it."""
    kind = params.model.storage.kind
    n_features = Xc.shape[1]
    weighted_resp, log_likelihood = _responsibilities(wlp, w)
    if kind in ("full", "tied"):
        packed = _pack_outer(Xc) if packed is None else packed
        resp = weighted_resp if kind == "full" else jnp.sum(weighted_resp, axis=1)
        scatters = _unpack_symmetric(resp.T @ packed, n_features)
    elif kind == "diag":
        scatters = weighted_resp.T @ (Xc * Xc)
    else:
        scatters = weighted_resp.T @ jnp.sum(Xc * Xc, axis=1)
    stats = SuffStats(
        counts=jnp.sum(weighted_resp, axis=0),
        sums=weighted_resp.T @ Xc,
        scatters=scatters,
        centers=jnp.broadcast_to(center, params.means.shape),
        covariance_type=params.covariance_type,
    )
    return stats, log_likelihood


def shared_center(params: GMMParams) -> jax.Array:
    """``(D,)``: the weighted mean of the means, a centre near the data (data far from the origin lose no digits)."""
    return params.weights @ params.means


def statistics_centers(params: GMMParams, fast: bool) -> jax.Array:
    """``(K, D)``: the centres of the statistics the E-step returns (the means; the shared centre with ``fast``)."""
    return jnp.broadcast_to(shared_center(params), params.means.shape) if fast else params.means


def statistics_from_log_prob(params: GMMParams, X: jax.Array, wlp: jax.Array, w: jax.Array, *, fast: bool):
    """What :func:`block_function`'s kernel returns for rows ``X (B, D)`` whose log-probabilities
    ``log α_k + log p(x_n | k)`` are given, ``wlp (B, K)``: the E-step with missing values
    (:mod:`jaxgmm.missing_kernels`) fills the rows and supplies the marginal log-probabilities, and
    the moments of the filled rows take the complete-data forms (summable with theirs)."""
    storage = params.model.storage
    if fast:
        center = shared_center(params)
        return _shared_centre_statistics(params, center, X - center, wlp, w)
    if _uses_direct_statistics(storage, params.n_components):
        diff = X[:, None, :] - params.means[None, :, :]
        weighted_resp, log_likelihood = _responsibilities(wlp, w)
        return stats_from_diff(diff, weighted_resp, params.means, params.covariance_type), log_likelihood
    return _nearest_mean_moments(X, wlp, w, params.means, storage)


def sum_over_blocks(block, arrays: tuple, block_size: int):
    """``Σ_b block(*arrays[b])`` over blocks of ``block_size`` rows of every array in ``arrays`` (rows first):
    a ``fori_loop`` over the full blocks, then the remainder. ``block`` returns sums: arrays,
    :class:`SuffStats` or moments, or (nested) plain tuples of them.

    The loop starts from zeros, so ``block`` is traced once for the loop (and once for a remainder):
    each traced copy is compiled, and compiling dominates the first call.
    """
    n_rows = arrays[0].shape[0]
    block_size = max(1, min(int(block_size), n_rows))
    n_blocks, remainder = divmod(n_rows, block_size)

    def add(new, carry):  # plain tuples elementwise; statistics keep the new block's centres
        return tuple(map(add, new, carry)) if type(new) is tuple else new + carry

    def body(i, carry):
        start = i * block_size
        return add(block(*(jax.lax.dynamic_slice_in_dim(a, start, block_size) for a in arrays)), carry)

    if n_blocks == 1:
        total = block(*(a[:block_size] for a in arrays))
    else:
        shapes = jax.eval_shape(block, *(a[:block_size] for a in arrays))
        total = jax.lax.fori_loop(0, n_blocks, body, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
    if remainder:
        total = add(block(*(a[n_blocks * block_size :] for a in arrays)), total)
    return total


def even_block_size(n_rows: int, block_size: int) -> int:
    """The largest block of at most ``block_size`` rows that divides ``n_rows`` into equal blocks (no remainder
    block to compile), unless that would take more than twice as many blocks."""
    n_blocks = -(-n_rows // max(1, block_size))
    for blocks in range(n_blocks, 2 * n_blocks + 1):
        if n_rows % blocks == 0:
            return n_rows // blocks
    return block_size


def moments_to_stats(moments: _Moments, means: jax.Array, storage: Storage, covariance_type: str) -> SuffStats:
    """Exact change of centre from each row's nearest mean to each component's mean ``means (K, D)``.

    With ``e_jk = μ_j − μ_k`` and ``x_n − μ_k = a_n + e_{z_n k}``:
    ``S1_k = Σ r a + Σ_j N_jk e_jk`` and
    ``S2_k = Σ r a aᵀ + Σ_j (G_jk e_jkᵀ + e_jk G_jkᵀ) + Σ_j N_jk e_jk e_jkᵀ``
    (its diagonal for diag). The added terms are
    weighted by the responsibilities of rows that belong to *other*
    components, so they are small where the components separate.
    """
    n_features = means.shape[-1]
    e = means[:, None, :] - means[None, :, :]  # e[j, k] = μ_j − μ_k
    sums = moments.sums + jnp.einsum("jk,jkd->kd", moments.mixing, e)
    if storage.is_matrix:
        cross = jnp.einsum("jkd,jke->kde", moments.cross, e)
        correction = cross + jnp.swapaxes(cross, -1, -2) + jnp.einsum("jk,jkd,jke->kde", moments.mixing, e, e)
        scatters = _unpack_symmetric(moments.scatters, n_features)
        scatters = scatters + (correction if storage is FULL else jnp.sum(correction, axis=0))
    else:  # diag
        cross = jnp.einsum("jkd,jkd->kd", moments.cross, e)
        scatters = moments.scatters + 2 * cross + jnp.einsum("jk,jkd->kd", moments.mixing, e * e)
    return SuffStats(moments.counts, sums, scatters, means, covariance_type)


def default_block_size(n_samples: int, n_components: int, n_features: int, packed_products: bool = False) -> int:
    """Rows per E-step block (static: from the shapes and the default backend).

    A block's largest intermediates take ``K·D`` elements per row, or for
    the packed form (``packed_products``) ``2·K·D + D(D+1)/2``: its packed
    products, gathered shifts and by-group values. Counting all three kept
    those blocks in cache: 50,000 × 64, K = 32 ran 368 → 287 ms per
    iteration (256 rows instead of 512), 20,000 × 64, K = 8 133 → 80 ms.
    """
    if jax.default_backend() != "cpu":
        budget = _ACCELERATOR_BLOCK_ELEMENTS
    else:
        budget = _CPU_PACKED_BLOCK_ELEMENTS if packed_products else _CPU_BLOCK_ELEMENTS
    per_row = n_components * n_features
    if packed_products:
        per_row = 2 * per_row + n_features * (n_features + 1) // 2
    rows = max(256, budget // max(1, per_row))
    return min(n_samples, rows)


def block_function(params: GMMParams, prec_chol: jax.Array, *, fast: bool, packed_products: bool):
    """The rule: ``block(X_b (B, D), w_b (B,)) -> (statistics or moments, Σ_b w log p)`` for ``params``.

    Static (from the layout, ``K``, ``D`` and ``fast``): see the module
    docstring for the forms and :func:`uses_packed_products` for
    ``packed_products``. Zero-weight rows may hold anything; callers mask them.
    """
    storage = params.model.storage
    center = shared_center(params)
    if fast:
        return partial(_block_e_step_shared, params, prec_chol, center)
    if _uses_direct_statistics(storage, params.n_components):
        return partial(_block_e_step_direct, params, prec_chol)
    if packed_products:
        return partial(_block_e_step_packed, _packed_terms(params, prec_chol, center))
    if storage.is_matrix:
        return partial(_block_e_step_gemm, params, prec_chol, center)
    return partial(_block_e_step_diag, params, prec_chol)


def uses_packed_products(params: GMMParams, fast: bool) -> bool:
    """Whether the default E-step takes the packed form (it also sizes the blocks)."""
    return not fast and _uses_packed_products(params.model.storage, params.n_components, params.n_features)


def complete_e_step(params: GMMParams, X: jax.Array, sample_weight: jax.Array | None, *, block_size: int | None,
                    fast: bool):
    """:func:`jaxgmm.e_step` of complete rows ``X (N, D)``: blocks of the kernel the rule picks, summed."""
    n_samples = X.shape[0]
    if sample_weight is None:
        sample_weight = jnp.ones(n_samples, X.dtype)
    sample_weight = jnp.asarray(sample_weight, X.dtype)
    prec_chol = params.precisions_cholesky
    packed_products = uses_packed_products(params, fast)
    if block_size is None:
        block_size = default_block_size(n_samples, params.n_components, params.n_features, packed_products)
    block_fn = block_function(params, prec_chol, fast=fast, packed_products=packed_products)

    def block(xb, wb):
        # Zero-weight rows (padding) may hold anything; keep NaN out of the sums.
        return block_fn(jnp.where(wb[:, None] > 0, xb, 0.0), wb)

    stats, log_likelihood = sum_over_blocks(block, (X, sample_weight), block_size)
    return finish_statistics(stats, params), log_likelihood


def finish_statistics(total, params: GMMParams) -> SuffStats:
    """The summed output of the blocks as :class:`SuffStats` about ``params.means`` (or the shared centre)."""
    if isinstance(total, _Moments):
        return moments_to_stats(total, params.means, params.model.storage, params.covariance_type)
    return total
