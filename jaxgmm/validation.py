"""Checks of user input, run at the edges before anything is traced.

Every function raises ``ValueError`` (``TypeError`` for a wrong kind of
object) with a message naming the problem, and returns fresh arrays: the
caller's arrays are never modified. Values inside a ``jax.jit``/``vmap``
trace cannot be inspected; for those only shapes are checked.
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm.models import get_model
from jaxgmm.params import GMMParams, covariance_shape


def is_traced(*arrays) -> bool:
    """True if any argument is a JAX tracer (values unknown until run time)."""
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def float_dtype(dtype) -> np.dtype:
    """The float dtype JAX computes in for input of ``dtype``.

    float64 and integer input become JAX's default float (float64 only with
    ``jax_enable_x64``); float32 and narrower become float32.
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating) and dtype.itemsize <= 4:
        return np.dtype(np.float32)
    return np.dtype(jnp.zeros((), dtype=float).dtype)


def check_array(X, *, name: str = "X", min_samples: int = 1, n_features: int | None = None,
                missing: str = "raise") -> jax.Array:
    """A validated ``(N, D)`` float array: 2-D, numeric, non-empty, finite.

    Raises ``ValueError`` for 1-D or 3-D input, an empty array, fewer than
    ``min_samples`` rows, a feature count other than ``n_features``, or
    NaN/infinite values. With ``missing="marginalize"`` NaN marks a missing
    value: allowed, but every column needs an observed value and
    ``min_samples`` rows need one (infinite values are still refused).
    """
    if is_traced(X):
        arr = X
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # e.g. ragged nested lists
            raise ValueError(f"{name} could not be converted to a numeric array: {exc}") from exc
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{name} must be numeric; got an array of dtype {arr.dtype}.")
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(f"{name} must be real-valued; got complex dtype {arr.dtype}.")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features); got {arr.ndim}-D "
            f"with shape {arr.shape}. Reshape 1-D data with X.reshape(-1, 1)."
        )
    n_samples, n_feat = arr.shape
    if n_samples == 0 or n_feat == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}; need at least one sample and one feature.")
    if n_samples < min_samples:
        raise ValueError(
            f"{name} has {n_samples} samples but at least {min_samples} are needed "
            f"(n_samples must be >= n_components)."
        )
    if n_features is not None and n_feat != n_features:
        raise ValueError(f"{name} has {n_feat} features, but the model was fitted with {n_features} features.")
    dtype = float_dtype(arr.dtype)
    if missing == "marginalize" and not is_traced(arr):
        check_missing_values(arr, name, min_samples)
    elif not is_traced(arr):
        if not np.all(np.isfinite(arr)):
            bad = "NaN" if np.isnan(arr).any() else "infinite"
            raise ValueError(f"{name} contains {bad} values; remove or impute them before fitting, or pass "
                             "missing='marginalize' to treat NaN as missing values.")
    return jnp.array(arr, dtype=dtype)  # jnp.array copies: the caller's array is never aliased


def check_missing_values(arr: np.ndarray, name: str = "X", min_samples: int = 1) -> int:
    """Checks of ``(N, D)`` numpy data whose NaN are missing values; returns how many are missing.

    ``ValueError`` for infinite values, a column with no observed value (naming it), or fewer than
    ``min_samples`` rows with an observed value.
    """
    missing = np.isnan(arr)
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains infinite values; only NaN can mark a missing value.")
    empty_columns = np.flatnonzero(missing.all(axis=0))
    if empty_columns.size:
        raise ValueError(f"{name} column {int(empty_columns[0])} has no observed value (columns without one: "
                         f"{empty_columns.tolist()}); drop it.")
    n_rows = int((~missing.all(axis=1)).sum())
    if n_rows < min_samples:
        raise ValueError(f"{name} has {n_rows} rows with an observed value but at least {min_samples} are needed "
                         "(n_samples must be >= n_components).")
    return int(missing.sum())


