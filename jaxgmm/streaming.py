"""Exact EM over data that does not fit in memory: one pass over the rows per iteration.

A *source* of rows is one of

* a path to a ``.npy`` file, read through a read-only memory map whose
  resident pages are released after every block, so the process's resident
  memory stays ``O(block_size · D)`` however large the file;
* an array of shape ``(N, D)`` (numpy, ``np.memmap``, anything sliceable);
* a callable returning a fresh iterator of row blocks on every call, each
  block an array ``(n_i, D)`` or a pair ``(X_i, sample_weight_i)``; blocks
  may have any sizes.

Each EM iteration is one pass: rows are regrouped into blocks of exactly
``block_size`` (the last one padded with rows of weight 0, so one compiled
E-step serves every block), each block's statistics come from a jitted
:func:`jaxgmm.e_step` (mapped over the restarts, so one pass serves them
all), and the statistics are summed before one :func:`jaxgmm.m_step`.
Statistics add up exactly, so the result equals the in-memory fit up to the
order of floating-point sums.
"""

import mmap
import os
import time
from functools import partial
from typing import Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.em import EMResult, SuffStats, e_step, m_step
from jaxgmm.fit import (
    FitResult, _best_of, _check_init_params, _check_key, _check_options, _raise_if_failed, lay_out_missing,
)
from jaxgmm.incomplete import check_missing_option, layout
from jaxgmm.init import initialize
from jaxgmm.params import GMMParams
from jaxgmm.validation import check_array, float_dtype
from jaxgmm.xla_options import jit

# Default rows per streamed block: about this many numbers (16 MiB in float32).
_BLOCK_ELEMENTS = 1 << 22
# Rows drawn from the source to run the initialiser on.
DEFAULT_INIT_SIZE = 100_000


class _NpyFile:
    """Rows of a ``.npy`` file through a read-only memory map that does not pile up in memory.

    Pages read through a file mapping count as the process's resident memory
    until they are unmapped; ``MADV_DONTNEED`` after each block drops them
    from this process (the kernel's page cache keeps them for the next pass).
    """

    def __init__(self, path):
        header = np.load(path, mmap_mode="r")  # parses the header; the data are not read
        if not isinstance(header, np.memmap):
            raise ValueError(f"{os.fspath(path)!r} is not a .npy file holding one array.")
        self.shape, self.dtype, offset = header.shape, header.dtype, header.offset
        order = "F" if header.flags.f_contiguous and not header.flags.c_contiguous else "C"
        del header
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.array = np.ndarray(self.shape, self.dtype, buffer=self._map, offset=offset, order=order)

    def release(self) -> None:
        """Drop the pages read so far from this process's resident memory."""
        if hasattr(mmap, "MADV_DONTNEED"):  # Linux/macOS; elsewhere the OS reclaims them itself
            self._map.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self.array = None
        self._map.close()


