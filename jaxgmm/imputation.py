"""Filling in missing values (NaN) with a fitted mixture: conditional means and conditional draws.

Both are edges: they validate numpy input, lay the rows out by what they
miss (:mod:`jaxgmm.incomplete`) and return numpy arrays in which every
observed value is the caller's own, bit for bit.
"""

import jax
import numpy as np

from jaxgmm import missing_kernels
from jaxgmm.incomplete import layout
from jaxgmm.params import GMMParams
from jaxgmm.validation import float_dtype


def _check(params: GMMParams, X, name: str = "X") -> np.ndarray:
    if not isinstance(params, GMMParams):
        raise TypeError(f"params must be a GMMParams; got {type(params).__name__}.")
    X = np.asarray(X)
    if X.dtype == object or not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {X.dtype}.")
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n_samples, n_features); got shape {X.shape}.")
    if X.shape[1] != params.n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, but the model has {params.n_features}.")
    if np.isinf(X).any():
        raise ValueError(f"{name} contains infinite values; only NaN can mark a missing value.")
    return X


def _completed(X: np.ndarray, values) -> np.ndarray:
    """``X`` with its NaN replaced by ``values (N, D)``: observed entries are ``X``'s own, bit for bit."""
    out_dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else float_dtype(X.dtype)
    return np.where(np.isnan(X), np.asarray(values).astype(out_dtype), X).astype(out_dtype, copy=False)


def impute(params: GMMParams, X) -> np.ndarray:
    """Conditional-mean imputation: each missing value replaced by ``E[x_m | x_o]`` under the mixture.

    ``E[x_m | x_o] = Σ_k p(k | x_o) E[x_m | x_o, k]``: each component's
    conditional mean (the Gaussian regression of the missing coordinates on
    the observed ones), mixed by the component's posterior given the
    observed values. A row with no observed value gets the mixture's mean.

    Parameters
    ----------
    params : GMMParams
        A fitted mixture (``D`` features).
    X : array-like, shape (N, D)
        NaN marks a missing value.

    Returns
    -------
    ndarray, shape (N, D)
        ``X`` (a new array) with every NaN filled in; observed values are
        returned unchanged, bit for bit. Float input keeps its dtype.

    Examples
    --------
    >>> import jax.numpy as jnp, numpy as np, jaxgmm
    >>> p = jaxgmm.GMMParams(jnp.ones(1), jnp.zeros((1, 2)), jnp.array([[[1.0, 0.8], [0.8, 1.0]]]), "full")
    >>> jaxgmm.impute(p, np.array([[1.0, np.nan]])).round(6).tolist()   # 0.8 · 1.0
    [[1.0, 0.8]]
    """
    X = _check(params, X)
    if not np.isnan(X).any():
        return _completed(X, X)
    data = layout(X, None, params.covariance_type, dtype=params.means.dtype)
    return _completed(X, missing_kernels.impute(params, data))


def sample_missing(key: jax.Array, params: GMMParams, X) -> np.ndarray:
    """One draw of the missing values from their conditional distribution ``p(x_m | x_o)``: for multiple
    imputation, call it with several keys.

    Each row draws a component from its posterior given the observed values,
    then the missing values from that component's conditional Gaussian
    ``N(E[x_m | x_o, k], Cov[x_m | x_o, k])``. A row with no observed value
    is drawn from the mixture. The draws depend on ``key`` and on how the
    rows are laid out (:mod:`jaxgmm.incomplete`), not on anything else.

    Parameters
    ----------
    key : PRNG key
    params : GMMParams
    X : array-like, shape (N, D)
        NaN marks a missing value.

    Returns
    -------
    ndarray, shape (N, D)
        ``X`` with every NaN replaced by a draw; observed values unchanged,
        bit for bit.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np, jaxgmm
    >>> p = jaxgmm.GMMParams(jnp.ones(1), jnp.zeros((1, 2)), jnp.eye(2)[None], "full")
    >>> draws = jaxgmm.sample_missing(jax.random.key(0), p, np.array([[1.0, np.nan]] * 2000))
    >>> bool(np.all(draws[:, 0] == 1.0)), bool(abs(draws[:, 1].std() - 1.0) < 0.05)
    (True, True)
    """
    from jaxgmm.fit import _check_key

    key = _check_key(key)
    X = _check(params, X)
    if not np.isnan(X).any():
        return _completed(X, X)
    data = layout(X, None, params.covariance_type, dtype=params.means.dtype)
    return _completed(X, missing_kernels.sample_missing(key, params, data))
