"""Initialisers: starting parameters for EM, each taking a PRNG key first.

Every method produces responsibilities ``(N, K)`` and turns them into
parameters with one M-step, exactly as scikit-learn's ``_initialize`` does:

* ``"kmeans"``: k-means++ seeding then Lloyd iterations; one-hot labels.
* ``"k-means++"``: k-means++ seeding only; one-hot nearest centre.
* ``"random"``: uniform random responsibilities, normalised per row.
* ``"random_from_data"``: ``K`` distinct data points, one per component.

Random choices of rows are made by inverting the cumulative weights with a
scalar uniform draw, so rows of weight 0 appended as padding never change
which rows are picked: a padded data set initialises exactly like the
unpadded one (what makes ``fit_many`` equal to separate fits).

Every method also takes ``n_active`` (traced): only the first ``n_active``
of the ``K`` components are used and the others get weight exactly 0, which
EM keeps switched off. Random draws are keyed per component
(``fold_in(key, k)``), so ``K`` slots with ``n_active = k`` initialise as
``k`` components do — what lets :func:`jaxgmm.select` fit every K of a
model in one compiled program.
"""

from functools import partial

import jax
import jax.numpy as jnp

from jaxgmm.em import m_step, stats_from_responsibilities
from jaxgmm.incomplete import IncompleteData
from jaxgmm.matmul_precision import float32_matmuls
from jaxgmm.params import GMMParams
from jaxgmm.xla_options import jit

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
"""The names :func:`initialize` takes as ``method`` (scikit-learn's ``init_params``)."""


def _weights_or_ones(X, sample_weight):
    if sample_weight is None:
        return jnp.ones(X.shape[0], X.dtype)
    return jnp.asarray(sample_weight, X.dtype)


def _choose_row(key, probabilities):
    """Index of one row drawn with probability proportional to ``probabilities (N,)``."""
    cumulative = jnp.cumsum(probabilities)
    u = jax.random.uniform(key, dtype=cumulative.dtype) * cumulative[-1]
    index = jnp.searchsorted(cumulative, u, side="right")
    return jnp.minimum(index, probabilities.shape[0] - 1)


@float32_matmuls
def _squared_distances(X, centers):
    """``‖x_n − c_k‖²``, shape ``(N, K)``; centred on the data to limit cancellation."""
    origin = jnp.mean(centers, axis=0)
    Xc, Cc = X - origin, centers - origin
    d2 = jnp.sum(Xc * Xc, axis=1)[:, None] - 2 * Xc @ Cc.T + jnp.sum(Cc * Cc, axis=1)[None, :]
    return jnp.maximum(d2, 0.0)


