"""Data with missing values (NaN), laid out for the E-step: rows bucketed by what they miss.

The E-step with missing coordinates (:mod:`jaxgmm.missing_kernels`) costs
what a row misses: a row missing nothing takes the complete-data kernel of
:mod:`jaxgmm.kernels`, a row missing ``s`` values of a full covariance needs
an ``s × s`` factorisation per component. So rows are grouped on the host,
before tracing, into **buckets** of static sizes:

* ``complete``: rows missing nothing;
* ``rows``: full and tied covariances, rows missing 1 or 2 values, each
  row with its own missing coordinates; rows missing more in buckets padded
  to a power of two (3-4 → 4, 5-8 → 8, …, capped at ``D − 1``);
* ``pattern``: full and tied covariances, rows that all miss the same
  coordinates, where at least ``_PATTERN_MIN_ROWS`` rows share a pattern
  (every such pattern when the incomplete rows have at most
  ``_FEW_PATTERNS``; otherwise the ``_MAX_PATTERNS`` most frequent missing
  3 or more values): one factorisation per pattern and component serves
  every row;
* ``masked``: diagonal and spherical covariances, every incomplete row
  (they need no factorisation, only a mask).

A row with **no** observed value carries no information about the
parameters: it is left out of the buckets (it contributes nothing to the
statistics and nothing to the log-likelihood or its total weight), and the
per-row outputs (:func:`jaxgmm.predict_proba` …) give it the mixture's
weights.

Each bucket's number of rows is rounded up (to at most 12.5 % more, filled
with rows of weight 0) so that data sets with similar counts share one
compiled program: the layout, not the values, is static.

:class:`IncompleteData` is a pytree: pass it through ``jax.jit`` and
``jax.vmap`` (a stacked layout from :func:`layout_many`). Inside a trace,
where values are unknown, :func:`as_incomplete` lays out an array as one
bucket whose rows may miss anything (exact, slower).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.models import get_model

MISSING_OPTIONS = ("raise", "marginalize")

# Buckets of width at most this many missing values factorise s × s blocks by an unrolled Cholesky
# factorisation, vectorised over rows and components; wider ones column by column, or by LAPACK (see
# jaxgmm.missing_kernels._COLUMNWISE_MAX). Measured on 65,536 SPD
# matrices (2-core CPU, float64, ms, unrolled vs LAPACK): s = 1: 0.6 vs 9.0, 2: 0.8 vs 8.9,
# 3: 1.3 vs 18.6, 4: 2.5 vs 31.5, 6: 12.9 vs 59.9, 8: 89 vs 93, 12: 329 vs 225; the unrolled form
# also compiles longer from s = 6 on (em_loop, 20,000 × 16, K = 16, one bucket of width 6: 14 s).
_EXACT_MAX_MISSING = 4
# Rows missing at most this many values get a bucket per count; more, a bucket per power of two
# (each bucket is compiled code: 4-6 s per bucket for em_loop at D = 16, K = 16 on 2 cores).
_COUNT_MAX_MISSING = 2
# A pattern shared by at least _PATTERN_MIN_ROWS rows gets a bucket of its own (one factorisation per
# pattern and component; the rows then cost less than complete rows): every such pattern where the
# incomplete rows have at most _FEW_PATTERNS patterns, otherwise the _MAX_PATTERNS most frequent of more
# than _COUNT_MAX_MISSING missing values (rows missing 1 or 2 values factorise cheaply per row, and
# every bucket is compiled code).
_PATTERN_MIN_ROWS = 256
_FEW_PATTERNS = 8
_MAX_PATTERNS = 4


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Bucket:
    """Rows of one kind (see the module docstring); every array has the bucket's rows first.

    * ``values``   ``(n, D)``  the rows, 0 where missing (and in padding rows)
    * ``observed`` ``(n, D)``  bool, True where a value was observed
    * ``missing``  ``(n, s)``  int32, each row's missing coordinates (``rows``, ``pattern``;
      padded buckets repeat a coordinate past a row's count); ``(n, 0)`` otherwise
    * ``weight``   ``(n,)``    sample weights, 0 for padding rows
    * ``index``    ``(n,)``    int32, each row's position in the caller's data (``N`` for padding)
    """

    values: jax.Array
    observed: jax.Array
    missing: jax.Array
    weight: jax.Array
    index: jax.Array
    kind: str = dataclasses.field(metadata=dict(static=True))

    @property
    def width(self) -> int:
        return self.missing.shape[-1]

    def n_missing(self) -> jax.Array:
        """``(n,)`` int: how many values each row misses."""
        return jnp.sum(~self.observed, axis=-1)

    def valid(self) -> jax.Array:
        """``(n, s)`` bool: which entries of ``missing`` are real (padded buckets have more slots)."""
        return jnp.arange(self.width) < self.n_missing()[..., None]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IncompleteData:
    """Rows with missing values, bucketed for the E-step (a pytree; see :mod:`jaxgmm.incomplete`).

    Build it with :func:`~jaxgmm.incomplete.layout` (one data set) or
    :func:`~jaxgmm.incomplete.layout_many` (a stacked batch, for ``vmap``);
    :func:`~jaxgmm.incomplete.as_incomplete` does it for the functions that take ``missing=``.

    Attributes
    ----------
    buckets : tuple of Bucket
    n_rows : int
        Rows of the caller's data (static): per-row outputs are returned in its order.
    n_features : int
        ``D`` (static).

    Examples
    --------
    >>> import numpy as np
    >>> from jaxgmm.incomplete import layout
    >>> X = np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, np.nan], [0.5, 0.5]])
    >>> data = layout(X)
    >>> data.n_rows, data.n_features
    (4, 2)
    >>> [(bucket.kind, len(bucket.index)) for bucket in data.buckets]   # complete rows; rows missing one value
    [('complete', 2), ('rows', 2)]
    """

    buckets: tuple
    n_rows: int = dataclasses.field(metadata=dict(static=True))
    n_features: int = dataclasses.field(metadata=dict(static=True))

    @property
    def dtype(self):
        return self.buckets[0].values.dtype

    @property
    def shape(self) -> tuple:
        """``(N, D)`` of the caller's data (of each data set, for a stacked layout)."""
        return (self.n_rows, self.n_features)

    def any_observed(self) -> jax.Array:
        """``(N,)`` bool: the rows with at least one observed value (those in the buckets)."""
        return self.scatter_rows([b.index < self.n_rows for b in self.buckets], False)

    def total_weight(self) -> jax.Array:
        """``Σ_n w_n`` over rows with at least one observed value."""
        return sum(jnp.sum(b.weight, axis=-1) for b in self.buckets)

    def rows(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Every bucket's rows concatenated: ``values (M, D)`` (0 where missing), ``observed (M, D)``, ``weight (M,)``."""
        return tuple(jnp.concatenate([getattr(b, name) for b in self.buckets], axis=-2 if name != "weight" else -1)
                     for name in ("values", "observed", "weight"))

    def scatter_rows(self, per_bucket: list, fill) -> jax.Array:
        """Per-row results of each bucket ``(n_b, ...)`` put back in the caller's order, ``(N, ...)``;
        rows in no bucket (nothing observed) get ``fill`` ``(...)``."""
        trailing = per_bucket[0].shape[1:]
        out = jnp.broadcast_to(jnp.asarray(fill, per_bucket[0].dtype), (self.n_rows,) + trailing)
        for bucket, values in zip(self.buckets, per_bucket):
            out = out.at[bucket.index].set(values, mode="drop")  # padding rows (index N) are dropped
        return out


def check_missing_option(missing: str) -> str:
    if missing not in MISSING_OPTIONS:
        raise ValueError(f"Invalid missing {missing!r}: expected one of {MISSING_OPTIONS}.")
    return missing


def _rounded(n: int) -> int:
    """``n`` rounded up to one of few sizes (at most 12.5 % more), so similar counts share a compile."""
    if n <= 8:
        return n
    step = 1 << (int(math.log2(n)) - 3)
    return -(-n // step) * step


def _row_groups(observed: np.ndarray, matrix: bool, max_patterns: int) -> dict:
    """``{(kind, width, pattern): rows}`` for one data set's ``observed (N, D)``; rows observing
    nothing are in no group."""
    n_missing = (~observed).sum(axis=1)
    n_features = observed.shape[1]
    groups = {}
    if (n_missing == 0).any():
        groups[("complete", 0, None)] = np.flatnonzero(n_missing == 0)
    partial = (n_missing > 0) & (n_missing < n_features)
    if not matrix:
        if partial.any():
            groups[("masked", 0, None)] = np.flatnonzero(partial)
        return groups
    remaining = partial.copy()
    if max_patterns and partial.any():
        patterns, inverse, counts = np.unique(~observed[partial], axis=0, return_inverse=True, return_counts=True)
        inverse, partial_rows = inverse.reshape(-1), np.flatnonzero(partial)
        if len(patterns) > _FEW_PATTERNS:
            counts = np.where(patterns.sum(axis=1) > _COUNT_MAX_MISSING, counts, 0)
        frequent = np.argsort(-counts, kind="stable")[:max_patterns if len(patterns) > _FEW_PATTERNS else None]
        for p in sorted(frequent[counts[frequent] >= _PATTERN_MIN_ROWS].tolist()):
            rows = partial_rows[inverse == p]
            groups[("pattern", int(patterns[p].sum()), tuple(np.flatnonzero(patterns[p]).tolist()))] = rows
            remaining[rows] = False
    widths = np.where(n_missing <= _COUNT_MAX_MISSING, n_missing,
                      np.minimum(2 ** np.ceil(np.log2(np.maximum(n_missing, 1))).astype(int), n_features - 1))
    for width in np.unique(widths[remaining]).tolist():
        groups[("rows", int(width), None)] = np.flatnonzero(remaining & (widths == width))
    return groups


def _group_order(key):
    return ("complete", "masked", "pattern", "rows").index(key[0]), key[1], key[2] or ()


def _fill_bucket(X, observed, weight, rows, key, capacity, dtype) -> dict:
    """Numpy arrays of one bucket with ``capacity`` rows: ``rows`` of the data set, then padding."""
    _, width, pattern = key
    n, n_features = len(rows), X.shape[1]
    values = np.zeros((capacity, n_features), dtype)
    obs = np.ones((capacity, n_features), bool)
    missing = np.zeros((capacity, width), np.int32)
    w = np.zeros(capacity, dtype)
    index = np.full(capacity, X.shape[0], np.int32)  # N: padding, dropped when scattered back
    values[:n] = np.where(observed[rows], X[rows], 0)
    obs[:n] = observed[rows]
    w[:n] = weight[rows]
    index[:n] = rows
    if width:
        # Missing coordinates first (in order), then observed ones; a padded bucket keeps the first
        # `width`, and the entries past a row's count are masked by Bucket.valid().
        missing[:n] = np.argsort(obs[:n], axis=1, kind="stable")[:, :width]
        pad_missing = np.asarray(pattern if pattern is not None else range(width))
        missing[n:] = pad_missing
        obs[n:, pad_missing] = False  # padding rows are rows of the bucket's kind, of weight 0
    return dict(values=values, observed=obs, missing=missing, weight=w, index=index)


def layout(X, sample_weight=None, covariance_type: str = "full", *, dtype=None) -> IncompleteData:
    """Bucket the rows of ``X (N, D)`` (NaN = missing) for the E-step of ``covariance_type``.

    On the host (numpy), before tracing; no validation (the edges validate). The caller's arrays
    are not modified.
    """
    X = np.asarray(X)
    weight = None if sample_weight is None else np.asarray(sample_weight)[None]
    return _layout(X[None], weight, covariance_type, dtype, max_patterns=_MAX_PATTERNS, batched=False)


def layout_many(X, sample_weight=None, covariance_type: str = "full", *, dtype=None) -> IncompleteData:
    """One layout for stacked data sets ``X (B, N, D)``: every leaf gets a leading ``(B,)`` axis.

    The data sets share their buckets (the union of their kinds, each as large as the largest
    data set's), so ``jax.vmap`` runs over them; each data set's rows are those of :func:`layout`
    of it alone (with more padding; patterns, which differ between data sets, take the count
    buckets).
    """
    return _layout(np.asarray(X), sample_weight, covariance_type, dtype, max_patterns=0, batched=True)


def _layout(X, sample_weight, covariance_type, dtype, *, max_patterns, batched) -> IncompleteData:
    dtype = np.dtype(dtype or X.dtype)
    n_sets, n_rows, n_features = X.shape
    weight = np.ones((n_sets, n_rows)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    matrix = get_model(covariance_type).storage.is_matrix
    observed = ~np.isnan(X)
    groups = [_row_groups(observed[b], matrix, max_patterns) for b in range(n_sets)]
    buckets = []
    for key in sorted(set().union(*groups), key=_group_order):
        rows = [g.get(key, np.zeros(0, np.int64)) for g in groups]
        capacity = _rounded(max(len(r) for r in rows))
        filled = [_fill_bucket(X[b], observed[b], weight[b], rows[b], key, capacity, dtype) for b in range(n_sets)]
        arrays = {name: np.stack([f[name] for f in filled]) if batched else filled[0][name] for name in filled[0]}
        buckets.append(Bucket(**{name: jnp.asarray(a) for name, a in arrays.items()}, kind=key[0]))
    if not buckets:
        raise ValueError("X has no observed value.")
    return IncompleteData(tuple(buckets), n_rows, n_features)


def traced_layout(X: jax.Array, sample_weight: jax.Array | None = None) -> IncompleteData:
    """The layout of ``X (N, D)`` whose values are unknown (inside ``jit``/``vmap``): one ``rows``
    bucket in which every row may miss any of its ``D`` values, in the caller's order. Exact, but
    each row pays a ``D × D`` factorisation per component; lay out concrete data with :func:`layout`."""
    n_rows, n_features = X.shape
    observed = ~jnp.isnan(X)
    weight = jnp.ones(n_rows, X.dtype) if sample_weight is None else jnp.asarray(sample_weight, X.dtype)
    weight = jnp.where(jnp.any(observed, axis=1), weight, 0.0)  # rows observing nothing contribute nothing
    missing = jnp.argsort(observed, axis=1, stable=True).astype(jnp.int32)  # every coordinate may be missing
    bucket = Bucket(jnp.where(observed, X, 0.0), observed, missing, weight, jnp.arange(n_rows, dtype=jnp.int32),
                    kind="rows")
    return IncompleteData((bucket,), n_rows, n_features)


def has_missing(X) -> bool:
    """Whether concrete ``X`` holds a NaN."""
    return bool(np.isnan(np.asarray(X)).any())


def as_incomplete(X, sample_weight=None, covariance_type: str = "full"):
    """``X`` for ``missing="marginalize"``: an :class:`IncompleteData` as given; a traced array by
    :func:`traced_layout`; a concrete array by :func:`layout`, or unchanged if it holds no NaN (then the
    complete-data E-step runs, exactly)."""
    if isinstance(X, IncompleteData):
        if sample_weight is not None:
            raise ValueError("sample_weight cannot be given with IncompleteData: it holds its rows' weights.")
        return X
    if isinstance(X, jax.core.Tracer) or isinstance(sample_weight, jax.core.Tracer):
        return traced_layout(jnp.asarray(X), sample_weight)
    if not has_missing(X):
        return X
    dtype = X.dtype if hasattr(X, "dtype") and np.issubdtype(X.dtype, np.floating) else None
    return layout(np.asarray(X), sample_weight, covariance_type, dtype=dtype)
