"""Figures of fitted mixtures (needs the optional ``matplotlib`` extra)."""

import sys

import numpy as np

from jaxgmm.params import GMMParams


def _require_matplotlib():
    try:
        import matplotlib

        if "matplotlib.pyplot" not in sys.modules:  # keep a backend the caller chose (a notebook's inline one)
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'jaxgmm[plot]'") from exc
    return plt


def full_covariances(params: GMMParams) -> np.ndarray:
    """Covariances as ``(K, D, D)`` matrices whatever the covariance model.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxgmm import GMMParams
    >>> p = GMMParams(jnp.array([0.5, 0.5]), jnp.zeros((2, 2)), jnp.array([1.0, 4.0]), "spherical")
    >>> full_covariances(p).tolist()                            # λ_k I as matrices
    [[[1.0, 0.0], [0.0, 1.0]], [[4.0, 0.0], [0.0, 4.0]]]
    """
    return np.asarray(params.covariance_matrices)


def draw_ellipses(ax, means: np.ndarray, covariances: np.ndarray, colors, n_std=(1, 2)) -> None:
    """Draw the ``n_std``-σ ellipses of 2-D Gaussians ``means (K, 2)``, ``covariances (K, 2, 2)``.

    Examples
    --------
    >>> import numpy as np, matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> draw_ellipses(ax, np.zeros((1, 2)), np.eye(2)[None], ["C0"], n_std=(1, 2, 3))
    >>> len(ax.patches)                                         # one ellipse per σ
    3
    >>> plt.close(fig)
    """
    from matplotlib.patches import Ellipse

    for mean, cov, color in zip(means, covariances, colors):
        eigval, eigvec = np.linalg.eigh(cov)
        angle = np.degrees(np.arctan2(eigvec[1, 1], eigvec[0, 1]))
        for s in n_std:
            width, height = 2 * s * np.sqrt(np.maximum(eigval[::-1], 0))
            ax.add_patch(
                Ellipse(mean, width, height, angle=angle, fill=False, color=color, lw=1.5, ls="-" if s == 1 else "--")
            )


def draw_mixture(ax, X, params: GMMParams, labels=None, *, n_std=(1, 2), size=10, alpha=0.6) -> None:
    """Two-feature data on ``ax`` with the mixture's ``n_std``-σ ellipses and its means.

    Points are coloured by ``labels`` (component ``k`` gets the k-th
    ``tab10`` colour, as its ellipses), grey without labels.

    Parameters
    ----------
    ax : matplotlib Axes
    X : array, shape (N, 2)
    params : GMMParams with 2 features
    labels : array of int, shape (N,), optional
    n_std : sequence of float
        Ellipses drawn (solid for the first, dashed for the others).
    size, alpha : float
        Marker size and opacity of the points.

    Examples
    --------
    >>> import jax.numpy as jnp, matplotlib.pyplot as plt
    >>> from jaxgmm import GMMParams
    >>> p = GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.0, 0.0], [3.0, 3.0]]), jnp.ones(2), "spherical")
    >>> fig, ax = plt.subplots()
    >>> draw_mixture(ax, [[0.0, 0.1], [3.0, 2.9]], p, labels=[0, 1])
    >>> len(ax.patches)  # a 1σ and a 2σ ellipse per component
    4
    >>> plt.close(fig)
    """
    plt = _require_matplotlib()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 2 or params.means.shape[-1] != 2:
        raise ValueError(f"draw_mixture draws two features; got data of shape {X.shape}.")
    colors = plt.cm.tab10(np.arange(params.n_components) % 10)
    point_colors = "0.55" if labels is None else colors[np.asarray(labels)]
    ax.scatter(X[:, 0], X[:, 1], c=point_colors, s=size, alpha=alpha, edgecolors="none")
    means = np.asarray(params.means, np.float64)
    draw_ellipses(ax, means, full_covariances(params).astype(np.float64), colors, n_std)
    ax.scatter(means[:, 0], means[:, 1], marker="x", c="k", s=40)