def kmeans_plusplus(key: jax.Array, X: jax.Array, n_clusters: int, sample_weight=None, n_active=None) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): centres ``(K, D)``.

    The first centre is a row drawn in proportion to its weight, each next one
    in proportion to weight × squared distance to the nearest chosen centre.
    With ``n_active``, centres from ``n_active`` on repeat the first (unused).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, jaxgmm
    >>> X = jnp.array([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    >>> centers = jaxgmm.kmeans_plusplus(jax.random.key(0), X, 2)
    >>> centers.shape, all(bool((X == c).all(axis=1).any()) for c in centers)   # rows of X
    ((2, 2), True)
    """
    w = _weights_or_ones(X, sample_weight)
    n_active = n_clusters if n_active is None else n_active
    first = X[_choose_row(jax.random.fold_in(key, 0), w)]
    centers = jnp.zeros((n_clusters, X.shape[1]), X.dtype).at[0].set(first)
    closest = jnp.sum((X - first) ** 2, axis=1)

    def add_center(i, carry):
        centers, closest = carry
        scores = w * closest
        # Once every positive-weight row is a centre (K = number of distinct
        # points) all distances are 0: fall back to drawing by weight.
        scores = jnp.where(jnp.sum(scores) > 0, scores, w)
        new = jnp.where(i < n_active, X[_choose_row(jax.random.fold_in(key, i), scores)], first)
        closest = jnp.minimum(closest, jnp.sum((X - new) ** 2, axis=1))
        return centers.at[i].set(new), closest

    centers, _ = jax.lax.fori_loop(1, n_clusters, add_center, (centers, closest))
    return centers


@float32_matmuls
def kmeans(
    key: jax.Array, X: jax.Array, n_clusters: int, sample_weight=None, *, max_iter: int = 100, tol: float = 1e-4,
    n_active=None,
) -> tuple[jax.Array, jax.Array]:
    """Weighted k-means: k-means++ seeding, then Lloyd iterations until no centre moves.

    Returns ``(centers (K, D), labels (N,))``. A cluster left empty keeps its
    previous centre. Stops when the largest squared centre shift is below
    ``tol`` times the mean feature variance (scikit-learn's tolerance rule) or
    after ``max_iter`` iterations. With ``n_active``, only the first
    ``n_active`` centres take rows.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, jaxgmm
    >>> X = jnp.array([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    >>> centers, labels = jaxgmm.kmeans(jax.random.key(0), X, 2)
    >>> sorted(centers.tolist()), bool(labels[0] == labels[1] != labels[2] == labels[3])
    ([[0.0, 0.5], [10.0, 10.5]], True)
    """
    w = _weights_or_ones(X, sample_weight)
    centers = kmeans_plusplus(key, X, n_clusters, w, n_active)
    unused = jnp.arange(n_clusters) >= (n_clusters if n_active is None else n_active)

    def nearest(centers):
        return jnp.argmin(jnp.where(unused, jnp.inf, _squared_distances(X, centers)), axis=1)

    mean = jnp.sum(w[:, None] * X, axis=0) / jnp.sum(w)
    variance = jnp.sum(w[:, None] * (X - mean) ** 2, axis=0) / jnp.sum(w)
    threshold = tol * jnp.mean(variance)

    def lloyd(centers):
        labels = nearest(centers)
        onehot = jax.nn.one_hot(labels, n_clusters, dtype=X.dtype) * w[:, None]
        counts = jnp.sum(onehot, axis=0)
        sums = onehot.T @ X
        new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1e-30)[:, None], centers)
        return new

    def cond(state):
        i, _, shift = state
        return (i < max_iter) & (shift > threshold)

    def body(state):
        i, centers, _ = state
        new = lloyd(centers)
        return i + 1, new, jnp.max(jnp.sum((new - centers) ** 2, axis=1))

    _, centers, _ = jax.lax.while_loop(cond, body, (0, centers, jnp.asarray(jnp.inf, X.dtype)))
    return centers, nearest(centers)


def _random_responsibilities(key, X, n_components, active):
    # One key per row and component (fold_in by index), so a draw depends on neither N nor K.
    rows, components = jnp.arange(X.shape[0]), jnp.arange(n_components)

    def draw(i, k):
        return jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, i), k), (), X.dtype)

    u = jnp.where(active, jax.vmap(lambda i: jax.vmap(lambda k: draw(i, k))(components))(rows), 0.0)
    return u / jnp.sum(u, axis=1, keepdims=True)


def _random_from_data_responsibilities(key, X, n_components, w, active):
    def pick(i, carry):
        resp, available = carry
        index = _choose_row(jax.random.fold_in(key, i), w * available)
        keep = active[i]
        return (jnp.where(keep, resp.at[index, i].set(1.0), resp),
                jnp.where(keep, available.at[index].set(0.0), available))

    resp = jnp.zeros((X.shape[0], n_components), X.dtype)
    resp, _ = jax.lax.fori_loop(0, n_components, pick, (resp, jnp.ones_like(w)))
    return resp


@float32_matmuls
def _observed_means(values, observed, weights, fallback):
    """``(G, D)`` means of the observed values per group, ``weights (N, G)``; ``fallback (D,)`` where a group
    observed nothing of a feature."""
    mask = observed.astype(values.dtype)
    amount = weights.T @ mask
    return jnp.where(amount > 0, (weights.T @ (mask * values)) / jnp.where(amount > 0, amount, 1.0), fallback)


def _filled_rows(data: IncompleteData):
    """Rows of ``data`` with each missing value set to its column's mean, their weights, and
    ``fill(resp (M, K))``: the rows with each missing value set to the responsibility-weighted mean of the
    components' observed values."""
    values, observed, w = data.rows()
    column_means = _observed_means(values, observed, w[:, None], 0.0)[0]

    def fill(resp):
        means = _observed_means(values, observed, resp * w[:, None], column_means)
        return jnp.where(observed, values, resp @ means)

    return jnp.where(observed, values, column_means), w, fill


def _active(n_components: int, n_active) -> jax.Array:
    """``(K,)`` bool: the first ``n_active`` components (all without it)."""
    return jnp.arange(n_components) < (n_components if n_active is None else n_active)


def initial_responsibilities(
    key: jax.Array, X: jax.Array, n_components: int, method: str = "kmeans", sample_weight=None, n_active=None
) -> jax.Array:
    """Initial responsibilities ``(N, K)`` for one of :data:`INIT_METHODS` (columns from ``n_active`` on are 0).

    Examples
    --------
    >>> import jax, jaxgmm
    >>> X = jax.numpy.asarray(jaxgmm.load_faithful(), "float32")
    >>> resp = jaxgmm.initial_responsibilities(jax.random.key(0), X, 2, method="random")
    >>> resp.shape, bool(jax.numpy.allclose(resp.sum(axis=1), 1.0))
    ((272, 2), True)
    """
    w = _weights_or_ones(X, sample_weight)
    active = _active(n_components, n_active)
    if method == "kmeans":
        _, labels = kmeans(key, X, n_components, w, n_active=n_active)
        return jax.nn.one_hot(labels, n_components, dtype=X.dtype)
    if method == "k-means++":
        centers = kmeans_plusplus(key, X, n_components, w, n_active)
        labels = jnp.argmin(jnp.where(active, _squared_distances(X, centers), jnp.inf), axis=1)
        return jax.nn.one_hot(labels, n_components, dtype=X.dtype)
    if method == "random":
        return _random_responsibilities(key, X, n_components, active)
    if method == "random_from_data":
        return _random_from_data_responsibilities(key, X, n_components, w, active)
    raise ValueError(f"Invalid init method {method!r}: expected one of {INIT_METHODS}.")


@float32_matmuls
def params_from_responsibilities(
    X: jax.Array, resp: jax.Array, covariance_type: str, *, reg_covar=1e-6, sample_weight=None, n_active=None,
    prior=None,
) -> GMMParams:
    """One M-step from responsibilities ``resp (N, K)`` (scikit-learn's ``_initialize``; with a ``prior``,
    MAP as mclust's ``me(z, prior = …)`` starts); components from ``n_active`` on get weight 0 (switched off)."""
    stats = responsibility_stats(X, resp, covariance_type, sample_weight)
    active = None if n_active is None else _active(resp.shape[1], n_active)
    return m_step(stats, reg_covar=reg_covar, active=active, prior=prior)


@float32_matmuls
def responsibility_stats(X: jax.Array, resp: jax.Array, covariance_type: str, sample_weight=None):
    """The :class:`SuffStats` of rows ``X (N, D)`` with responsibilities ``resp (N, K)`` and weights,
    each component's moments centred at its own weighted mean (the data mean for an empty one), so the
    first covariances do not cancel either."""
    w = _weights_or_ones(X, sample_weight)
    weighted_resp = resp * w[:, None]
    counts = jnp.sum(weighted_resp, axis=0)
    data_mean = jnp.sum(w[:, None] * X, axis=0) / jnp.sum(w)
    centers = jnp.where(
        counts[:, None] > 0, (weighted_resp.T @ X) / jnp.maximum(counts, 1e-30)[:, None], data_mean
    )
    return stats_from_responsibilities(X, weighted_resp, centers, covariance_type)


@partial(jit, static_argnames=("n_components", "covariance_type", "method"))
def initialize(
    key: jax.Array,
    X: jax.Array,
    n_components: int,
    *,
    covariance_type: str = "full",
    method: str = "kmeans",
    reg_covar=1e-6,
    sample_weight=None,
    n_active=None,
    prior=None,
) -> GMMParams:
    """Initial parameters for EM.

    Parameters
    ----------
    key : PRNG key
    X : array, shape (N, D), or IncompleteData
    n_components : int
        ``K`` (static).
    covariance_type : str
        scikit-learn's four (``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``) or one of
        mclust's 14 (:data:`~jaxgmm.COVARIANCE_MODELS`).
    method : {"kmeans", "k-means++", "random", "random_from_data"}
    reg_covar : float
    sample_weight : array, shape (N,), optional
    n_active : int, optional
        Use only the first ``n_active`` components (traced); the others get
        weight exactly 0 and stay switched off in EM.
    prior : ConjugatePrior, optional
        The initial M-step is then MAP (see :func:`jaxgmm.m_step`), so a
        cluster of one repeated point still gets a positive definite covariance.

    Returns
    -------
    GMMParams

    User-given parameters need no initialiser: validate them with
    :meth:`GMMParams.from_arrays` and pass them to :func:`jaxgmm.em_loop` (or
    as ``init=`` to :func:`jaxgmm.fit`).

    Data with missing values (an :class:`~jaxgmm.incomplete.IncompleteData`)
    use every row with an observed value, not only the complete ones (few
    are complete when many features can be missing): the method runs on the
    rows with each missing value set to its column's mean, and the starting
    parameters come from the rows with each missing value set to the mean
    of its components' observed values (weighted by the responsibilities).

    Examples
    --------
    >>> import jax, jaxgmm
    >>> X = jax.numpy.asarray(jaxgmm.load_faithful(), "float32")
    >>> params = jaxgmm.initialize(jax.random.key(0), X, 2, covariance_type="diag")
    >>> params.means.shape, params.covariances.shape
    ((2, 2), (2, 2))
    """
    if isinstance(X, IncompleteData):
        X, sample_weight, fill = _filled_rows(X)
        resp = initial_responsibilities(key, X, n_components, method, sample_weight, n_active)
        return params_from_responsibilities(fill(resp), resp, covariance_type, reg_covar=reg_covar,
                                            sample_weight=sample_weight, n_active=n_active)
    resp = initial_responsibilities(key, X, n_components, method, sample_weight, n_active)
    return params_from_responsibilities(X, resp, covariance_type, reg_covar=reg_covar, sample_weight=sample_weight,
                                        n_active=n_active, prior=prior)
