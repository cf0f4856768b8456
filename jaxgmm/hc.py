"""Model-based agglomerative hierarchical clustering: mclust's default EM start.

R mclust's ``Mclust()`` / ``mclustBIC()`` start every ``(model, G)`` fit with
``G > 1`` from a partition cut out of one merge tree, ``hc(X, modelName =
"VVV", use = "SVD")``. This module is that initialiser, written in numpy
(it is a sequential merge algorithm and runs before any tracing):

* :func:`hc_transform` -- the data the tree is built on (mclust's ``hcUse``).
* :func:`hc_merges` -- the merge tree, in mclust's ``hc`` convention.
* :func:`hc_partitions` -- the ``G``-group cut of a tree (mclust's ``hclass``).
* :func:`hc_start` and :func:`hc_responsibilities` -- the start ``mclustBIC``
  uses, including its random subset for large ``N``.

What mclust 6.0.0 does (``R/mbahc.R``, ``src/mclust.f``: ``hcvvv``, ``hceii``)
-------------------------------------------------------------------------------
**Data** (``use``). ``"VARS"``: the variables as given. ``"SVD"`` (the default
``mclust.options("hcUse")``): standardise each column (centre, divide by its
standard deviation with denominator ``N - 1``), drop columns that are not
finite afterwards (constant ones), take the thin SVD ``S = U diag(d) V^T``
and use ``Z = S V diag(d)^(-1/2)`` (that is ``U diag(d)^(1/2)``).

**Merge criterion.** Every row starts as its own group; at each step the pair
of groups whose merge changes the classification criterion least is merged.
For ``"VVV"`` a group ``k`` of ``n_k`` rows with scatter matrix ``W_k`` (sum
of outer products of deviations from its mean) costs::

    term_k = n_k * log(beta * (tr W_k + alpha) / n_k)                 if n_k <= D
    term_k = n_k * log(det(W_k / n_k) + beta * (tr W_k + alpha) / n_k)  otherwise

(a singleton costs ``log(alpha * beta)``), and the pair ``(i, j)`` costs
``term_(i u j) - term_i - term_j`` with ``W_(i u j) = W_i + W_j + n_i n_j /
(n_i + n_j) (m_i - m_j)(m_i - m_j)^T``. With mclust's defaults ``beta = 1``
and ``alpha = tr W(Z) / (N D)`` -- the total scatter of the clustered data
over ``N D``, floored at machine epsilon. (If ``det(W/n)`` is exactly 0 the
first form is used; if ``tr W = 0`` it is ``n log(alpha beta / n)``.)
*mclust's determinants are not exactly these*: ``hcvvv`` keeps a triangular
factor of each ``W`` but stores only its first row (in every storage row),
so an older group of more than 2 rows enters later determinants through a
different matrix (see ``_merges_vvv``). Traces and means are exact. We
reproduce that arithmetic, since the point is mclust's start.
``"EII"`` is Ward's criterion, ``n_i n_j / (n_i + n_j) ||m_i - m_j||^2``,
updated by the Lance-Williams formula.

**Ties** are broken as mclust's Fortran does. Groups live in slots
``0 .. g-1``; the pair costs are scanned in the order ``(0,1), (0,2), (1,2),
(0,3), ...`` (by the larger slot, then the smaller) and the *last* pair
attaining the minimum is merged. The merged group takes the smaller slot and
the group in the last slot moves into the freed one. Exact ties are common
with duplicated rows (every pair of equal rows has the same cost).

**Names.** A group is named by its smallest row index; merge ``t`` is
reported as the two merged names ``(a, b)``, ``a < b`` (mclust's ``hc``
object is this, 1-based and transposed). :func:`hc_partitions` numbers the
groups of a cut in order of their first row (mclust's ``hclass`` with
``partconv(consec = TRUE)``).

**Large N** (``mclustBIC``, ``mclust.options("subset") = 2000``). With more
rows than ``subset`` (and no user tree), mclust draws ``subset`` rows at
random without replacement (R's ``sample``), builds the tree on those rows
only, and for each ``(model, G)``: one M-step of *that* covariance model
from the subset's hard partition, then one E-step on all rows; EM (``me``)
starts from those E-step responsibilities. ``G = 1`` never uses the tree
(one Gaussian fitted to all rows). When ``N <= D`` mclust builds the tree
with ``"EII"`` instead of ``"VVV"``; for one-dimensional data it uses
quantile classes (``qclass``) instead of a tree. Neither switch is made
here: choose ``model`` accordingly.

Agreement with mclust: the same merge sequence for the same data (one Python
loop over merges, vectorised over pairs; means, traces and the costs of
small groups follow the Fortran's operation order, so exact ties -- e.g.
between duplicated rows -- break the same way). Determinants are computed
differently (LU of the Gram matrices here, Givens-updated factors there) and
the SVD by a different LAPACK call, so a merge decided by a near-tie in the
last bits can differ: on Old Faithful (a grid of rounded values) the
``"EII"``/``"SVD"`` tree differs from mclust's after 18 merges, while its cuts
into 1..9 groups and every other tree tested are identical.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

HC_MODELS = ("VVV", "EII")
HC_USES = ("SVD", "VARS")

_FLMAX = np.finfo(np.float64).max
_EPS = np.finfo(np.float64).eps
_RTHALF = 0.7071067811865476  # the Fortran's sqrt(1/2) literal (== math.sqrt(0.5))


# ----------------------------------------------------------------------------- validation


def _check_data(X) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise ValueError(f"X must be a numeric array, got dtype {X.dtype}.")
    X = np.array(X, dtype=np.float64)  # a copy: the caller's array is never changed
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (N, D), got shape {X.shape}.")
    if X.shape[0] < 2:
        raise ValueError(f"hierarchical clustering needs at least 2 rows, got {X.shape[0]}.")
    if X.shape[1] < 1:
        raise ValueError("X has no columns.")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values.")
    return X


def _check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Invalid {name} {value!r}: expected one of {choices}.")


def _check_n_components(n_components, n):
    if (
        isinstance(n_components, bool)
        or not isinstance(n_components, (int, np.integer))
        or not 1 <= n_components <= n
    ):
        raise ValueError(f"n_components must be an integer in 1..{n} (the number of rows), got {n_components!r}.")


# ----------------------------------------------------------------------------- data


def hc_transform(X, use: str = "SVD") -> np.ndarray:
    """The data mclust's ``hc`` clusters, for ``use`` (``mclust.options("hcUse")``).

    Parameters
    ----------
    X : array_like, shape (N, D)
    use : {"SVD", "VARS"}
        ``"VARS"``: ``X`` itself. ``"SVD"``: ``Z = S V diag(d)^(-1/2)`` where
        ``S`` is ``X`` with every column centred and divided by its standard
        deviation (denominator ``N - 1``), constant columns dropped, and
        ``S = U diag(d) V^T`` its thin SVD.

    Returns
    -------
    Z : ndarray, shape (N, D') float64
        ``D' = D`` for ``"VARS"``; ``min(N, D'')`` for ``"SVD"``, ``D''`` the
        number of non-constant columns. Column signs are arbitrary (the hc
        criteria do not depend on them).

    Examples
    --------
    >>> X = np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 2.0], [4.0, 7.0]])
    >>> Z = hc_transform(X, "SVD")
    >>> Z.shape
    (4, 2)
    >>> G = Z.T @ Z  # = diag(d): orthogonal columns, Z = U diag(d)^(1/2)
    >>> np.allclose(G, np.diag(np.diag(G)))
    True
    """
    X = _check_data(X)
    _check_choice(use, "use", HC_USES)
    if use == "VARS":
        return X
    n = X.shape[0]
    # Exactly rounded column sums (R's colMeans and sum() accumulate in long double).
    center = np.array([math.fsum(col) / n for col in X.T])
    S = X - center
    sd = np.array([math.sqrt(math.fsum(col * col) / max(1, n - 1)) for col in S.T])
    with np.errstate(divide="ignore", invalid="ignore"):
        S = S / sd
    S = S[:, np.all(np.isfinite(S), axis=0)]
    if S.shape[1] == 0:
        raise ValueError('use="SVD" needs at least one non-constant column.')
    _, d, Vt = np.linalg.svd(S, full_matrices=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        Z = (S @ Vt.T) * (1.0 / np.sqrt(d))
    if not np.all(np.isfinite(Z)):
        raise ValueError('use="SVD": the standardised data are rank deficient (a zero singular value).')
    return Z


def _seq_sq_sum(v: np.ndarray) -> np.ndarray:
    """``sum(v**2)`` over the last axis, added left to right (as the reference BLAS ``ddot``)."""
    acc = v[..., 0] * v[..., 0]
    for k in range(1, v.shape[-1]):
        acc = acc + v[..., k] * v[..., k]
    return acc


def _trace_w(Z: np.ndarray) -> float:
    """mclust's ``traceW``: total sum of squares about the column means (its operation order)."""
    n = Z.shape[0]
    fac = 1.0 / math.sqrt(n)
    u = np.cumsum(fac * Z, axis=0)[-1]  # sqrt(n) * mean, accumulated row by row
    ss = 0.0
    for j in range(Z.shape[1]):
        col = Z[:, j] + (-fac) * u[j]
        ss = ss + float(np.cumsum(col * col)[-1])
    return ss


