"""Plain-text summaries of fitted mixtures, for terminals and logs."""

from typing import Sequence

import numpy as np

from jaxgmm.params import GMMParams


def _format_matrix(m: np.ndarray, indent: str) -> list[str]:
    return [indent + "  ".join(f"{v:>10.4g}" for v in row) for row in np.atleast_2d(m)]


def format_params(params: GMMParams, feature_names: Sequence[str] | None = None) -> str:
    """A readable table of weights, means and covariances, one block per component."""
    weights = np.asarray(params.weights)
    means = np.asarray(params.means)
    covariances = np.asarray(params.covariances)
    k, d = means.shape
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(d)]
    header = f"{'component':>9}  {'weight':>8}  " + "  ".join(f"{'mean ' + n:>14}" for n in names)
    lines = [header, "-" * len(header)]
    for i in range(k):
        lines.append(f"{i:>9}  {weights[i]:>8.4f}  " + "  ".join(f"{v:>14.5g}" for v in means[i]))
    lines.append("")
    cov_type = params.covariance_type
    lines.append(f"covariances ({cov_type}), columns {', '.join(names)}:")
    if cov_type == "tied":
        lines.append("  shared by all components:")
        lines += _format_matrix(covariances, "    ")
    else:
        for i in range(k):
            if cov_type == "full":
                block = covariances[i]
            elif cov_type == "diag":
                block = np.diag(covariances[i])
            else:
                block = covariances[i] * np.eye(d)
            lines.append(f"  component {i}:")
            lines += _format_matrix(block, "    ")
    return "\n".join(lines)


def format_fit(result, feature_names: Sequence[str] | None = None) -> str:
    """The parameter table plus log-likelihood, iterations and convergence of a fit."""
    lines = [
        format_params(result.params, feature_names),
        "",
        f"mean log-likelihood per sample: {float(result.log_likelihood):.6f}",
        f"EM iterations: {int(result.n_iter)}   converged: {'yes' if bool(result.converged) else 'no'}",
    ]
    return "\n".join(lines)
