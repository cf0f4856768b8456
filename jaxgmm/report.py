"""Plain-text summaries of fitted mixtures, for terminals and logs."""

from typing import Mapping, Sequence

import numpy as np

from jaxgmm.params import GMMParams


def _format_matrix(m: np.ndarray, indent: str) -> list[str]:
    return [indent + "  ".join(f"{v:>10.4g}" for v in row) for row in np.atleast_2d(m)]


def format_params(params: GMMParams, feature_names: Sequence[str] | None = None) -> str:
    """A readable table of weights, means and covariances, one block per component."""
    weights = np.asarray(params.weights)
    means = np.asarray(params.means)
    k, d = means.shape
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(d)]
    header = f"{'component':>9}  {'weight':>8}  " + "  ".join(f"{'mean ' + n:>14}" for n in names)
    lines = [header, "-" * len(header)]
    for i in range(k):
        lines.append(f"{i:>9}  {weights[i]:>8.4f}  " + "  ".join(f"{v:>14.5g}" for v in means[i]))
    lines.append("")
    model = params.model
    lines.append(f"covariances ({params.covariance_type}), columns {', '.join(names)}:")
    if not model.storage.per_component:
        lines.append("  shared by all components:")
        lines += _format_matrix(np.asarray(params.covariances), "    ")
    else:
        for i, block in enumerate(np.asarray(params.covariance_matrices)):
            lines.append(f"  component {i}:")
            lines += _format_matrix(block, "    ")
    return "\n".join(lines)


def format_fit(result, feature_names: Sequence[str] | None = None, *, bic: float | None = None,
               log_posterior: float | None = None) -> str:
    """The parameter table plus log-likelihood, log-posterior and BIC (if given), iterations and convergence
    of a fit."""
    lines = [
        format_params(result.params, feature_names),
        "",
        f"mean log-likelihood per sample: {float(result.log_likelihood):.6f}",
    ]
    if log_posterior is not None:  # MAP-EM: what it maximised
        lines.append(f"mean log-posterior per sample: {float(log_posterior):.6f}")
    if bic is not None:
        lines.append(f"BIC: {float(bic):.4f}")
    lines.append(f"EM iterations: {int(result.n_iter)}   converged: {'yes' if bool(result.converged) else 'no'}")
    return "\n".join(lines)


def format_selection(ks: Sequence[int], bics: Mapping[str, Sequence[float]], *, label: str = "BIC") -> str:
    """A criterion table: one row per number of components, one column per covariance type, best marked ``*``.

    ``bics[covariance_type][i]`` is the BIC for ``ks[i]`` components (NaN for a failed fit).

    Examples
    --------
    >>> print(format_selection([1, 2], {"full": [10.0, 8.5], "diag": [11.0, float("nan")]}))
     K          full          diag
     1       10.0000       11.0000
     2        8.5000 *      failed
    best: K = 2, covariance_type = full (BIC 8.5000)
    """
    types = list(bics)
    table = np.array([bics[t] for t in types], dtype=np.float64).T  # (len(ks), len(types))
    scores = np.where(np.isfinite(table), table, np.inf)
    best = np.unravel_index(np.argmin(scores), scores.shape) if np.isfinite(scores).any() else None
    lines = [f"{'K':>2}" + "".join(f"{t:>14}" for t in types)]
    for i, k in enumerate(ks):
        cells = []
        for j in range(len(types)):
            if not np.isfinite(table[i, j]):
                cells.append(f"{'failed':>12}  ")
            else:
                cells.append(f"{table[i, j]:>12.4f}" + (" *" if best == (i, j) else "  "))
        lines.append(f"{k:>2}" + "".join(cells).rstrip())
    if best is None:
        lines.append("every fit failed")
    else:
        i, j = best
        lines.append(f"best: K = {ks[i]}, covariance_type = {types[j]} ({label} {table[i, j]:.4f})")
    return "\n".join(lines)


def format_ranking(cells) -> str:
    """The best cells of a :class:`jaxgmm.Selection`, one line each: model, K, criteria, log-likelihood.

    Examples
    --------
    >>> from jaxgmm.selection import SelectionCell
    >>> print(format_ranking([SelectionCell("EEE", 3, -1126.3, 11, 2314.3, 2357.4, 2274.6, True, None)]))
    rank  model   K       BIC       ICL  log-likelihood  params
       1    EEE   3  2314.300  2357.400       -1126.300      11
    """
    lines = [f"{'rank':>4}  {'model':>5}  {'K':>2}  {'BIC':>8}  {'ICL':>8}  {'log-likelihood':>14}  params"]
    for i, c in enumerate(cells, 1):
        lines.append(f"{i:>4}  {c.covariance_type:>5}  {c.n_components:>2}  {c.bic:>8.3f}  {c.icl:>8.3f}  "
                     f"{c.log_likelihood:>14.3f}  {c.n_parameters:>6}")
    return "\n".join(lines)