# ----------------------------------------------------------------------------- the merge engine


class _Agglomeration:
    """Slots, pair costs and the minimum search shared by the models.

    ``D[r, c]`` (kept symmetric) is the cost of merging the groups in slots
    ``r`` and ``c``. For each column ``c`` the minimum over rows ``r < c`` and
    the *largest* such row attaining it are cached, so the global choice --
    the last minimum in the Fortran's packed order -- is the largest column
    attaining the smallest column minimum, at its cached row.
    """

    def __init__(self, D: np.ndarray):
        n = D.shape[0]
        self.D = D
        self.g = n
        self.name = np.arange(n)
        self.colmin = np.full(n, np.inf)
        self.colarg = np.zeros(n, dtype=np.int64)
        rows = np.arange(n)
        masked = np.where(rows[:, None] < rows[None, :], D, np.inf)
        self.colmin[1:] = masked[:, 1:].min(axis=0)
        flipped = masked[::-1, 1:]
        self.colarg[1:] = n - 1 - np.argmin(flipped, axis=0)
        del masked, flipped

    def _rescan(self, c: int) -> None:
        col = self.D[:c, c]
        self.colmin[c] = col.min()
        self.colarg[c] = c - 1 - int(np.argmin(col[::-1]))

    def best(self) -> tuple[int, int, float]:
        cm = self.colmin[1 : self.g]
        m = cm.min()
        c = int(len(cm) - np.argmin(cm[::-1]))  # last column attaining the minimum (slot index)
        return int(self.colarg[c]), c, float(m)

    def move_last_into(self, b: int) -> int:
        """Move the group in the last slot into slot ``b``; returns the old last slot."""
        last = self.g - 1
        if b != last:
            D = self.D
            D[b, :last] = D[last, :last]
            D[:last, b] = D[:last, last]
            D[b, b] = np.inf
        return last

    def finish_merge(self, a: int, b: int, values: np.ndarray) -> None:
        """After a merge into slot ``a`` (the last group moved into ``b``) with ``g`` already
        reduced: store the new costs ``values (g,)`` of slot ``a`` and refresh the column minima."""
        g, D = self.g, self.D
        values = values.copy()
        values[a] = np.inf
        D[a, :g] = values
        D[:g, a] = values
        if a >= 1:
            self._rescan(a)
        if b < g and b >= 1:
            self._rescan(b)
        cols = np.arange(a + 1, g)
        cols = cols[cols != b]
        if cols.size == 0:
            return
        arg = self.colarg[cols]
        stale = (arg == a) | ((arg == b) & (cols > b))
        for c in cols[stale]:
            self._rescan(int(c))
        cols = cols[~stale]
        for r, sel in ((a, cols), (b, cols[cols > b])):
            if sel.size == 0:
                continue
            val = D[r, sel]
            cur = self.colmin[sel]
            take = (val < cur) | ((val == cur) & (r > self.colarg[sel]))
            self.colmin[sel[take]] = val[take]
            self.colarg[sel[take]] = r

    def record(self, a: int, b: int) -> tuple[int, int]:
        """Names of the pair merged from slots ``a < b``; updates the names (before the move)."""
        na, nb = int(self.name[a]), int(self.name[b])
        lo, hi = min(na, nb), max(na, nb)
        self.name[a] = lo
        self.name[b] = self.name[self.g - 1]
        return lo, hi


