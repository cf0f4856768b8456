"""Figures of fitted mixtures (needs the optional ``matplotlib`` extra)."""

import numpy as np

from jaxgmm.params import GMMParams


def _require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'jaxgmm[plot]'") from exc
    return plt


def full_covariances(params: GMMParams) -> np.ndarray:
    """Covariances as ``(K, D, D)`` matrices whatever the covariance type."""
    cov = np.asarray(params.covariances)
    k, d = np.asarray(params.means).shape
    if params.covariance_type == "full":
        return cov
    if params.covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if params.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)


def draw_ellipses(ax, means: np.ndarray, covariances: np.ndarray, colors, n_std=(1, 2)) -> None:
    """Draw the ``n_std``-σ ellipses of 2-D Gaussians ``means (K, 2)``, ``covariances (K, 2, 2)``."""
    from matplotlib.patches import Ellipse

    for mean, cov, color in zip(means, covariances, colors):
        eigval, eigvec = np.linalg.eigh(cov)
        angle = np.degrees(np.arctan2(eigvec[1, 1], eigvec[0, 1]))
        for s in n_std:
            width, height = 2 * s * np.sqrt(np.maximum(eigval[::-1], 0))
            ax.add_patch(
                Ellipse(mean, width, height, angle=angle, fill=False, color=color, lw=1.5, ls="-" if s == 1 else "--")
            )


def plot_fit(X, labels, params: GMMParams, history=None, feature_names=None, title=None):
    """Scatter of 2-D data coloured by component with 1σ/2σ ellipses, and the log-likelihood trace.

    Parameters
    ----------
    X : array, shape (N, 2)
    labels : array, shape (N,)
    params : GMMParams with D = 2
    history : array, shape (max_iter,), optional (NaN-padded)

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _require_matplotlib()
    X = np.asarray(X)
    if X.shape[1] != 2:
        raise ValueError(f"plot_fit draws 2-D data; got {X.shape[1]} features.")
    ncols = 2 if history is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.5), squeeze=False)
    ax = axes[0, 0]
    colors = plt.cm.tab10(np.arange(params.n_components) % 10)
    ax.scatter(X[:, 0], X[:, 1], c=colors[np.asarray(labels)], s=12, alpha=0.7, edgecolors="none")
    draw_ellipses(ax, np.asarray(params.means), full_covariances(params), colors)
    ax.scatter(*np.asarray(params.means).T, marker="x", c="k", s=50, label="means")
    names = feature_names or ("x0", "x1")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title or "components (solid 1σ, dashed 2σ)")
    ax.legend(loc="best")
    if history is not None:
        trace = np.asarray(history)
        trace = trace[np.isfinite(trace)]
        ax2 = axes[0, 1]
        ax2.plot(np.arange(1, len(trace) + 1), trace, "o-", ms=3)
        ax2.set_xlabel("EM iteration")
        ax2.set_ylabel("mean log-likelihood")
        ax2.set_title("log-likelihood trace")
    fig.tight_layout()
    return fig
