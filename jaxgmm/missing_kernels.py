"""The E-step with missing coordinates (missing at random; Ghahramani & Jordan 1994).

For a row with observed coordinates ``o`` and missing ones ``m``, component
``k`` contributes through the **marginal** density of ``x_o``,
``N(x_o | μ_o, Σ_oo)``, and the expected sufficient statistics complete the
row: ``x_m`` is replaced by its conditional mean ``E[x_m | x_o, k]`` and the
conditional covariance ``Cov[x_m | x_o, k]`` is added to the scatter. The
M-step is unchanged: it consumes the same :class:`~jaxgmm.stats.SuffStats`.

**Precision form.** With ``Λ = Σ⁻¹ = U Uᵀ``, any fill ``f`` of the
missing values, ``d = x_f − μ`` and ``g = Λd``, the conditional mean is
``f_m + t`` with ``t = −A⁻¹ g_m`` and ``A = Λ_mm`` (``s × s`` for ``s``
missing values), the conditional covariance is ``A⁻¹``, the marginal's
log-determinant is ``log det Σ + log det A``, and its Mahalanobis term is
the complete row's at the conditional mean, ``‖Uᵀ(d + E_m t)‖²`` (a sum of
squares: see ``_matrix_conditional``). ``Uᵀd`` and ``g = Λd`` for every
component are one matrix product ``(B, D) @ (D, K·D)`` each, as in the
complete-data kernel; only ``A`` and the factor's rows ``U_m`` are gathered
per row. The fill is each row's nearest mean in its observed coordinates.

The statistics are those of the filled rows, taken by the complete-data
forms of :mod:`jaxgmm.kernels` with the marginal log-probabilities
(:func:`jaxgmm.kernels.statistics_from_log_prob`), plus corrections for the
completed coordinates: ``Σ r t`` in the sums and
``Σ r (t dᵀ + d tᵀ + t tᵀ + A⁻¹)`` in the scatter, placed at each row's
missing coordinates (see ``_corrections``).

Rows are bucketed on the host (:mod:`jaxgmm.incomplete`): rows missing
nothing take the complete-data kernel; diagonal and spherical covariances
need no factorisation (a masked form); full and tied covariances factorise
``A`` per row and component, by an unrolled Cholesky factorisation
vectorised over rows for few missing values, column by column for more, by
LAPACK for the most (the rules and their measurements:
``jaxgmm.incomplete._EXACT_MAX_MISSING``, ``_COLUMNWISE_MAX``), or once per
component for rows sharing a pattern. Rows sharing a pattern need
no fill either: their completion is affine in the observed values, so their
statistics are the complete-data moments of the observed coordinates, mapped
once per bucket (``_completed_pattern_stats``).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxgmm import kernels
from jaxgmm.incomplete import Bucket, IncompleteData, _EXACT_MAX_MISSING
from jaxgmm.matmul_precision import float32_matmuls
from jaxgmm.params import GMMParams
from jaxgmm.stats import SuffStats, recenter

_LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------- s × s factorisations


def _stack(rows: list) -> jax.Array:
    """Nested lists ``[i][j]`` of ``(...)`` arrays as one ``(..., s, s)`` array."""
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def _lower_inverse(L: list) -> list:
    """``L⁻¹`` of a lower-triangular ``L`` given as nested lists of ``(...)`` arrays (entries above the
    diagonal unused): forward substitution unrolled over the static size, elementwise over the batch."""
    s = len(L)
    inv_l = [[None] * s for _ in range(s)]
    for i in range(s):
        inv_l[i][i] = 1.0 / L[i][i]
        for j in range(i):
            inv_l[i][j] = -sum(L[i][p] * inv_l[p][j] for p in range(j, i)) * inv_l[i][i]
    return inv_l


def _unrolled_factor(A: jax.Array):
    """Cholesky ``A = L Lᵀ`` of SPD ``A (..., s, s)``, unrolled over the static ``s`` and elementwise over the
    batch (XLA:CPU runs LAPACK once per matrix, 10-15× slower for ``s ≤ 4``); returns ``log det A``,
    ``A⁻¹`` and ``F = L⁻ᵀ`` (``A⁻¹ = F Fᵀ``)."""
    s = A.shape[-1]
    eps = jnp.finfo(A.dtype).eps
    a = [[A[..., i, j] for j in range(s)] for i in range(s)]
    L = [[None] * s for _ in range(s)]
    for j in range(s):
        pivot = a[j][j] - sum((L[j][p] ** 2 for p in range(j)), jnp.zeros_like(a[j][j]))
        # Positive mathematically (A is a principal block of a precision); rounding must not make a NaN.
        L[j][j] = jnp.sqrt(jnp.maximum(pivot, eps * a[j][j]))
        for i in range(j + 1, s):
            L[i][j] = (a[i][j] - sum((L[i][p] * L[j][p] for p in range(j)), jnp.zeros_like(a[i][j]))) / L[j][j]
    inv_l = _lower_inverse(L)
    inverse = [[None] * s for _ in range(s)]
    for i in range(s):
        for j in range(i + 1):
            inverse[i][j] = inverse[j][i] = sum(inv_l[p][i] * inv_l[p][j] for p in range(i, s))
    zero = jnp.zeros_like(a[0][0])
    factor = [[inv_l[j][i] if j >= i else zero for j in range(s)] for i in range(s)]  # F = L⁻ᵀ
    log_det = 2 * sum(jnp.log(L[i][i]) for i in range(s))
    return log_det, _stack(inverse), _stack(factor)


def _columnwise_factor(A: jax.Array):
    """:func:`_unrolled_factor` one column at a time: the Cholesky factor's column ``j`` and ``L⁻¹``'s row ``j``
    in one step each, vectorised over the batch and the column (left-looking, ``s`` steps).

    Unrolled entry by entry, the factorisation grows to hundreds of fused kernels from ``s = 6`` on (34 ms
    at ``s = 8`` for 1,792 × 16 matrices, float32, 2 cores), and XLA:CPU calls LAPACK once per matrix
    (9-13 ms, with ``L⁻¹`` by substitution); this form took 5.8 ms.
    """
    s = A.shape[-1]
    eps = jnp.finfo(A.dtype).eps
    below = jnp.arange(s)
    columns = []  # of L, each (..., s), zero above the diagonal
    for j in range(s):
        v = A[..., :, j]
        if j:
            done = jnp.stack(columns, axis=-1)  # (..., s, j)
            v = v - jnp.sum(done * done[..., j : j + 1, :], axis=-1)
        # Positive mathematically (A is a principal block of a precision); rounding must not make a NaN.
        pivot = jnp.sqrt(jnp.maximum(v[..., j], eps * A[..., j, j]))
        columns.append(jnp.where(below == j, pivot[..., None], jnp.where(below > j, v / pivot[..., None], 0.0)))
    chol = jnp.stack(columns, axis=-1)
    rows = []  # of L⁻¹ by forward substitution: row i = (e_i − L[i, :i] L⁻¹[:i]) / L[i, i]
    for i in range(s):
        r = jnp.broadcast_to(jnp.eye(s, dtype=A.dtype)[i], A.shape[:-1])
        if i:
            r = r - jnp.sum(chol[..., i, :i, None] * jnp.stack(rows, axis=-2), axis=-2)
        rows.append(r / chol[..., i, i, None])
    inv_l = jnp.stack(rows, axis=-2)
    inverse = jnp.sum(inv_l[..., :, :, None] * inv_l[..., :, None, :], axis=-3)  # Σ_p L⁻¹_pi L⁻¹_pj
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return log_det, inverse, jnp.swapaxes(inv_l, -1, -2)


@float32_matmuls
def _lapack_factor(A: jax.Array):
    """:func:`_unrolled_factor` by LAPACK, for the largest ``s``."""
    s = A.shape[-1]
    chol = jnp.linalg.cholesky(A)
    eye = jnp.broadcast_to(jnp.eye(s, dtype=A.dtype), A.shape)
    inv_l = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
    factor = jnp.swapaxes(inv_l, -1, -2)
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return log_det, factor @ inv_l, factor


# The largest s that :func:`_factor` factorises column by column (unrolled up to _EXACT_MAX_MISSING; LAPACK
# beyond). 1,792 × 16 matrices, float32, 2 cores, ms, unrolled / column by column / LAPACK (with, up to
# s = 8, L⁻¹ by substitution): s = 4: 0.9 / 1.2 / -, 5: 2.3 / 1.8 / 5.4, 8: 34 / 5.8 / 9.0,
# 12: - / 52 / 64, 15: - / 91 / 81.
_COLUMNWISE_MAX = 12


def _factor(A: jax.Array):
    s = A.shape[-1]
    if s <= _EXACT_MAX_MISSING:
        return _unrolled_factor(A)
    return _columnwise_factor(A) if s <= _COLUMNWISE_MAX else _lapack_factor(A)


# --------------------------------------------------------------------------- full and tied covariances


class _Conditional(NamedTuple):
    """Per row and component, for a block of one bucket (full and tied covariances)."""

    wlp: jax.Array  # (B, K)        log α_k + log N(x_o | μ_ko, Σ_k,oo)
    filled: jax.Array  # (B, D)     the row, missing values set to the fill f
    shift: jax.Array  # (B, K, s)   t = E[x_m | x_o, k] − f_m (0 in unused slots)
    covariance: jax.Array  # (B|1, K|1, s, s)  Cov[x_m | x_o, k] (0 in unused slots)
    factor: jax.Array  # (B|1, K|1, s, s)      F with F Fᵀ = the conditional covariance (0 in unused slots)
    missing: jax.Array  # (B, s)     the missing coordinates
    valid: jax.Array  # (B, s)       which slots are real


class _Terms(NamedTuple):
    """What the blocks need of the parameters (full and tied), computed once per E-step."""

    factor: jax.Array  # (K', D, D)     U_k, Λ_k = U_k U_kᵀ; K' = K (full) or 1 (tied)
    precision: jax.Array  # (K', D, D)  Λ_k
    flat: jax.Array  # (D, K'·D)        the factors side by side, for one product per block
    means_factor: jax.Array  # (K, D)   U_kᵀ (μ_k − c)
    precision_flat: jax.Array  # (D, K'·D)  the precisions side by side
    means_precision: jax.Array  # (K, D)    Λ_k (μ_k − c)
    log_norm: jax.Array  # (K,)        log α_k + log det U_k (no 2π term: it depends on the observed count)
    center: jax.Array  # (D,)


def _terms(params: GMMParams, prec_chol: jax.Array) -> _Terms:
    storage = params.model.storage
    n_components, n_features = params.means.shape
    factor = prec_chol.reshape((-1, n_features, n_features))
    precision = storage.precision_matrices(prec_chol)
    center = kernels.shared_center(params)

    def side_by_side(matrices):  # (K', D, D) -> (D, K'·D) and the means' products (K, D), about c
        every = jnp.broadcast_to(matrices, (n_components, n_features, n_features))
        return (jnp.transpose(matrices, (1, 0, 2)).reshape(n_features, -1),
                jnp.einsum("kd,kde->ke", params.means - center, every))

    log_norm = jnp.log(params.weights) + storage.log_det_precision_cholesky(prec_chol, n_features)
    return _Terms(factor, precision, *side_by_side(factor), *side_by_side(precision), log_norm, center)


@float32_matmuls
def _matrix_conditional(params: GMMParams, terms: _Terms, bucket: Bucket) -> _Conditional:
    """The marginal log-densities and the conditional Gaussians of one block of a bucket.

    With ``y = U_kᵀ(x_f − μ_k)`` and ``g = Λ_k(x_f − μ_k)``, each one product ``(B, D) @ (D, K·D)`` (as the
    complete-data kernel's), ``g_m`` its entries at the missing coordinates, ``A = Λ_mm`` and
    ``t = −A⁻¹ g_m``, the Mahalanobis term of the marginal is ``‖y + U_mᵀ t‖²`` (``U_m`` the factor's rows at
    the missing coordinates): the complete row's, at its conditional mean.
    A sum of squares does not cancel, even for nearly singular covariances in float32 (``dᵀΛd − g_mᵀA⁻¹g_m``
    lost whole nats there), and an error in ``t`` enters it only squared. (``g_m`` as ``U_m y`` instead,
    from the gathered rows, took 1.13× as long per iteration for rows missing 4 values.)
    """
    means = params.means
    values, observed, missing = bucket.values, bucket.observed, bucket.missing
    n_rows, n_features = values.shape
    valid = bucket.valid()
    # Fill: each row's nearest mean in its observed coordinates, by two small products about the centre
    # (a (B, K, D) pass of differences took 2-8 % longer; a near tie picks either, and any fill is exact).
    centered_means = means - terms.center
    distance = (observed.astype(values.dtype) @ (centered_means**2).T
                - 2 * jnp.where(observed, values - terms.center, 0.0) @ centered_means.T)
    filled = jnp.where(observed, values, jnp.take(means, jnp.argmin(distance, axis=-1), axis=0))

    def per_component(flat, means_product):  # M_kᵀ(x_f − μ_k) for every k: (B, K, D)
        return ((filled - terms.center) @ flat).reshape(n_rows, -1, n_features) - means_product[None]

    y = per_component(terms.flat, terms.means_factor)
    g_m = jnp.take_along_axis(per_component(terms.precision_flat, terms.means_precision), missing[:, None, :],
                              axis=-1) * valid[:, None, :]  # (B, K, s)
    flat_index = missing[:, :, None] * n_features + missing[:, None, :]  # (B, s, s)
    A = jnp.moveaxis(terms.precision.reshape(terms.precision.shape[0], -1)[:, flat_index], 0, 1)
    pair = valid[:, None, :, None] & valid[:, None, None, :]
    A = jnp.where(pair, A, jnp.eye(bucket.width, dtype=A.dtype))  # unused slots: an identity block
    log_det_a, covariance, factor = _factor(A)
    shift = -jnp.sum(covariance * g_m[..., None, :], axis=-1)
    covariance, factor = covariance * pair, factor * pair
    rows_u = jnp.moveaxis(terms.factor[:, missing], 0, 1)  # (B, K', s, D)
    y = y + jnp.sum(shift[..., None] * rows_u, axis=2)
    maha = jnp.sum(y * y, axis=-1)
    n_observed = jnp.sum(observed, axis=-1)
    wlp = terms.log_norm - 0.5 * (log_det_a + maha + (n_observed * _LOG_2PI)[:, None])
    return _Conditional(wlp, filled, shift, covariance, factor, missing, valid)


class _PatternTerms(NamedTuple):
    """One missingness pattern's marginal and conditional Gaussians, per component, computed once per E-step."""

    observed: jax.Array  # (D − s,)        the observed coordinates o
    missing: jax.Array  # (s,)             the missing ones m
    flat: jax.Array  # (D − s, (D − s)·K)  U_o,k interleaved, [d, e·K + k]: the marginal precision's factors
    means_factor: jax.Array  # (D − s, K)  U_o,kᵀ (μ_k,o − c_o)
    means_observed: jax.Array  # (K, D − s)  μ_k,o − c_o
    regression: jax.Array  # (K, s, D − s)  R_k = Σ_mo Σ_oo⁻¹: E[x_m | x_o, k] = μ_k,m + R_k (x_o − μ_k,o)
    intercept: jax.Array  # (K, s)         μ_k,m − R_k (μ_k,o − c_o)
    log_norm: jax.Array  # (K,)            log α_k + log det U_o,k − (|o|/2) log 2π
    covariance: jax.Array  # (1, K, s, s)  Σ_mm − Σ_mo Σ_oo⁻¹ Σ_om
    factor: jax.Array  # (1, K, s, s)      its factor F F ᵀ
    center: jax.Array  # (D,)


@float32_matmuls
def _pattern_terms(params: GMMParams, terms: _Terms, bucket: Bucket) -> _PatternTerms:
    """The pattern of a ``pattern`` bucket: rows then need no per-row factorisation, and the marginal is the
    complete-data kernel's on the observed coordinates (one product, a sum of squares)."""
    n_components, n_features = params.means.shape
    missing = bucket.missing[0]
    width = missing.shape[0]
    observed = jnp.argsort(~bucket.observed[0], stable=True)[: n_features - width]
    cov = params.covariance_matrices
    s_oo = cov[:, observed][:, :, observed]
    s_om = cov[:, observed][:, :, missing]
    chol = jnp.linalg.cholesky(s_oo)
    eye = jnp.broadcast_to(jnp.eye(n_features - width, dtype=chol.dtype), chol.shape)
    factor_o = jnp.swapaxes(jax.scipy.linalg.solve_triangular(chol, eye, lower=True), -1, -2)  # U_o = L⁻ᵀ
    regression = jnp.swapaxes(jax.scipy.linalg.cho_solve((chol, True), s_om), -1, -2)  # (K, s, |o|)
    center = terms.center
    means_o = params.means[:, observed] - center[observed]
    # The conditional covariance from the precision (always positive definite, as for per-row buckets).
    precision_mm = terms.precision[:, missing][:, :, missing]
    _, covariance, factor = _factor(jnp.broadcast_to(precision_mm, (n_components, width, width))[None])
    log_det = -jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return _PatternTerms(
        observed=observed,
        missing=missing,
        flat=jnp.transpose(factor_o, (1, 2, 0)).reshape(n_features - width, -1),
        means_factor=jnp.einsum("ko,koe->ek", means_o, factor_o),
        means_observed=means_o,
        regression=regression,
        intercept=params.means[:, missing] - jnp.einsum("kso,ko->ks", regression, means_o),
        log_norm=jnp.log(params.weights) + log_det - 0.5 * (n_features - width) * _LOG_2PI,
        covariance=covariance,
        factor=factor,
        center=center,
    )


def _pattern_log_prob(terms: _PatternTerms, bucket: Bucket):
    """``(x_o − c_o (B, |o|), wlp (B, K))`` of rows sharing one pattern: the complete-data kernel's
    Mahalanobis terms on the observed coordinates, ``y`` laid out ``(B, |o|, K)``."""
    n_rows = bucket.values.shape[0]
    x_o = bucket.values[:, terms.observed] - terms.center[terms.observed]
    y = (x_o @ terms.flat).reshape(n_rows, terms.observed.shape[0], -1) - terms.means_factor[None]
    return x_o, terms.log_norm - 0.5 * jnp.sum(y * y, axis=1)


@float32_matmuls
def _pattern_conditional(terms: _PatternTerms, bucket: Bucket) -> _Conditional:
    """:func:`_matrix_conditional` for rows sharing one pattern (the per-row results). The fill is the
    conditional mean of each row's most probable component, so that component's completion adds nothing."""
    n_rows = bucket.values.shape[0]
    x_o, wlp = _pattern_log_prob(terms, bucket)
    regressions = jnp.transpose(terms.regression, (2, 0, 1)).reshape(x_o.shape[1], -1)  # side by side
    conditional_means = (x_o @ regressions).reshape(n_rows, -1, terms.missing.shape[0]) + terms.intercept[None]
    fill = jnp.take_along_axis(conditional_means, jnp.argmax(wlp, axis=-1)[:, None, None], axis=1)[:, 0]
    filled = bucket.values.at[:, terms.missing].set(fill)
    missing = jnp.broadcast_to(terms.missing, (n_rows, terms.missing.shape[0]))
    return _Conditional(wlp, filled, conditional_means - fill[:, None, :], terms.covariance, terms.factor,
                        missing, jnp.ones(missing.shape, bool))


@float32_matmuls
def _pattern_block(params: GMMParams, terms: _PatternTerms, bucket: Bucket):
    """Rows sharing one pattern: the moments of their observed coordinates, as complete rows of ``|o|``
    features (:func:`_completed_pattern_stats` completes them), and the block's log-likelihood."""
    x_o, wlp = _pattern_log_prob(terms, bucket)
    return kernels._nearest_mean_moments(x_o, wlp, bucket.weight, terms.means_observed, params.model.storage)


@float32_matmuls
def _completed_pattern_stats(params: GMMParams, terms: _PatternTerms, moments, fast: bool) -> SuffStats:
    """A pattern bucket's statistics, completed from the summed moments of its observed coordinates.

    The completion is affine in the observed values: ``E[x | x_o, k] − μ_k = J_k (x_o − μ_k,o)`` with
    ``J_k`` the identity at the observed coordinates and the regression ``R_k = Σ_mo Σ_oo⁻¹`` at the
    missing ones. So ``S1_k = J_k S1_k,o`` and ``S2_k = J_k S2_k,o J_kᵀ + N_k Cov[x_m | x_o, k]`` (the
    latter in the missing block): exact, with no fill or correction per row, and the rows cost what
    complete rows of ``|o|`` features cost. (Filling each row and correcting its statistics, as the
    per-row buckets do, took 1.6× the complete-data iteration on mid with 5 patterns.)
    """
    storage = params.model.storage
    n_components, n_features = params.means.shape
    n_observed = terms.observed.shape[0]
    observed_stats = kernels.moments_to_stats(moments, terms.means_observed, storage, params.covariance_type)
    dtype = observed_stats.sums.dtype
    embed = jnp.zeros((n_components, n_features, n_observed), dtype)  # J_k
    embed = embed.at[:, terms.observed, jnp.arange(n_observed)].set(1.0).at[:, terms.missing, :].set(terms.regression)
    sums = jnp.einsum("kdo,ko->kd", embed, observed_stats.sums)
    if storage.per_component:
        scatters = jnp.einsum("kdo,kop,kep->kde", embed, observed_stats.scatters, embed)
    else:  # tied: one regression for every component, one summed scatter
        scatters = embed[0] @ observed_stats.scatters @ embed[0].T
    missing = terms.missing
    conditional = jnp.zeros((n_components, n_features, n_features), dtype).at[:, missing[:, None], missing].set(
        observed_stats.counts[:, None, None] * terms.covariance[0])
    stats = SuffStats(observed_stats.counts, sums, scatters + storage.reduce_scatter(conditional), params.means,
                      params.covariance_type)
    return recenter(stats, kernels.statistics_centers(params, fast)) if fast else stats


@float32_matmuls
def _corrections(params: GMMParams, c: _Conditional, weighted_resp: jax.Array, centers: jax.Array) -> SuffStats:
    """What completing the missing coordinates adds to the statistics of the filled rows, about ``centers``.

    ``Σ_n r t`` at the missing coordinates (sums); ``Σ_n r t (x_f − c_k)ᵀ`` in the missing rows of the
    scatter and its transpose, as one product ``(D, B) @ (B, D·K)`` of the ``r t`` placed at each row's
    missing coordinates, about a shared centre so that no
    ``(B, K, D)`` differences are formed; and ``Σ_n r (t tᵀ + Cov)`` in the missing block.
    """
    n_rows, n_features = c.filled.shape
    n_components = centers.shape[0]
    rt = weighted_resp[..., None] * c.shift  # (B, K, s)
    center = jnp.mean(centers, axis=0)
    filled = c.filled - center
    placed = jnp.zeros((n_rows, n_features, n_components), rt.dtype)
    placed = placed.at[jnp.arange(n_rows)[:, None], c.missing].add(jnp.swapaxes(rt, 1, 2))  # (B, D, K)
    sums = jnp.sum(placed, axis=0).T  # (K, D)
    # (D, B) @ (B, D·K), not (D·K, B) @ (B, D): XLA:CPU ran the latter, with its 16 output columns, at a
    # quarter of the rate (mid, rows missing one value: 35 → 25 ms per iteration for 32,768 rows).
    rows = (filled.T @ placed.reshape(n_rows, -1)).reshape(n_features, n_features, n_components)  # [d, j, k]
    cross = jnp.transpose(rows, (2, 1, 0)) - sums[:, :, None] * (centers - center)[:, None, :]  # (K, D_j, D)
    per_pair = rt[..., :, None] * c.shift[..., None, :] + weighted_resp[..., None, None] * c.covariance
    per_pair = jnp.moveaxis(per_pair, 1, -1)  # (B, s, s, K)
    pair_index = c.missing[:, :, None] * n_features + c.missing[:, None, :]
    block = kernels._sums_by_group(per_pair.reshape(-1, n_components), pair_index.reshape(-1),
                                   n_features * n_features)
    block = jnp.moveaxis(block.reshape(n_features, n_features, n_components), -1, 0)
    # Symmetric exactly: r t_i t_j and r t_j t_i round differently.
    scatters = cross + jnp.swapaxes(cross, -1, -2) + 0.5 * (block + jnp.swapaxes(block, -1, -2))
    return SuffStats(jnp.zeros(n_components, rt.dtype), sums, params.model.storage.reduce_scatter(scatters),
                     centers, params.covariance_type)


def _matrix_block(params, terms, fast, bucket: Bucket):
    c = _matrix_conditional(params, terms, bucket)
    w = bucket.weight
    filled_stats, log_likelihood = kernels.statistics_from_log_prob(params, c.filled, c.wlp, w, fast=fast)
    weighted_resp, _ = kernels._responsibilities(c.wlp, w)
    corrections = _corrections(params, c, weighted_resp, kernels.statistics_centers(params, fast))
    return (filled_stats, corrections), log_likelihood


# --------------------------------------------------------------------------- diagonal and spherical covariances


def _masked_log_prob(params: GMMParams, prec_chol: jax.Array, bucket: Bucket):
    """Variance layouts: ``(wlp (B, K), x − μ_k with 0 where missing (B, K, D))``; the marginal of the observed
    coordinates just drops the missing ones."""
    u = params.model.storage.per_coordinate(prec_chol, params.n_features)  # (K, D): 1/σ_kd
    observed = bucket.observed
    diff = jnp.where(observed[:, None, :], bucket.values[:, None, :] - params.means[None], 0.0)
    maha = jnp.sum((diff * u) ** 2, axis=-1)
    log_det = observed.astype(u.dtype) @ jnp.log(u).T
    n_observed = jnp.sum(observed, axis=-1)
    wlp = jnp.log(params.weights) + log_det - 0.5 * (maha + (n_observed * _LOG_2PI)[:, None])
    return wlp, diff


@float32_matmuls
def _masked_block(params, prec_chol, fast, bucket: Bucket):
    """Diagonal and spherical covariances: conditional means are the components' means, conditional variances
    their variances.

    So the completed row for component ``k`` differs from ``μ_k`` by exactly the masked differences
    ``o ⊙ (x − μ_k)`` that the marginal density takes anyway: the scatters are their weighted squares
    (plus ``σ²_kd Σ_n r_nk [x_nd missing]``), with no fill and no by-group corrections. The sums
    ``Σ_n r_nk o_n ⊙ (x_n − μ_k)`` are two products about the shared centre ``c``,
    ``rᵀ(o ⊙ (x − c)) − (μ_k − c) ⊙ rᵀo``: their rounding, about ``eps · ‖μ_k − c‖`` in the new mean, is
    that of storing the mean, and reaches the covariances only times the step ``μ_new − μ_k`` (0 at a fixed
    point). (Filling with the nearest mean and correcting by group, as the complete-data kernel's moments do,
    took three more ``(B, K, D)`` passes: on mid with 10 % missing, diag 1.3× and spherical 2.6× this form's
    time.) About the means; moved exactly to the shared centre for ``fast``.
    """
    storage = params.model.storage
    wlp, diff = _masked_log_prob(params, prec_chol, bucket)
    weighted_resp, log_likelihood = kernels._responsibilities(wlp, bucket.weight)
    center = kernels.shared_center(params)
    observed_weight = weighted_resp.T @ bucket.observed.astype(wlp.dtype)  # (K, D): Σ_n r_nk [x_nd observed]
    counts = jnp.sum(weighted_resp, axis=0)
    sums = (weighted_resp.T @ jnp.where(bucket.observed, bucket.values - center, 0.0)
            - (params.means - center) * observed_weight)
    variances = 1.0 / storage.per_coordinate(prec_chol, params.n_features) ** 2  # (K, D)
    scatters = (storage.scatter(weighted_resp, diff)
                + storage.reduce_scatter((counts[:, None] - observed_weight) * variances))
    stats = SuffStats(counts, sums, scatters, params.means, params.covariance_type)
    if fast:  # the complete rows' statistics are about the shared centre
        stats = recenter(stats, kernels.statistics_centers(params, fast))
    return stats, log_likelihood


# --------------------------------------------------------------------------- the E-step


def _block_size(bucket: Bucket, params: GMMParams, block_size: int | None) -> int:
    if block_size is not None:
        return block_size
    width = bucket.width
    if bucket.kind in ("pattern", "masked"):
        # Rows sharing a pattern, and the masked form, gather nothing per row: the complete kernel's blocks.
        # (Sized as the per-row buckets below, a 20,480-row pattern bucket ran as 56 blocks of 364 rows, and
        # mid with 5 patterns took 2.2x the complete-data iteration instead of 1.46x.)
        per_row_features = params.n_features
    else:
        # Per row: the (K, D) products, the factor's gathered rows and the slots' by-group values (s · K · D)
        # and pairs (s² · K).
        per_row_features = params.n_features * (3 + width) + width * width
    n_rows = bucket.values.shape[0]
    return kernels.even_block_size(n_rows, kernels.default_block_size(n_rows, params.n_components, per_row_features))


def _conditional_terms(params: GMMParams, prec_chol, bucket: Bucket):
    """What a bucket's blocks need of the parameters (full and tied): computed once per E-step."""
    terms = _terms(params, prec_chol)
    return _pattern_terms(params, terms, bucket) if bucket.kind == "pattern" else terms


def _conditional(params: GMMParams, terms, bucket: Bucket) -> _Conditional:
    if bucket.kind == "pattern":
        return _pattern_conditional(terms, bucket)
    return _matrix_conditional(params, terms, bucket)


def _bucket_functions(params: GMMParams, prec_chol, fast: bool, bucket: Bucket):
    """``(block, finish)`` for an incomplete bucket: ``block(Bucket) -> (sums, Σ w log p)`` per block of rows,
    ``finish(summed) -> SuffStats`` once."""
    if not params.model.storage.is_matrix:
        return (lambda b: _masked_block(params, prec_chol, fast, b)), (lambda stats: stats)
    terms = _conditional_terms(params, prec_chol, bucket)
    if bucket.kind == "pattern":
        return (lambda b: _pattern_block(params, terms, b),
                lambda moments: _completed_pattern_stats(params, terms, moments, fast))

    def finish(total):  # the filled rows' moments, and their completion
        filled, corrections = total
        return kernels.finish_statistics(filled, params) + corrections

    return (lambda b: _matrix_block(params, terms, fast, b)), finish


def e_step(params: GMMParams, data: IncompleteData, *, block_size: int | None = None, fast: bool = False):
    """:func:`jaxgmm.e_step` of incomplete data: expected statistics and the observed-data log-likelihood.

    Returns ``(SuffStats, Σ_n w_n log p(x_n,o))``, centred as the complete-data E-step's.
    """
    prec_chol = params.precisions_cholesky
    stats = log_likelihood = None
    for bucket in data.buckets:
        if bucket.kind == "complete":
            bucket_stats, bucket_ll = kernels.complete_e_step(params, bucket.values, bucket.weight,
                                                              block_size=block_size, fast=fast)
        else:
            fn, finish = _bucket_functions(params, prec_chol, fast, bucket)

            def block(values, observed, missing, weight, index, fn=fn, kind=bucket.kind):
                values = jnp.where(weight[:, None] > 0, values, 0.0)
                return fn(Bucket(values, observed, missing, weight, index, kind))

            arrays = (bucket.values, bucket.observed, bucket.missing, bucket.weight, bucket.index)
            total, bucket_ll = kernels.sum_over_blocks(block, arrays, _block_size(bucket, params, block_size))
            bucket_stats = finish(total)
        stats = bucket_stats if stats is None else stats + bucket_stats
        log_likelihood = bucket_ll if log_likelihood is None else log_likelihood + bucket_ll
    return stats, log_likelihood


# --------------------------------------------------------------------------- per-row results


def _map_rows(fn, bucket: Bucket, block_size: int):
    """``fn(block) -> (B, ...)`` per row of ``bucket``, over blocks of rows (bounded memory)."""
    n_rows = bucket.values.shape[0]
    block_size = max(1, min(block_size, n_rows))
    n_blocks = -(-n_rows // block_size)
    pad = n_blocks * block_size - n_rows

    def blocks(a):
        a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
        return a.reshape((n_blocks, block_size) + a.shape[1:])

    leaves, treedef = jax.tree.flatten(bucket)
    out = jax.lax.map(lambda ls: fn(jax.tree.unflatten(treedef, ls)), [blocks(a) for a in leaves])
    return jax.tree.map(lambda a: a.reshape((n_blocks * block_size,) + a.shape[2:])[:n_rows], out)


def _bucket_rows(params: GMMParams, bucket: Bucket, fn_matrix, fn_masked, fn_complete):
    prec_chol = params.precisions_cholesky
    if bucket.kind == "complete":
        return fn_complete(bucket.values)
    block_size = _block_size(bucket, params, None)
    if params.model.storage.is_matrix:
        terms = _conditional_terms(params, prec_chol, bucket)
        return _map_rows(lambda b: fn_matrix(b, _conditional(params, terms, b)), bucket, block_size)
    return _map_rows(lambda b: fn_masked(b, *_masked_log_prob(params, prec_chol, b)), bucket, block_size)


@jax.jit
def weighted_log_prob(params: GMMParams, data: IncompleteData) -> jax.Array:
    """``log α_k + log N(x_n,o | μ_k,o, Σ_k,oo)``, shape ``(N, K)`` in the caller's row order; rows observing
    nothing get ``log α_k``."""
    from jaxgmm.density import weighted_log_prob as complete_wlp

    per_bucket = [_bucket_rows(params, b, lambda b, c: c.wlp, lambda b, wlp, diff: wlp,
                               lambda x: complete_wlp(params, x)) for b in data.buckets]
    return data.scatter_rows(per_bucket, jnp.log(params.weights))


@jax.jit
def impute(params: GMMParams, data: IncompleteData) -> jax.Array:
    """Conditional means ``E[x_n | x_n,o]`` under the mixture, ``(N, D)`` in the caller's order (observed
    entries as given; rows observing nothing get the mixture's mean)."""

    def matrix(b, c):
        resp = jax.nn.softmax(c.wlp, axis=-1)
        fill = jnp.sum(resp[..., None] * c.shift, axis=1) * c.valid  # (B, s)
        rows = jnp.arange(b.values.shape[0])[:, None]
        return c.filled.at[rows, c.missing].add(jnp.where(c.valid, fill, 0.0), mode="drop")

    def masked(b, wlp, diff):
        resp = jax.nn.softmax(wlp, axis=-1)
        return jnp.where(b.observed, b.values, resp @ params.means)

    per_bucket = [_bucket_rows(params, b, matrix, masked, lambda x: x) for b in data.buckets]
    return data.scatter_rows(per_bucket, params.weights @ params.means)


@jax.jit
def sample_missing(key: jax.Array, params: GMMParams, data: IncompleteData) -> jax.Array:
    """One draw of every missing value from ``p(x_m | x_o)``: a component from its posterior given the
    observed values, then the component's conditional Gaussian; ``(N, D)`` in the caller's order.
    Rows observing nothing are drawn from the mixture."""
    dtype = params.means.dtype
    n_features = params.n_features

    outs = []
    for i, bucket in enumerate(data.buckets):
        bucket_key = jax.random.fold_in(key, i)

        def matrix(b, c, bucket_key=bucket_key):
            k1, k2 = jax.random.split(jax.random.fold_in(bucket_key, b.index[0]))
            z = jax.random.categorical(k1, c.wlp, axis=-1)  # (B,)
            shift = jnp.take_along_axis(c.shift, z[:, None, None], axis=1)[:, 0]  # (B, s)
            factor = c.factor
            factor = jnp.broadcast_to(factor, (b.values.shape[0], c.wlp.shape[1]) + factor.shape[-2:])
            factor = jnp.take_along_axis(factor, z[:, None, None, None], axis=1)[:, 0]  # (B, s, s)
            noise = jax.random.normal(k2, shift.shape, dtype)
            draw = shift + jnp.einsum("nij,nj->ni", factor, noise)
            rows = jnp.arange(b.values.shape[0])[:, None]
            return c.filled.at[rows, c.missing].add(jnp.where(c.valid, draw, 0.0), mode="drop")

        def masked(b, wlp, diff, bucket_key=bucket_key):
            k1, k2 = jax.random.split(jax.random.fold_in(bucket_key, b.index[0]))
            z = jax.random.categorical(k1, wlp, axis=-1)
            sigma = 1.0 / params.model.storage.per_coordinate(params.precisions_cholesky, n_features)
            draw = params.means[z] + sigma[z] * jax.random.normal(k2, b.values.shape, dtype)
            return jnp.where(b.observed, b.values, draw)

        outs.append(_bucket_rows(params, bucket, matrix, masked, lambda x: x))
    # Rows observing nothing: draws from the mixture.
    k1, k2 = jax.random.split(jax.random.fold_in(key, len(data.buckets)))
    z = jax.random.categorical(k1, jnp.log(params.weights), shape=(data.n_rows,))
    noise = jax.random.normal(k2, (data.n_rows, n_features), dtype)
    prior = params.means[z] + params.model.storage.cholesky_noise(params.covariances, z, noise)
    out = prior
    for bucket, values in zip(data.buckets, outs):
        out = out.at[bucket.index].set(values, mode="drop")
    return out
