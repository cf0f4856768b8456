"""Data-parallel EM over a device mesh, on one host or several (``jax.distributed``).

The rows are sharded along the mesh axis ``"data"``; each device computes the
sufficient statistics of its rows with :func:`jaxgmm.e_step` and XLA sums
them across devices (``shard_map`` + ``psum``), so every device runs the
same M-step on the same totals. The EM loop itself is
:func:`jaxgmm.em.iterate_em`, unchanged. Restarts can be spread over a second
mesh axis ``"restarts"`` (``vmap`` with ``spmd_axis_name``).

Several processes (hosts, or local processes on CPU joined by gloo) run the
same program after :func:`jax.distributed.initialize`; each passes only its
own rows to :func:`fit_sharded` and gets the same fitted parameters back.
Rows of weight 0 pad every process's share to a common multiple of its
device count; they change nothing (padding is neutral for statistics and
for the initialisers' row choices).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxgmm.em import SuffStats, e_step, iterate_em
from jaxgmm.fit import FitResult, _best_of, _check_init_params, _check_key, _check_options, _raise_if_failed
from jaxgmm.incomplete import IncompleteData, check_missing_option, layout_many
from jaxgmm.init import initialize
from jaxgmm.params import GMMParams
from jaxgmm.streaming import check_counts
from jaxgmm.validation import check_array, check_positive_int
from jaxgmm.xla_options import jit

DATA_AXIS = "data"
RESTART_AXIS = "restarts"


def data_mesh(devices=None, *, restart_devices: int = 1) -> Mesh:
    """A ``(restarts, data)`` mesh over ``devices`` (default: all devices of all processes).

    Parameters
    ----------
    devices : sequence of jax.Device, optional
    restart_devices : int
        Size of the ``"restarts"`` axis; ``n_init`` must be a multiple of it.
        The data are sharded over the remaining ``len(devices) // restart_devices``.

    Examples
    --------
    >>> import jax
    >>> dict(data_mesh(jax.devices()[:1]).shape)
    {'restarts': 1, 'data': 1}
    """
    devices = list(jax.devices() if devices is None else devices)
    restart_devices = check_positive_int(restart_devices, "restart_devices")
    if len(devices) % restart_devices:
        raise ValueError(f"restart_devices={restart_devices} does not divide the {len(devices)} devices.")
    grid = np.array(devices, dtype=object).reshape(restart_devices, len(devices) // restart_devices)
    return Mesh(grid, (RESTART_AXIS, DATA_AXIS))


def sharded_e_step(
    params: GMMParams, X: jax.Array, sample_weight: jax.Array, *, mesh: Mesh
) -> tuple[SuffStats, jax.Array]:
    """:func:`jaxgmm.e_step` on rows sharded over ``mesh``'s ``"data"`` axis, summed by ``psum``.

    Parameters
    ----------
    params : GMMParams
        Replicated.
    X : array, shape (N, D), or IncompleteData
        ``N`` a multiple of the ``"data"`` axis size (pad with weight-0
        rows); data with missing values from :func:`shard_incomplete_rows`.
    sample_weight : array, shape (N,), or None with IncompleteData
    mesh : Mesh
        With a ``"data"`` axis (see :func:`data_mesh`).

    Returns
    -------
    (SuffStats, array ())
        The statistics and weighted log-likelihood sum of all rows, the same
        on every device.

    Examples
    --------
    >>> import jax, numpy as np, jaxgmm
    >>> from jaxgmm.distributed import data_mesh, shard_rows, sharded_e_step
    >>> X = np.asarray(jaxgmm.load_faithful(), "float32")
    >>> params = jaxgmm.initialize(jax.random.key(0), X, 2)
    >>> mesh = data_mesh(jax.devices()[:1])
    >>> stats, ll_sum = sharded_e_step(params, *shard_rows(X, np.ones(len(X), "float32"), mesh), mesh=mesh)
    >>> bool(np.isclose(ll_sum, jaxgmm.e_step(params, X)[1], rtol=1e-5))   # as on one device
    True
    """

    def local(params, x, w):
        stats, ll = e_step(params, x, w)  # x: this device's rows, or its share of every bucket (IncompleteData)
        counts, sums, scatters, ll = jax.lax.psum((stats.counts, stats.sums, stats.scatters, ll), DATA_AXIS)
        # The centres are the (replicated) means: not summed.
        return SuffStats(counts, sums, scatters, stats.centers, stats.covariance_type), ll

    # check_vma=False: JAX's varying-axes checker rejects the E-step once vmap's
    # spmd_axis_name adds the restarts axis (it asks for this workaround); the
    # outputs are psum totals, identical on every device by construction.
    return jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)), out_specs=(P(), P()), check_vma=False
    )(params, X, sample_weight)


@partial(
    jit,
    static_argnames=("mesh", "n_components", "covariance_type", "init", "max_iter"),
)
def _fit_sharded(keys, X, w, init_params, *, mesh, n_components, covariance_type, init, max_iter, tol, reg_covar):
    stats_fn = partial(sharded_e_step, X=X, sample_weight=w, mesh=mesh)
    total_weight = X.total_weight() if isinstance(X, IncompleteData) else jnp.sum(w)

    def one_restart(key):
        if init_params is None:
            # Under jit on sharded X: XLA partitions the initialiser itself.
            params = initialize(key, X, n_components, covariance_type=covariance_type, method=init,
                                reg_covar=reg_covar, sample_weight=w)
        else:
            params = init_params
        return iterate_em(stats_fn, params, total_weight, max_iter=max_iter, tol=tol, reg_covar=reg_covar)

    restarts = jax.vmap(one_restart, spmd_axis_name=RESTART_AXIS)(keys)
    return _best_of(restarts)


def _gather_counts(*local_counts: int) -> np.ndarray:
    """``(n_processes, len(local_counts))``: every process's counts (a collective when there are several)."""
    mine = np.asarray(local_counts, np.int64)
    if jax.process_count() == 1:
        return mine[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)