class _Source:
    """Uniform access to a source of rows: ``raw_blocks()`` yields ``(X_i, w_i or None)`` pairs."""

    def __init__(self, source, sample_weight=None, *, read_rows: int = 1 << 16, missing: str = "raise"):
        self.missing = check_missing_option(missing)  # "marginalize": NaN marks a missing value
        self._file = None
        self._factory = None
        if isinstance(source, (str, os.PathLike)):
            self._file = _NpyFile(source)
            self._array = self._file.array
        elif callable(source):
            if sample_weight is not None:
                raise ValueError(
                    "sample_weight cannot be given with a callable source: yield (X_block, weight_block) pairs."
                )
            self._factory = source
        elif hasattr(source, "shape") and hasattr(source, "__getitem__"):
            self._array = source
        else:
            raise TypeError(
                "source must be a path to a .npy file, an array (N, D), or a callable returning an "
                f"iterator of row blocks; got {type(source).__name__}."
            )
        self._weight = None
        if self._factory is None:
            if len(self._array.shape) != 2:
                raise ValueError(
                    f"X must be a 2-D array of shape (n_samples, n_features); got shape {self._array.shape}."
                )
            if sample_weight is not None:
                weight = sample_weight if hasattr(sample_weight, "shape") else np.asarray(sample_weight)
                if np.shape(weight) != (self._array.shape[0],):
                    raise ValueError(
                        f"sample_weight must have shape ({self._array.shape[0]},) to match X; "
                        f"got {np.shape(weight)}."
                    )
                self._weight = weight
        self._read_rows = read_rows

    def raw_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        if self._factory is not None:
            for item in self._factory():
                yield item if isinstance(item, tuple) else (item, None)
            return
        n = self._array.shape[0]
        for start in range(0, n, self._read_rows):
            stop = min(start + self._read_rows, n)
            w = None if self._weight is None else self._weight[start:stop]
            yield self._array[start:stop], w
            if self._file is not None:
                self._file.release()  # the consumer has copied the rows by now

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _check_block(x, w, index: int, n_features: int | None, missing: str = "raise"):
    """Validate one raw block; return it as numpy ``(x, w)`` (w may be None)."""
    where = f"block {index} of the source"
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{where} must be numeric; got dtype {x.dtype}.")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{where} must be real-valued; got complex dtype {x.dtype}.")
    if x.ndim != 2:
        raise ValueError(f"{where} must be 2-D (rows, features); got shape {x.shape}.")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"{where} has {x.shape[1]} features but earlier blocks have {n_features}.")
    if x.shape[1] == 0:
        raise ValueError(f"{where} has no features: shape {x.shape}.")
    if missing == "marginalize":
        if np.isinf(x).any():
            raise ValueError(f"{where} contains infinite values; only NaN can mark a missing value.")
    elif not np.all(np.isfinite(x)):
        bad = "NaN" if np.isnan(x).any() else "infinite"
        raise ValueError(f"{where} contains {bad} values; remove or impute them before fitting, or pass "
                         "missing='marginalize' to treat NaN as missing values.")
    if w is not None:
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (x.shape[0],):
            raise ValueError(f"the sample weights of {where} must have shape ({x.shape[0]},); got {w.shape}.")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"the sample weights of {where} contain NaN or infinite values.")
        if np.any(w < 0):
            raise ValueError(f"the sample weights of {where} contain negative values; weights must be >= 0.")
    return x, w


class _Block(NamedTuple):
    X: np.ndarray  # (block_size, D), compute dtype; rows past n_rows are zero
    weight: np.ndarray  # (block_size,); 0 past n_rows
    n_rows: int


def _fixed_blocks(source: _Source, block_size: int, dtype=None, n_features: int | None = None) -> Iterator[_Block]:
    """Validated blocks of exactly ``block_size`` rows in ``dtype``, whatever sizes the source yields.

    ``dtype`` defaults to the float type JAX computes in for the first block.
    """
    X = w = None
    filled = 0
    for _, x_raw, w_raw in _raw_rows(source, n_features):
        n_features = x_raw.shape[1]
        dtype = dtype or float_dtype(x_raw.dtype)
        offset = 0
        while offset < x_raw.shape[0]:
            if X is None:
                X, w = np.zeros((block_size, n_features), dtype), np.zeros(block_size, dtype)
            take = min(block_size - filled, x_raw.shape[0] - offset)
            X[filled : filled + take] = x_raw[offset : offset + take]
            w[filled : filled + take] = 1 if w_raw is None else w_raw[offset : offset + take]
            filled += take
            offset += take
            if filled == block_size:
                yield _Block(X, w, filled)
                X = w = None
                filled = 0
    if filled:
        yield _Block(X, w, filled)


class _Scan(NamedTuple):
    n_samples: int
    n_features: int
    n_positive: int
    total_weight: float
    dtype: np.dtype
    head: tuple[np.ndarray, np.ndarray]  # up to init_size leading rows and their weights