def _pairwise_singleton_sq(Z: np.ndarray, scale_i: float, scale_j: float) -> np.ndarray:
    """Squared norms of the singleton-pair vectors, ``(N, N)``.

    ``scale_i = None`` (``hcvvv``): ``||(z_i - z_j) sqrt(1/2)||^2``; otherwise
    (``hceii``) ``||scale_i z_i + (-scale_j) z_j||^2``. Computed in row blocks
    (about 32 MB at a time), summed in the reference ``ddot``'s order.
    """
    n, p = Z.shape
    out = np.empty((n, n))
    block = max(1, int(4_000_000 // max(1, n * p)))
    for s in range(0, n, block):
        zi = Z[s : s + block, None, :]
        if scale_i is None:  # VVV: (z_i - z_j) * sqrt(1/2)
            v = (zi - Z[None, :, :]) * _RTHALF
        else:  # EII: sqrt(1/2) z_i + (-sqrt(1/2)) z_j
            v = scale_i * zi + (-scale_j) * Z[None, :, :]
        out[s : s + block] = _seq_sq_sum(v)
    return out


def _merges_eii(Z: np.ndarray) -> np.ndarray:
    n = Z.shape[0]
    half = math.sqrt(1.0 / 2.0)
    D = _pairwise_singleton_sq(Z, half, half)
    np.fill_diagonal(D, np.inf)
    agg = _Agglomeration(D)
    size = np.ones(n)
    merges = np.empty((n - 1, 2), dtype=np.int64)
    for t in range(n - 1):
        a, b, dold = agg.best()
        merges[t] = agg.record(a, b)
        if agg.g == 2:
            break
        g_old = agg.g
        na, nb = size[a], size[b]
        nab = na + nb
        ro = size[:g_old]
        new = ((ro + na) * D[:g_old, a] + (ro + nb) * D[:g_old, b] - ro * dold) / (ro + nab)
        last = agg.move_last_into(b)
        if b != last:
            new[b] = new[last]
            size[b] = size[last]
        size[a] = nab
        agg.g -= 1
        agg.finish_merge(a, b, new[: agg.g])
    return merges


def _stored_gram(rho: np.ndarray, n_rows: float) -> np.ndarray:
    """``U^T U`` for the triangle mclust stores for a group (see :func:`_merges_vvv`).

    ``hcvvv`` writes the first row ``rho`` of the group's Cholesky factor into
    each of its ``r = min(n - 1, D)`` storage rows and reads row ``k`` back from
    column ``k``: ``U[k, k:] = rho[k:]``, so ``(U^T U)[i, j] = rho_i rho_j
    min(min(i, j) + 1, r)``.
    """
    p = rho.shape[0]
    r = int(min(n_rows - 1, p))
    k = np.arange(p)
    mult = np.minimum(np.minimum(k[:, None], k[None, :]) + 1, r)
    return rho[:, None] * rho[None, :] * mult


def _merges_vvv(Z: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """The ``hcvvv`` merge sequence.

    The Fortran keeps, for each group, its mean (as ``sqrt(n) * mean``), the
    trace of its scatter ``W`` and a triangular factor of ``W``, updated by
    Givens rotations. It stores that factor in the group's member rows, but
    copies the factor's *first* row into every storage row, so when a group
    is used again it stands for ``U^T U`` (:func:`_stored_gram`) rather than
    ``W``: only for groups of at most 2 rows are they equal. The exact factor
    is used once, in the pair costs computed right after the group is formed
    (and for the group formed from such a pair). Reproducing mclust's trees
    means reproducing this, so the determinants here are of::

        C_a + S_j + v v^T      costs of the newest group a with each group j
        S_i + S_j + v v^T      the factor of a group formed from an older pair

    (``C`` the exact factor's Gram, ``S`` the stored one, ``v v^T`` the
    between-means term). Traces and means are exact.
    """
    n, p = Z.shape
    alpha = max(alpha * _trace_w(Z / math.sqrt(n * p)), _EPS)
    ablog = math.log(beta * alpha)

    trc0 = _pairwise_singleton_sq(Z, None, None)
    D = 2.0 * np.log(beta * (trc0 + alpha) / 2.0) - (ablog + ablog)
    del trc0
    np.fill_diagonal(D, np.inf)
    agg = _Agglomeration(D)

    head = Z.copy()  # sqrt(n_k) * mean_k
    size = np.ones(n)
    trace = np.zeros(n)
    term = np.full(n, ablog)
    rho = np.zeros((n, p))  # first row of each group's factor when it was formed
    S = np.zeros((n, p, p))  # the stored factor's Gram (0 for singletons)
    last_trm = np.zeros(n)  # terms of the newest group merged with each slot
    prev = -1  # slot of the newest group
    C_prev = None  # its exact Gram

    def terms(nij, trc, gram):
        """``vvvtij``: the cost of groups of sizes ``nij`` with traces ``trc``."""
        out = np.empty_like(trc)
        small = nij <= p
        out[small] = nij[small] * np.log(beta * (trc[small] + alpha) / nij[small])
        big = np.flatnonzero(~small)
        if big.size:
            nb, tb = nij[big], trc[big]
            zero = tb == 0.0
            res = np.empty_like(tb)
            res[zero] = nb[zero] * np.log((alpha * beta) / nb[zero])
            nz = np.flatnonzero(~zero)
            if nz.size:
                sign, logdet = np.linalg.slogdet(gram(big[nz]))
                nn, tt = nb[nz], tb[nz]
                c = beta * (tt + alpha) / nn
                detlog = logdet - p * np.log(nn)
                with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                    val = np.where(
                        detlog <= 0.0,
                        np.log(np.exp(np.minimum(detlog, 0.0)) + c),
                        np.log(1.0 + np.exp(-np.maximum(detlog, 0.0)) * c) + detlog,
                    )
                val = np.where(sign > 0, val, np.log(c))  # singular: det2mc's -FLMAX branch
                res[nz] = nn * val
            out[big] = res
        return out

    merges = np.empty((n - 1, 2), dtype=np.int64)
    for t in range(n - 1):
        a, b, dopt = agg.best()
        merges[t] = agg.record(a, b)
        if agg.g == 2:
            break
        na, nb = size[a], size[b]
        nab = na + nb
        q = 1.0 / nab
        si, sj = math.sqrt(na * q), math.sqrt(nb * q)
        if na == 1 and nb == 1:
            v = (head[a] - head[b]) * _RTHALF
        else:
            v = sj * head[a] + (-si) * head[b]
        trc = (trace[a] + trace[b]) + float(_seq_sq_sum(v))
        vvT = np.outer(v, v)
        if t > 0 and (a == prev or b == prev):  # a pair with the newest group: its cost is fresh
            other = b if a == prev else a
            tm = last_trm[other]
            C = C_prev + S[other] + vvT
            base = rho[prev]
        else:
            tm = 2.0 * math.log(beta * (trc + alpha) / 2.0) if t == 0 else dopt + (term[a] + term[b])
            C = S[a] + S[b] + vvT
            base = rho[b] if nb > 1 else (rho[a] if na > 1 else v)
        # the first row of the new factor (unique up to sign); if its first column
        # is exactly 0 the Givens rotations leave the first row of the starting factor
        new_rho = C[0] / math.sqrt(C[0, 0]) if C[0, 0] > 0.0 else base.copy()
        new_head = si * head[a] + sj * head[b]

        last = agg.move_last_into(b)
        if b != last:
            head[b], size[b], trace[b], term[b] = head[last], size[last], trace[last], term[last]
            rho[b], S[b] = rho[last], S[last]
        head[a], size[a], trace[a], term[a] = new_head, nab, trc, tm
        rho[a], S[a] = new_rho, _stored_gram(new_rho, nab)
        agg.g -= 1
        g = agg.g

        # costs of merging the new group (slot a) with every other slot
        nj = size[:g]
        nij = nab + nj
        qij = 1.0 / nij
        s_a = np.sqrt(nab * qij)
        s_j = np.sqrt(nj * qij)
        vv = s_a[:, None] * head[:g] + (-s_j)[:, None] * head[a][None, :]
        trcij = (trc + trace[:g]) + _seq_sq_sum(vv)
        trm = terms(nij, trcij, lambda idx, C=C, vv=vv: C + S[idx] + vv[idx, :, None] * vv[idx, None, :])
        last_trm[:g] = trm
        agg.finish_merge(a, b, trm - (tm + term[:g]))
        prev, C_prev = a, C
    return merges


# ----------------------------------------------------------------------------- public API


def hc_merges(X, *, model: str = "VVV", use: str = "SVD", alpha: float = 1.0, beta: float = 1.0) -> np.ndarray:
    """mclust's model-based agglomerative hierarchical clustering tree (``hc``).

    Parameters
    ----------
    X : array_like, shape (N, D)
        Finite values, ``N >= 2``.
    model : {"VVV", "EII"}
        The classification likelihood merged on (see the module docstring).
    use : {"SVD", "VARS"}
        The data transformation (:func:`hc_transform`); mclust's
        ``Mclust``/``mclustBIC`` default is ``"SVD"``.
    alpha, beta : float
        ``hcVVV``'s regularisation multipliers (mclust's defaults 1, 1; the
        ``alpha`` used is ``alpha * tr W(Z) / (N D)``). Ignored for ``"EII"``.

    Returns
    -------
    merges : ndarray, shape (N - 1, 2), int64
        Row ``t`` is the ``t``-th merge as ``(a, b)``, ``a < b``: each group
        is named by its smallest row index (0-based). This is mclust's ``hc``
        object transposed, minus 1.

    Examples
    --------
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.0, 5.2], [0.0, 0.2]])
    >>> hc_merges(X, model="EII", use="VARS").tolist()
    [[0, 1], [2, 3], [0, 4], [0, 2]]
    """
    X = _check_data(X)
    _check_choice(model, "model", HC_MODELS)
    _check_choice(use, "use", HC_USES)
    Z = hc_transform(X, use)
    if model == "EII":
        return _merges_eii(Z)
    return _merges_vvv(Z, float(alpha), float(beta))


def hc_partitions(merges, n_components: int) -> np.ndarray:
    """The ``G``-group cut of a merge tree (mclust's ``hclass``).

    Parameters
    ----------
    merges : array_like, shape (N - 1, 2), int
        A tree from :func:`hc_merges` (groups named by their smallest row).
    n_components : int
        ``G``, in ``1..N``: the first ``N - G`` merges are applied.

    Returns
    -------
    labels : ndarray, shape (N,), int64
        Group of each row, ``0..G-1`` numbered in order of each group's first
        row (so row 0 is in group 0), exactly mclust's ``hclass`` minus 1.

    Examples
    --------
    >>> hc_partitions(np.array([[0, 1], [2, 3], [0, 4], [0, 2]]), 2).tolist()
    [0, 0, 1, 1, 0]
    """
    merges = np.asarray(merges)
    if merges.ndim != 2 or merges.shape[1] != 2 or not np.issubdtype(merges.dtype, np.integer):
        raise ValueError(f"merges must be an (N - 1, 2) integer array, got shape {merges.shape}.")
    n = merges.shape[0] + 1
    _check_n_components(n_components, n)
    if merges.size and (merges.min() < 0 or merges.max() >= n or np.any(merges[:, 0] >= merges[:, 1])):
        raise ValueError("merges rows must be (a, b) with 0 <= a < b < N.")
    # parent pointers: each merge (a, b) sends group b into group a
    parent = np.arange(n)
    for a, b in merges[: n - n_components]:
        if parent[b] != b or parent[a] != a:
            raise ValueError("merges is not a valid tree: a merged group is named by its smallest row.")
        parent[b] = a
    root = parent.copy()
    while True:  # pointer jumping
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    _, labels = np.unique(root, return_inverse=True)  # roots are first rows: sorted = first appearance
    return labels.astype(np.int64)


class HCStart(NamedTuple):
    """The tree mclust's ``mclustBIC`` starts from.

    rows : ndarray (M,) int64 -- the rows the tree was built on: ``arange(N)``,
        or, when ``N > subset``, ``subset`` rows drawn without replacement (in
        the order drawn).
    merges : ndarray (M - 1, 2) int64 -- :func:`hc_merges` of ``X[rows]``
        (names are positions in ``rows``).
    """

    rows: np.ndarray
    merges: np.ndarray


def hc_start(X, *, model: str = "VVV", use: str = "SVD", subset: int | None = 2000, rng=None) -> HCStart:
    """The tree of :func:`hc_responsibilities`, computed once for every ``G`` and model.

    Parameters
    ----------
    X : array_like, shape (N, D)
    model, use : see :func:`hc_merges`.
    subset : int or None
        ``mclust.options("subset")``: with ``N > subset`` the tree is built
        on ``subset`` random rows. ``None``: always all rows.
    rng : numpy Generator, int seed or None
        Draws the subset (``numpy.random.default_rng(rng)``); unused when
        ``N <= subset``. mclust draws with R's RNG, so only the no-subset
        case can equal mclust's start exactly.

    Returns
    -------
    HCStart

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(50, 2))
    >>> start = hc_start(X, subset=20, rng=1)
    >>> start.rows.shape, start.merges.shape
    ((20,), (19, 2))
    """
    X = _check_data(X)
    _check_choice(model, "model", HC_MODELS)
    _check_choice(use, "use", HC_USES)
    n = X.shape[0]
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, (int, np.integer)) or subset < 2):
        raise ValueError(f"subset must be an integer >= 2 or None, got {subset!r}.")
    if subset is None or n <= subset:
        rows = np.arange(n, dtype=np.int64)
    else:
        rows = np.random.default_rng(rng).choice(n, size=int(subset), replace=False).astype(np.int64)
    return HCStart(rows, hc_merges(X[rows], model=model, use=use))


def hc_responsibilities(
    X,
    n_components: int,
    *,
    model: str = "VVV",
    use: str = "SVD",
    subset: int | None = 2000,
    rng=None,
    covariance_type: str = "VVV",
    start: HCStart | None = None,
    n_slots: int | None = None,
) -> np.ndarray:
    """The responsibilities mclust's ``mclustBIC`` starts EM (``me``) from.

    * ``N <= subset`` (or ``G = 1``): the hard 0/1 partition
      ``hc_partitions(hc_merges(X), G)`` of all rows -- independent of
      ``covariance_type``; equal to mclust's start.
    * ``N > subset``: the tree is built on ``subset`` random rows; one M-step
      of ``covariance_type`` (no regularisation, as mclust without a prior)
      from their hard partition, then one E-step on *all* rows: soft
      responsibilities for every row (the subset's rows included), as
      ``mclustBIC`` does. They depend on ``covariance_type`` and on ``rng``.
      A singular M-step (a group with too few rows for the model) gives
      non-finite values, where mclust would report a missing BIC.

    Then start EM with ``jaxgmm.init.params_from_responsibilities(X, z,
    covariance_type, reg_covar=0.0)`` (mclust's ``me`` also starts with an
    M-step).

    Parameters
    ----------
    X : array_like, shape (N, D)
    n_components : int
        ``G``, in ``1..N`` (``1..subset`` when subsetting).
    model, use, subset, rng : see :func:`hc_start`.
    covariance_type : str
        The EM model whose M-step maps the subset's partition to all rows
        (mclust's 14 names or scikit-learn's four); unused without subsetting.
    start : HCStart, optional
        A tree from :func:`hc_start` on the same ``X`` (then ``model``,
        ``use``, ``subset`` and ``rng`` are not used): build it once and
        reuse it for every ``G`` and model, as mclust does.
    n_slots : int, optional
        With subsetting, compute with this many component slots (``>= G``;
        those from ``G`` on switched off), so that one compiled program
        serves every ``G`` up to it. The result is the same.

    Returns
    -------
    z : ndarray, shape (N, G) float64
        Rows sum to 1.

    Examples
    --------
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.0, 5.2], [0.0, 0.2]])
    >>> hc_responsibilities(X, 2, model="EII", use="VARS")
    array([[1., 0.],
           [1., 0.],
           [0., 1.],
           [0., 1.],
           [1., 0.]])
    """
    X = _check_data(X)
    n = X.shape[0]
    if start is None:
        start = hc_start(X, model=model, use=use, subset=subset, rng=rng)
    rows = np.asarray(start.rows)
    merges = np.asarray(start.merges)
    m = rows.shape[0]
    if merges.shape != (m - 1, 2) or (m > 0 and (rows.min() < 0 or rows.max() >= n)):
        raise ValueError("start does not fit X: rows must index X and merges must have len(rows) - 1 rows.")
    _check_n_components(n_components, n)
    if n_components == 1:
        return np.ones((n, 1))
    if n_components > m:
        raise ValueError(f"n_components must be in 1..{m} (the rows the tree was built on), got {n_components}.")
    labels = hc_partitions(merges, n_components)
    z_sub = np.eye(n_components)[labels]
    if m == n and np.array_equal(np.sort(rows), np.arange(n)):
        z = np.empty((n, n_components))
        z[rows] = z_sub
        return z

    import jax.numpy as jnp

    from jaxgmm.models.names import ALL_COVARIANCE_TYPES

    _check_choice(covariance_type, "covariance_type", tuple(ALL_COVARIANCE_TYPES))
    n_slots = max(n_components, n_slots or 0)
    Xj = jnp.asarray(X)
    z_sub = jnp.asarray(np.pad(z_sub, ((0, 0), (0, n_slots - n_components))), Xj.dtype)
    z = _subset_m_step_e_step()(Xj, Xj[rows], z_sub, n_components, covariance_type=covariance_type)
    return np.asarray(z[:, :n_components], dtype=np.float64)


@functools.cache
def _subset_m_step_e_step():
    """``step(X, X_subset, z_subset, n_active, *, covariance_type)``: responsibilities ``(N, slots)`` on all rows
    after one M-step (``reg_covar = 0``) from the subset's partition, the slots from ``n_active`` (traced) on
    switched off; compiled once per model and shapes. Built on first use: importing this module needs no JAX."""
    from jaxgmm.density import predict_proba
    from jaxgmm.init import params_from_responsibilities
    from jaxgmm.xla_options import jit

    @functools.partial(jit, static_argnames=("covariance_type",))
    def step(X, X_subset, z_subset, n_active, *, covariance_type):
        params = params_from_responsibilities(X_subset, z_subset, covariance_type, reg_covar=0.0, n_active=n_active)
        return predict_proba(params, X)

    return step