def principal_axes(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(center (D,), axes (D, 2), explained (2,))``: the data's first two principal components.

    ``explained`` is the fraction of the total variance along each axis.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [2.0, 0.1], [4.0, -0.1], [6.0, 0.0]])   # spread along the first feature
    >>> center, axes, explained = principal_axes(X)
    >>> center.tolist(), axes.shape, bool(explained[0] > 0.99)
    ([3.0, 0.0], (2, 2), True)
    """
    X = np.asarray(X, dtype=np.float64)
    center = X.mean(axis=0)
    _, singular, vt = np.linalg.svd(X - center, full_matrices=False)
    variance = singular**2
    return center, vt[:2].T, variance[:2] / max(variance.sum(), np.finfo(float).tiny)


def plot_fit(X, labels, params: GMMParams, history=None, feature_names=None, title=None,
             objective="mean log-likelihood"):
    """Scatter of the data coloured by component with 1σ/2σ ellipses, and the log-likelihood trace.

    Two features are drawn as they are; more are projected onto the data's
    first two principal components (``z = Vᵀ(x − x̄)``, each component's
    covariance becomes ``Vᵀ Σ_k V``), and the axes say so.

    Parameters
    ----------
    X : array, shape (N, D), D >= 2
    labels : array, shape (N,)
    params : GMMParams with D features
    history : array, shape (max_iter,), optional (NaN-padded)
        What the fit increased at each iteration, plotted under the name ``objective``
        (a log-posterior with a prior, a lower bound for variational Bayes).
    feature_names : sequence of D str, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import jax, matplotlib.pyplot as plt, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> result = jaxgmm.fit(jax.random.key(0), X, 2)
    >>> fig = plot_fit(X, jaxgmm.predict(result.params, X), result.params, result.history,
    ...                feature_names=jaxgmm.FAITHFUL_COLUMNS)
    >>> len(fig.axes), fig.axes[0].get_xlabel()                 # the data, and the log-likelihood trace
    (2, 'eruptions')
    >>> plt.close(fig)
    """
    plt = _require_matplotlib()
    X = np.asarray(X, dtype=np.float64)
    n_features = X.shape[1]
    if n_features < 2:
        raise ValueError(f"plot_fit draws data with at least 2 features; got {n_features}.")
    X, means, covariances, names = _projected(X, params)
    if n_features == 2:
        names = list(feature_names or names)
        projected = title or "components (solid 1σ, dashed 2σ)"
    else:
        projected = f"{title or 'components'}: projection onto the first two principal components of {n_features} features"
    ncols = 2 if history is not None else 1
    fig, ax_grid = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.5), squeeze=False)
    ax = ax_grid[0, 0]
    colors = plt.cm.tab10(np.arange(params.n_components) % 10)
    ax.scatter(X[:, 0], X[:, 1], c=colors[np.asarray(labels)], s=12, alpha=0.7, edgecolors="none")
    draw_ellipses(ax, means, covariances, colors)
    ax.scatter(*means.T, marker="x", c="k", s=50, label="means")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(projected, fontsize=10 if n_features > 2 else None, wrap=True)
    ax.legend(loc="best", title="solid 1σ, dashed 2σ" if n_features > 2 or title else None)
    if history is not None:
        trace = np.asarray(history)
        trace = trace[np.isfinite(trace)]
        ax2 = ax_grid[0, 1]
        ax2.plot(np.arange(1, len(trace) + 1), trace, "o-", ms=3)
        ax2.xaxis.get_major_locator().set_params(integer=True)
        ax2.ticklabel_format(axis="y", useOffset=False)
        ax2.set_xlabel("iteration")
        ax2.set_ylabel(objective)
        ax2.set_title(f"{objective} trace")
    fig.tight_layout()
    return fig


def plot_bic(ks, bics, title=None):
    """BIC against the number of components, one line per covariance type, the best circled.

    Parameters
    ----------
    ks : sequence of int
    bics : mapping of covariance type to a sequence of BIC values (NaN: failed fit)

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> fig = plot_bic([1, 2, 3], {"full": [900.0, 850.0, 870.0], "diag": [950.0, 880.0, 875.0]})
    >>> [text.get_text() for text in fig.axes[0].get_legend().get_texts()]   # a line per type, the best
    ['full', 'diag', 'best: K = 2, full']
    >>> plt.close(fig)
    """
    plt = _require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    best = (np.inf, None, None)
    for cov_type, values in bics.items():
        values = np.asarray(values, dtype=np.float64)
        ax.plot(ks, values, "o-", label=cov_type)
        if np.isfinite(values).any() and np.nanmin(values) < best[0]:
            i = int(np.nanargmin(values))
            best = (values[i], ks[i], cov_type)
    if best[1] is not None:
        ax.scatter([best[1]], [best[0]], s=250, facecolors="none", edgecolors="k", lw=2,
                   label=f"best: K = {best[1]}, {best[2]}", zorder=3)
    ax.set_xlabel("number of components K")
    ax.set_ylabel("BIC (lower is better)")
    ax.set_xticks(list(ks))
    ax.set_title(title or "model selection by BIC")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- mclust's three figures


def plot_criterion(selection, criterion=None, *, title=None):
    """mclust's BIC plot: a criterion against K, one line per covariance model, the best circled.

    Parameters
    ----------
    selection : jaxgmm.Selection
    criterion : {"bic", "icl", "aic"}, optional
        Default: the one the selection used. Drawn in scikit-learn's sign
        (lower is better); failed cells are gaps.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import jax, matplotlib.pyplot as plt, jaxgmm
    >>> sel = jaxgmm.select(jax.random.key(0), jaxgmm.load_faithful(), [1, 2, 3], ["EEE", "VVV"], n_init=2)
    >>> fig = plot_criterion(sel, "icl")
    >>> fig.axes[0].get_ylabel()
    'ICL (lower is better)'
    >>> plt.close(fig)
    """
    plt = _require_matplotlib()
    criterion = criterion or selection.criterion
    table = selection.criterion_table(criterion)
    ks, models = selection.n_components, selection.covariance_types
    fig, ax = plt.subplots(figsize=(7, 5))
    markers = "os^vD<>phH*Xd8P"
    for i, model in enumerate(models):
        ax.plot(ks, table[i], marker=markers[i % len(markers)], ms=5, lw=1.2, label=model)
    if np.isfinite(table).any():
        i, j = np.unravel_index(np.nanargmin(table), table.shape)
        ax.scatter([ks[j]], [table[i, j]], s=260, facecolors="none", edgecolors="k", lw=2, zorder=3,
                   label=f"best: {models[i]}, K = {ks[j]}")
    ax.set_xlabel("number of components K")
    ax.set_ylabel(f"{criterion.upper()} (lower is better)")
    ax.set_xticks(list(ks))
    ax.set_title(title or f"model selection by {criterion.upper()}")
    ax.legend(loc="best", ncol=2, fontsize=8)
    fig.tight_layout()
    return fig


def _projected(X, params):
    """Data, means and ``(K, D, D)`` covariances in two dimensions, and the axis names (PCA above 2 features)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] < 2:
        raise ValueError(f"the figure draws data with at least 2 features; got shape {X.shape}.")
    means, covariances = np.asarray(params.means, np.float64), full_covariances(params).astype(np.float64)
    if X.shape[1] == 2:
        return X, means, covariances, ["x0", "x1"]
    center, axes, explained = principal_axes(X)
    names = [f"PC{i + 1} ({100 * e:.0f}% of variance)" for i, e in enumerate(explained)]
    return (X - center) @ axes, (means - center) @ axes, np.swapaxes(axes, 0, 1) @ covariances @ axes, names