def _raw_rows(source: _Source, n_features: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Validated raw blocks with the index of their first row."""
    start = 0
    for index, (x, w) in enumerate(source.raw_blocks()):
        x, w = _check_block(x, w, index, n_features, source.missing)
        n_features = x.shape[1]
        yield start, x, w
        start += x.shape[0]


def _scan(source: _Source, init_size: int) -> _Scan:
    """One validating pass: sizes, positive weights, and the leading rows for the initialiser."""
    n = n_positive = n_head = 0
    total = 0.0
    head_x, head_w, dtype, n_features, column_observed = [], [], None, None, None
    for _, x, w in _raw_rows(source):
        if dtype is None:
            dtype, n_features = float_dtype(x.dtype), x.shape[1]
            column_observed = np.zeros(n_features, bool)
        w = np.ones(x.shape[0]) if w is None else w
        observed = ~np.isnan(x)
        column_observed |= observed.any(axis=0)
        counted = w * observed.any(axis=1)  # rows observing nothing contribute nothing (missing values)
        n += x.shape[0]
        n_positive += int(np.count_nonzero(counted))
        total += float(np.sum(counted))
        if n_head < init_size:
            keep = init_size - n_head
            head_x.append(np.array(x[:keep], dtype))
            head_w.append(np.array(w[:keep], dtype))
            n_head += head_x[-1].shape[0]
    if n == 0:
        raise ValueError("the source yielded no rows.")
    if not column_observed.all():
        columns = np.flatnonzero(~column_observed).tolist()
        raise ValueError(f"column {columns[0]} of the source has no observed value (columns without one: {columns}); "
                         "drop it.")
    head = (np.concatenate(head_x), np.concatenate(head_w)) if head_x else None
    return _Scan(n, n_features, n_positive, total, np.dtype(dtype), head)


def _gather_rows(source: _Source, dtype, indices: np.ndarray):
    """Rows ``indices`` (sorted) of the source and their weights, in one pass."""
    xs, ws = [], []
    for start, x, w in _raw_rows(source):
        lo, hi = np.searchsorted(indices, [start, start + x.shape[0]])
        local = indices[lo:hi] - start
        xs.append(np.array(x[local], dtype))
        ws.append(np.ones(local.shape[0], dtype) if w is None else np.array(w[local], dtype))
    return np.concatenate(xs), np.concatenate(ws)


def _init_sample(key, source: _Source, scan: _Scan, init_size: int):
    """The rows the initialiser sees: all of them if ``N <= init_size``, else a uniform sample."""
    if scan.n_samples <= init_size:
        return scan.head
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    indices = np.sort(rng.choice(scan.n_samples, size=init_size, replace=False))
    return _gather_rows(source, scan.dtype, indices)


@jit
def _accumulate(params: GMMParams, acc: tuple[SuffStats, jax.Array], X: jax.Array, w: jax.Array):
    """Add one block's statistics (for every restart) to the running sums."""
    # lax.map, not vmap: one plain e_step per restart keeps XLA's matrix
    # products unbatched, about 1.5x faster on CPU than the vmapped version.
    stats, ll = jax.lax.map(lambda p: e_step(p, X, w), params)
    return stats + acc[0], ll + acc[1]  # ``stats`` first: its centres are the current means


@jit
def _em_update(state: EMResult, stats: SuffStats, ll_sum: jax.Array, total_weight, tol, reg_covar):
    """One M-step per restart; restarts that have stopped keep their state (as under ``vmap`` in ``em_loop``).

    The same rules as :func:`jaxgmm.em.iterate_em`, whose ``while_loop`` body
    this is, driven from the host because each E-step is a pass over a file.
    """
    max_iter = state.history.shape[-1]

    def running(s):
        return (s.n_iter < max_iter) & ~s.converged & ((s.n_iter == 0) | jnp.isfinite(s.log_likelihood))

    def one(s, stats, ll_sum):
        log_likelihood = ll_sum / total_weight
        new = EMResult(
            params=m_step(stats, reg_covar=reg_covar, previous=s.params),
            log_likelihood=log_likelihood,
            n_iter=s.n_iter + 1,
            converged=jnp.abs(log_likelihood - s.log_likelihood) < tol,  # False for NaN/inf
            history=s.history.at[s.n_iter].set(log_likelihood),
        )
        return jax.tree.map(partial(jnp.where, running(s)), new, s)

    new_state = jax.vmap(one)(state, stats, ll_sum)
    return new_state, jax.vmap(running)(new_state)


class StreamProgress(NamedTuple):
    """What the ``callback`` of :func:`fit_stream` receives after each pass.

    Attributes
    ----------
    iteration : int
        Passes over the data so far (1 after the first).
    log_likelihood : ndarray, shape (n_init,)
        Mean log-likelihood of each restart in this pass.
    n_running : int
        Restarts that have not yet stopped.
    seconds : float
        Wall time of this pass.
    n_samples : int
        Rows per pass.

    Examples
    --------
    >>> import jax, numpy as np, jaxgmm
    >>> X = np.random.default_rng(0).normal(size=(1000, 2)).astype("float32")
    >>> blocks = lambda: (X[i : i + 300] for i in range(0, 1000, 300))
    >>> passes = []
    >>> result = jaxgmm.fit_stream(jax.random.key(0), blocks, 2, block_size=256, callback=passes.append)
    >>> passes[0].iteration, passes[0].n_samples, passes[0].log_likelihood.shape
    (1, 1000, (1,))
    """

    iteration: int
    log_likelihood: np.ndarray
    n_running: int
    seconds: float
    n_samples: int


def check_counts(n_samples: int, n_positive: int, n_components: int) -> None:
    """Enough rows, and enough of positive weight, for ``n_components`` (counted over all blocks or processes)."""
    if n_samples < n_components:
        raise ValueError(
            f"X has {n_samples} samples but at least {n_components} are needed (n_samples must be >= n_components)."
        )
    if n_positive == 0:
        raise ValueError("sample_weight is zero for every sample; at least one weight must be positive.")
    if n_positive < n_components:
        raise ValueError(
            f"only {n_positive} samples have positive weight but n_components={n_components}; "
            "need at least as many weighted samples as components."
        )


def default_stream_block_size(n_features: int) -> int:
    """Rows per streamed block: about 4 million numbers (16 MiB in float32)."""
    return max(1024, _BLOCK_ELEMENTS // max(1, n_features))


def fit_stream(
    key: jax.Array,
    source,
    n_components: int,
    *,
    sample_weight=None,
    covariance_type: str = "full",
    n_init: int = 1,
    init: str | GMMParams = "kmeans",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    block_size: int | None = None,
    init_size: int = DEFAULT_INIT_SIZE,
    callback: Callable[[StreamProgress], None] | None = None,
    missing: str = "raise",
) -> FitResult:
    """Fit a Gaussian mixture by exact EM, reading the data one block at a time.

    Each iteration is one pass over the source, and one more pass at the end
    gives the log-likelihood of the returned parameters; memory is
    ``O(block_size · D + n_init · K · D²)`` whatever the number of rows.
    With the same initial parameters the result equals :func:`jaxgmm.fit`'s
    on the whole array (to the rounding of sums taken in another order).

    Parameters
    ----------
    key : PRNG key
        As in :func:`jaxgmm.fit`: ``jax.random.split(key, n_init)`` gives
        the restarts' keys.
    source : str or os.PathLike, array (N, D), or callable
        A ``.npy`` file (memory-mapped), an array, or a callable returning a
        fresh iterator of blocks ``(n_i, D)`` or ``(X_i, weight_i)`` pairs
        on every call (it is called once per pass, plus twice to set up).
    n_components : int
    sample_weight : array-like (N,), optional
        For path and array sources (may itself be memory-mapped).
    covariance_type, n_init, max_iter, tol, reg_covar : as :func:`jaxgmm.fit`.
    init : str or GMMParams
        An initialiser (run on up to ``init_size`` rows, see below) or
        initial parameters.
    block_size : int, optional
        Rows per block (default :func:`default_stream_block_size`).
    init_size : int
        The initialiser runs on all rows if ``N <= init_size`` — then the
        result equals ``jaxgmm.fit(key, X, ...)`` — and otherwise on
        ``init_size`` rows drawn uniformly without replacement.
    callback : callable, optional
        Called after each pass with a :class:`StreamProgress`.
    missing : {"raise", "marginalize"}
        ``"marginalize"``: NaN entries are missing values (see
        :func:`jaxgmm.fit`); each block is laid out on the host
        (:mod:`jaxgmm.incomplete`), and blocks whose layouts differ compile
        their own E-step (layouts are rounded, so there are few).

    Returns
    -------
    FitResult

    Examples
    --------
    >>> import jax, numpy as np, jaxgmm
    >>> X = np.random.default_rng(0).normal(size=(1000, 2)).astype("float32")
    >>> blocks = lambda: (X[i : i + 300] for i in range(0, 1000, 300))
    >>> result = jaxgmm.fit_stream(jax.random.key(0), blocks, 2, block_size=256)
    >>> result.params.means.shape
    (2, 2)
    """
    key = _check_key(key)
    n_components, n_init, max_iter, tol, reg_covar = _check_options(
        n_components, covariance_type, n_init, init, max_iter, tol, reg_covar
    )
    if isinstance(init_size, bool) or not isinstance(init_size, int) or init_size < n_components:
        raise ValueError(f"init_size must be an integer >= n_components; got {init_size!r}.")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be an integer >= 1; got {block_size!r}.")
    src = _Source(source, sample_weight, missing=missing)
    try:
        return _fit_source(
            key, src, n_components, covariance_type, n_init, init, max_iter, tol, reg_covar,
            block_size, init_size, callback,
        )
    finally:
        src.close()


def _fit_source(key, src, n_components, covariance_type, n_init, init, max_iter, tol, reg_covar,
                block_size, init_size, callback) -> FitResult:
    scan = _scan(src, 0 if isinstance(init, GMMParams) else init_size)
    block_size = block_size or default_stream_block_size(scan.n_features)
    check_counts(scan.n_samples, scan.n_positive, n_components)
    keys = jax.random.split(key, n_init)
    init_params = _check_init_params(init, n_components, covariance_type, scan.n_features, scan.dtype)
    if init_params is None:
        x0, w0 = _init_sample(jax.random.fold_in(key, 1), src, scan, init_size)
        x0 = check_array(x0, min_samples=n_components, missing=src.missing)
        x0, w0 = lay_out_missing(x0, jnp.asarray(w0, x0.dtype), covariance_type, src.missing)
        params = _initialize_restarts(keys, x0, w0, n_components=n_components,
                                      covariance_type=covariance_type, init=init, reg_covar=reg_covar)
        del x0, w0
    else:
        params = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (n_init,) + leaf.shape), init_params)
    scan = scan._replace(head=None)  # the initialiser's rows are not needed any more

    dtype = scan.dtype
    state = EMResult(
        params=params,
        log_likelihood=jnp.full((n_init,), -jnp.inf, dtype),
        n_iter=jnp.zeros((n_init,), jnp.int32),
        converged=jnp.zeros((n_init,), bool),
        history=jnp.full((n_init, max_iter), jnp.nan, dtype),
    )
    total_weight = jnp.asarray(scan.total_weight, dtype)
    tol_, reg_ = jnp.asarray(tol, dtype), jnp.asarray(reg_covar, dtype)
    running = True
    iteration = 0
    while running:
        started = time.perf_counter()
        stats, ll_sum = stream_e_step(state.params, src, block_size=block_size, dtype=dtype, batched=True,
                                      missing=src.missing)
        state, still = _em_update(state, stats, ll_sum, total_weight, tol_, reg_)
        running = bool(jnp.any(still))
        iteration += 1
        if callback is not None:
            callback(StreamProgress(
                iteration, np.asarray(state.log_likelihood), int(np.sum(still)),
                time.perf_counter() - started, scan.n_samples,
            ))
    # One more pass: the log-likelihood of the parameters returned, not of those before the last M-step.
    _, ll_sum = stream_e_step(state.params, src, block_size=block_size, dtype=dtype, batched=True,
                              missing=src.missing)
    result = _best_of(state._replace(log_likelihood=ll_sum / total_weight))
    _raise_if_failed(result, "EM")
    return result