def shard_rows(X, sample_weight, mesh: Mesh) -> tuple[jax.Array, jax.Array]:
    """Global arrays ``(N_pad, D)``, ``(N_pad,)`` sharded over ``"data"``, from this process's rows.

    Every process calls this with its own validated rows ``X (n_p, D)`` and
    weights ``(n_p,)`` (numpy). Each share is padded with weight-0 rows to
    ``ceil(max_p n_p / L) · L`` rows, ``L`` the process's data shards, so the
    global array holds the processes' rows in process order.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from jaxgmm.distributed import data_mesh, shard_rows
    >>> mesh = data_mesh(jax.devices()[:1])
    >>> X, w = shard_rows(np.zeros((5, 2)), np.ones(5), mesh)
    >>> X.shape, w.shape
    ((5, 2), (5,))
    """
    n_processes = jax.process_count()
    data_size = mesh.shape[DATA_AXIS]
    if data_size % n_processes:
        raise ValueError(f"the mesh's data axis ({data_size} devices) must be a multiple of {n_processes} processes.")
    shards_per_process = data_size // n_processes
    n_max = int(_gather_counts(X.shape[0])[:, 0].max())
    rows = -(-n_max // shards_per_process) * shards_per_process
    X_pad = np.zeros((rows, X.shape[1]), X.dtype)
    w_pad = np.zeros(rows, X.dtype)
    X_pad[: X.shape[0]], w_pad[: X.shape[0]] = X, sample_weight
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    global_rows = rows * n_processes
    return (
        jax.make_array_from_process_local_data(sharding, X_pad, (global_rows, X.shape[1])),
        jax.make_array_from_process_local_data(sharding, w_pad, (global_rows,)),
    )


def shard_incomplete_rows(X: np.ndarray, sample_weight: np.ndarray, mesh: Mesh, covariance_type: str) -> IncompleteData:
    """Rows with missing values (NaN) sharded over ``"data"``: every device's rows laid out with the same
    buckets (:func:`jaxgmm.incomplete.layout_many` over the shards), each leaf's shares concatenated
    along the rows and sharded. One process only.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from jaxgmm.distributed import data_mesh, shard_incomplete_rows
    >>> X = np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, np.nan], [0.5, 0.5]])
    >>> data = shard_incomplete_rows(X, np.ones(4), data_mesh(jax.devices()[:1]), "full")
    >>> data.n_rows, data.n_features
    (4, 2)
    """
    if jax.process_count() > 1:
        raise ValueError("missing='marginalize' is supported on one process only in fit_sharded.")
    n_shards = mesh.shape[DATA_AXIS]
    rows = -(-X.shape[0] // n_shards)
    X_pad = np.zeros((rows * n_shards, X.shape[1]), X.dtype)
    w_pad = np.zeros(rows * n_shards, X.dtype)
    X_pad[: X.shape[0]], w_pad[: X.shape[0]] = X, sample_weight
    data = layout_many(X_pad.reshape(n_shards, rows, -1), w_pad.reshape(n_shards, rows), covariance_type)
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return jax.tree.map(lambda leaf: jax.device_put(leaf.reshape((leaf.shape[0] * leaf.shape[1],) + leaf.shape[2:]), sharding), data)


def _local_copy(leaf: jax.Array) -> jax.Array:
    """An ordinary single-device array with ``leaf``'s value (its local copy when replicated over processes)."""
    if leaf.is_fully_addressable:
        return jax.device_put(leaf, jax.local_devices()[0])
    return jnp.asarray(leaf.addressable_data(0))  # several processes: outputs are replicated


def fit_sharded(
    key: jax.Array,
    X,
    n_components: int,
    *,
    sample_weight=None,
    mesh: Mesh | None = None,
    covariance_type: str = "full",
    n_init: int = 1,
    init: str | GMMParams = "kmeans",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    missing: str = "raise",
) -> FitResult:
    """:func:`jaxgmm.fit` with the rows sharded over the devices of ``mesh``.

    The result equals ``jaxgmm.fit`` on one device up to the order of
    floating-point sums. With several processes (after
    :func:`jax.distributed.initialize`), every process calls this with the
    same ``key`` and options and **its own rows**; the fit is of all the
    processes' rows together, and every process gets it back.

    Parameters
    ----------
    key : PRNG key
        The same on every process.
    X : array-like, shape (n, D)
        This process's rows (all rows with one process).
    n_components : int
    sample_weight : array-like, shape (n,), optional
        This process's weights.
    mesh : Mesh, optional
        Default: :func:`data_mesh` over all devices. With a ``"restarts"``
        axis of size ``R`` the restarts are spread over it too (``n_init``
        must be a multiple of ``R``; one process only).
    covariance_type, n_init, init, max_iter, tol, reg_covar : as :func:`jaxgmm.fit`.
        (``init="random"`` draws per global row index, so with several
        processes its draws depend on the padding; the other methods do not.)
    missing : {"raise", "marginalize"}
        As :func:`jaxgmm.fit` (one process only): every device's rows are
        laid out with the same buckets (:func:`shard_incomplete_rows`).

    Returns
    -------
    FitResult
        Local (single-device) arrays on every process.

    Examples
    --------
    >>> import jax, jaxgmm
    >>> from jaxgmm.distributed import data_mesh, fit_sharded
    >>> result = fit_sharded(jax.random.key(0), jaxgmm.load_faithful(), 2, mesh=data_mesh())
    >>> bool(result.converged)
    True
    """
    key = _check_key(key)
    n_components, n_init, max_iter, tol, reg_covar = _check_options(
        n_components, covariance_type, n_init, init, max_iter, tol, reg_covar
    )
    mesh = data_mesh() if mesh is None else mesh
    if set(mesh.axis_names) != {RESTART_AXIS, DATA_AXIS}:
        raise ValueError(f"mesh must have the axes {(RESTART_AXIS, DATA_AXIS)} (see data_mesh); got {mesh.axis_names}.")
    if n_init % mesh.shape[RESTART_AXIS]:
        raise ValueError(f"n_init={n_init} must be a multiple of the mesh's {mesh.shape[RESTART_AXIS]} restart devices.")
    if jax.process_count() > 1 and mesh.shape[RESTART_AXIS] > 1:
        raise ValueError("a restarts axis is supported with one process only; use data_mesh(restart_devices=1).")
    X = check_array(X, missing=check_missing_option(missing))
    weight = np.ones(X.shape[0]) if sample_weight is None else sample_weight
    weight = np.asarray(weight, dtype=np.float64)
    if weight.shape != (X.shape[0],):
        raise ValueError(f"sample_weight must have shape ({X.shape[0]},) to match X; got {weight.shape}.")
    if not np.all(np.isfinite(weight)) or np.any(weight < 0):
        raise ValueError("sample_weight must be finite and >= 0.")
    n_samples, n_positive = _gather_counts(X.shape[0], np.count_nonzero(weight)).sum(axis=0)
    check_counts(int(n_samples), int(n_positive), n_components)
    init_params = _check_init_params(init, n_components, covariance_type, X.shape[1], X.dtype)
    if missing == "marginalize" and np.isnan(np.asarray(X)).any():
        Xg, wg = shard_incomplete_rows(np.asarray(X), weight.astype(X.dtype), mesh, covariance_type), None
    else:
        Xg, wg = shard_rows(np.asarray(X), weight.astype(X.dtype), mesh)
    result = _fit_sharded(
        jax.random.split(key, n_init), Xg, wg, init_params, mesh=mesh, n_components=n_components,
        covariance_type=covariance_type, init="params" if init_params is not None else init,
        max_iter=max_iter, tol=tol, reg_covar=reg_covar,
    )
    result = jax.tree.map(_local_copy, result)
    _raise_if_failed(result, "EM")
    return result