def check_sample_weight(sample_weight, n_samples: int, dtype, *, min_positive: int = 1) -> jax.Array:
    """Validated sample weights ``(N,)``: finite, non-negative, at least ``min_positive`` positive."""
    if sample_weight is None:
        return jnp.ones(n_samples, dtype)
    if is_traced(sample_weight):
        w = sample_weight
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim == 0:
            w = np.full(n_samples, float(w))
    if w.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},) to match X; got {w.shape}.")
    if not is_traced(w):
        if not np.all(np.isfinite(w)):
            raise ValueError("sample_weight contains NaN or infinite values.")
        if np.any(w < 0):
            raise ValueError("sample_weight contains negative values; weights must be >= 0.")
        positive = int(np.count_nonzero(w))
        if positive == 0:
            raise ValueError("sample_weight is zero for every sample; at least one weight must be positive.")
        if positive < min_positive:
            raise ValueError(
                f"only {positive} samples have positive weight but n_components={min_positive}; "
                "need at least as many weighted samples as components."
            )
    return jnp.array(w, dtype=dtype)


def check_datasets(X: np.ndarray, sample_weight: np.ndarray, *, min_positive: int = 1,
                   missing: str = "raise") -> tuple[jax.Array, jax.Array]:
    """Validated data ``(B, N, D)`` and weights ``(B, N)`` of many data sets, checked in one pass each.

    The same checks as :func:`check_array` and :func:`check_sample_weight` per
    data set, vectorised: a loop of per-set checks cost more than the fits of
    a thousand small data sets. When a set fails, the per-set check runs on
    it to raise its message, naming it (``X[b]``).
    """
    check_array(X[0], name="X[0]", missing=missing)  # dtype, emptiness: the same for every set
    for b in np.flatnonzero(~np.isfinite(X).all(axis=(1, 2))):
        if missing == "marginalize":  # the rows of positive weight (padding is zeroed)
            check_missing_values(X[b][sample_weight[b] > 0], f"X[{b}]")
        else:
            check_array(X[b], name=f"X[{b}]")
    bad_weights = ~np.isfinite(sample_weight).all(axis=1) | (sample_weight < 0).any(axis=1)
    bad_weights |= np.count_nonzero(sample_weight, axis=1) < min_positive
    for b in np.flatnonzero(bad_weights):
        try:
            check_sample_weight(sample_weight[b], X.shape[1], np.float64, min_positive=min_positive)
        except ValueError as exc:
            raise ValueError(f"data set {b}: {exc}") from None
    dtype = float_dtype(X.dtype)
    return jnp.array(X, dtype=dtype), jnp.array(sample_weight, dtype=dtype)


def check_n_components(n_components) -> int:
    if isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral):
        raise ValueError(f"n_components must be an integer >= 1; got {n_components!r}.")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1; got {n_components}.")
    return int(n_components)


def check_nonnegative(value, name: str) -> float:
    """A finite number ``>= 0`` (tol, reg_covar), or a traced scalar passed through."""
    if is_traced(value):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a non-negative number; got {value!r}.") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    return number


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
    return int(value)


def check_params(weights, means, covariances, covariance_type: str = "full", *, n_features=None, dtype=None) -> GMMParams:
    """Validated :class:`GMMParams` from user arrays.

    Checks shapes against the covariance type, finiteness, that the weights
    are non-negative and sum to 1 (to 1e-6), that every covariance is
    symmetric positive definite (full/tied layouts) or positive (diag/spherical),
    and that the covariances have the model's structure (mclust's equal
    volumes, shapes or orientations, to 1e-6).
    """
    model = get_model(covariance_type)
    weights, means, covariances = (np.asarray(a, dtype=np.float64) for a in (weights, means, covariances))
    if means.ndim != 2:
        raise ValueError(f"means must have shape (n_components, n_features); got {means.shape}.")
    k, d = means.shape
    if n_features is not None and d != n_features:
        raise ValueError(f"means have {d} features but X has {n_features}.")
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape ({k},) to match means; got {weights.shape}.")
    expected = covariance_shape(covariance_type, k, d)
    if covariances.shape != expected:
        raise ValueError(
            f"covariances for covariance_type={covariance_type!r} must have shape {expected}; "
            f"got {covariances.shape}."
        )
    for name, a in (("weights", weights), ("means", means), ("covariances", covariances)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contain NaN or infinite values.")
    if np.any(weights < 0) or abs(weights.sum() - 1.0) > 1e-6:
        raise ValueError(f"weights must be non-negative and sum to 1; they sum to {weights.sum():.8g}.")
    model.check_n_features(d)
    model.check_covariances(covariances, k, d)
    if dtype is None:
        dtype = float_dtype(np.float64)
    return GMMParams(
        jnp.array(weights, dtype), jnp.array(means, dtype), jnp.array(covariances, dtype), covariance_type
    )