@partial(jit, static_argnames=("n_components", "covariance_type", "init"))
def _initialize_restarts(keys, X, w, *, n_components, covariance_type, init, reg_covar):
    return jax.vmap(
        lambda k: initialize(k, X, n_components, covariance_type=covariance_type, method=init,
                             reg_covar=reg_covar, sample_weight=w)
    )(keys)


def stream_e_step(
    params: GMMParams, source, *, sample_weight=None, block_size: int | None = None, dtype=None,
    batched: bool = False, missing: str = "raise",
) -> tuple[SuffStats, jax.Array]:
    """The E-step over a whole source, one block at a time: ``(stats, weighted sum of log p)``.

    Equals ``jaxgmm.e_step(params, X, sample_weight)`` on the concatenated
    rows. ``source`` is anything :func:`fit_stream` takes (or an internal,
    already-open source); ``batched=True`` means ``params`` carries a
    leading restart axis. Input is validated block by block as it is read;
    ``missing="marginalize"`` treats NaN as missing values (see :func:`fit_stream`).

    Examples
    --------
    >>> import jax, numpy as np, jaxgmm
    >>> X = np.random.default_rng(0).normal(size=(1000, 2)).astype("float32")
    >>> params = jaxgmm.initialize(jax.random.key(0), X, 2)
    >>> stats, ll_sum = jaxgmm.stream_e_step(params, lambda: (X[i : i + 300] for i in range(0, 1000, 300)))
    >>> whole, ll_whole = jaxgmm.e_step(params, X)               # the same as all rows at once
    >>> bool(np.allclose(stats.counts, whole.counts, rtol=1e-4)), bool(np.isclose(ll_sum, ll_whole, rtol=1e-4))
    (True, True)
    """
    src = source if isinstance(source, _Source) else _Source(source, sample_weight, missing=missing)
    n_features = params.means.shape[-1]
    dtype = np.dtype(dtype or params.means.dtype)
    block_size = block_size or default_stream_block_size(n_features)
    batch_params = params if batched else jax.tree.map(lambda leaf: leaf[None], params)
    acc = None
    previous = None
    try:
        for block in _fixed_blocks(src, block_size, dtype, n_features):
            if acc is None:
                shapes = jax.eval_shape(jax.vmap(lambda p: e_step(p, block.X[:1])), batch_params)
                acc = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            X, w = block.X, block.weight
            if src.missing == "marginalize" and np.isnan(X).any():
                X, w = layout(X, w, params.covariance_type), None
            acc = _accumulate(batch_params, acc, X, w)
            # Two blocks in flight at most: reading overlaps computing, but a
            # reader faster than the E-step cannot queue the whole file.
            if previous is not None:
                jax.block_until_ready(previous)
            previous = acc
    finally:
        if src is not source:
            src.close()
    if acc is None:
        raise ValueError("the source yielded no rows.")
    if batched:
        return acc
    return jax.tree.map(lambda leaf: leaf[0], acc)