def plot_classification(X, params: GMMParams, *, feature_names=None, title=None):
    """mclust's classification plot: data coloured by most probable component, with 1σ/2σ ellipses.

    More than two features are projected onto the first two principal
    components, and the axes say so. ``X (N, D)``.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import jax, matplotlib.pyplot as plt, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> fig = plot_classification(X, jaxgmm.fit(jax.random.key(0), X, 2).params, feature_names=jaxgmm.FAITHFUL_COLUMNS)
    >>> fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()
    ('eruptions', 'waiting')
    >>> plt.close(fig)
    """
    import jax.numpy as jnp

    from jaxgmm.density import predict

    plt = _require_matplotlib()
    labels = np.asarray(predict(params, jnp.asarray(X, params.dtype)))
    Z, means, covariances, names = _projected(X, params)
    if feature_names is not None and Z.shape[1] == np.asarray(X).shape[1]:
        names = list(feature_names)
    colors = plt.cm.tab10(np.arange(params.n_components) % 10)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(Z[:, 0], Z[:, 1], c=colors[labels], s=12, alpha=0.7, edgecolors="none")
    draw_ellipses(ax, means, covariances, colors)
    ax.scatter(*means.T, marker="x", c="k", s=50)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title or f"classification ({params.covariance_type}, K = {params.n_components})")
    fig.tight_layout()
    return fig


def plot_uncertainty(X, params: GMMParams, *, feature_names=None, title=None):
    """mclust's uncertainty plot: point size grows with ``1 − max_k τ_nk``, the classification's uncertainty.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import jax, matplotlib.pyplot as plt, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> fig = plot_uncertainty(X, jaxgmm.fit(jax.random.key(0), X, 2).params)
    >>> len(fig.axes)
    1
    >>> plt.close(fig)
    """
    import jax.numpy as jnp

    from jaxgmm.density import predict_proba

    plt = _require_matplotlib()
    resp = np.asarray(predict_proba(params, jnp.asarray(X, params.dtype)), np.float64)
    uncertainty = 1.0 - resp.max(axis=1)
    Z, means, covariances, names = _projected(X, params)
    if feature_names is not None and Z.shape[1] == np.asarray(X).shape[1]:
        names = list(feature_names)
    colors = plt.cm.tab10(np.arange(params.n_components) % 10)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    # Largest possible uncertainty is 1 − 1/K; scale sizes to it.
    scale = uncertainty / max(1.0 - 1.0 / params.n_components, np.finfo(float).tiny)
    ax.scatter(Z[:, 0], Z[:, 1], c=colors[resp.argmax(axis=1)], s=4 + 120 * scale, alpha=0.6, edgecolors="none")
    draw_ellipses(ax, means, covariances, colors, n_std=(1,))
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title or "classification uncertainty (larger: less certain)")
    fig.tight_layout()
    return fig
