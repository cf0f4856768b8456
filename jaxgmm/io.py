"""Saving and loading fitted mixtures in a format that cannot execute code on load.

A model file is a numpy ``.npz`` archive (a zip of ``.npy`` arrays), read with
``allow_pickle=False``. Its members:

* ``header``: UTF-8 JSON as a ``uint8`` array, e.g.
  ``{"format": "jaxgmm-model", "format_version": 1, "jaxgmm_version": "0.1.0",
  "kind": "GMMParams", "covariance_type": "full", "dtype": "float64",
  "n_components": 2, "n_features": 2}``. An estimator
  (``kind: "GaussianMixture"``) adds its constructor ``params``, and
  ``converged_``, ``n_iter_``, ``n_features_in_``.
* ``weights (K,)``, ``means (K, D)``, ``covariances`` (shape by covariance
  type), all in ``dtype``.
* optional, for any kind: ``feature_names (D,)`` (unicode) and the
  standardisation the data went through before fitting, ``center (D,)`` and
  ``scale (D,)`` (float64; the model describes ``(x − center) / scale``),
  as written by the ``jaxgmm`` command.
* estimator only: ``precisions``, ``precisions_cholesky``, ``lower_bound``
  (0-d), ``lower_bounds (n_iter_,)``, optionally ``feature_names_in`` (a
  unicode array) and ``init.weights_init`` / ``init.means_init`` /
  ``init.precisions_init``.

Arrays are stored as they are, so a round trip is bit-for-bit. Loading
checks the header, the member names, the dtypes, the shapes and that the
parameters are a valid mixture, and raises ``ValueError`` naming the problem
for a truncated, corrupted, hostile (pickled objects) or newer file.
"""

import json
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxgmm.params import MODELS, GMMParams, covariance_shape

FORMAT = "jaxgmm-model"
FORMAT_VERSION = 1
_MAX_HEADER_BYTES = 1 << 16
_PARAM_ARRAYS = ("weights", "means", "covariances")
_ESTIMATOR_ARRAYS = ("precisions", "precisions_cholesky", "lower_bound", "lower_bounds")
_INIT_ARRAYS = ("weights_init", "means_init", "precisions_init")
_FLOAT_DTYPES = ("float32", "float64")
_INFO_ARRAYS = ("feature_names", "center", "scale")


class SavedModel(NamedTuple):
    """What :func:`~jaxgmm.io.read_model` returns: the model and what was saved with it (``None`` if not).

    Examples
    --------
    A model fitted to standardised data, saved with its standardisation (as ``jaxgmm fit --standardize``
    does):

    >>> import jax, numpy as np, os, tempfile, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> params = jaxgmm.initialize(jax.random.key(0), (X - X.mean(0)) / X.std(0), 2)
    >>> folder = tempfile.mkdtemp()
    >>> jaxgmm.save(os.path.join(folder, "standardized.npz"), params, center=X.mean(0), scale=X.std(0))
    >>> model, names, center, scale = jaxgmm.io.read_model(os.path.join(folder, "standardized.npz"))
    >>> type(model).__name__, names, bool(np.allclose(scale, X.std(0)))
    ('GMMParams', None, True)
    """

    model: object
    feature_names: tuple | None
    center: np.ndarray | None
    scale: np.ndarray | None


def _version() -> str:
    from jaxgmm import __version__

    return __version__


def _json_value(name, value):
    """A constructor parameter as JSON (``None`` for a RandomState, which cannot be stored)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if name == "random_state":
        return None
    raise ValueError(f"cannot save parameter {name}={value!r}.")


def save(path, model, *, feature_names=None, center=None, scale=None) -> None:
    """Write a :class:`GMMParams` or a fitted :class:`jaxgmm.sklearn.GaussianMixture` to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Written as given (no suffix is added); the file is replaced atomically.
    model : GMMParams or fitted jaxgmm.sklearn.GaussianMixture
    feature_names : sequence of str, shape (D,), optional
    center, scale : array-like, shape (D,), optional
        The model was fitted to ``(x − center) / scale``.

    Examples
    --------
    >>> import jax.numpy as jnp, tempfile, os
    >>> from jaxgmm import GMMParams, save, load
    >>> p = GMMParams(jnp.array([0.5, 0.5]), jnp.zeros((2, 3)), jnp.ones(2), "spherical")
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> save(path, p)
    >>> bool((load(path).means == p.means).all())
    True
    """
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "jaxgmm_version": _version()}
    if isinstance(model, GMMParams):
        arrays = {name: np.asarray(getattr(model, name)) for name in _PARAM_ARRAYS}
        header.update(kind="GMMParams", covariance_type=model.covariance_type)
    elif type(model).__name__ == "GaussianMixture" and type(model).__module__ == "jaxgmm.sklearn":
        arrays, extra = _estimator_arrays(model)
        header.update(extra)
    else:
        raise TypeError(f"save takes a GMMParams or a jaxgmm.sklearn.GaussianMixture; got {type(model).__name__}.")
    dtype = arrays["means"].dtype
    if dtype.name not in _FLOAT_DTYPES or arrays["means"].ndim != 2:
        raise ValueError(f"cannot save parameters of dtype {dtype} and means shape {arrays['means'].shape}.")
    header.update(dtype=dtype.name, n_components=arrays["means"].shape[0], n_features=arrays["means"].shape[1])
    n_features = arrays["means"].shape[1]
    if feature_names is not None:
        arrays["feature_names"] = np.asarray([str(n) for n in feature_names], dtype=str)
    for name, value in (("center", center), ("scale", scale)):
        if value is not None:
            arrays[name] = np.asarray(value, dtype=np.float64)
    for name in _INFO_ARRAYS:
        if name in arrays and arrays[name].shape != (n_features,):
            raise ValueError(f"{name} must have shape ({n_features},); got {arrays[name].shape}.")
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _estimator_arrays(model):
    if not hasattr(model, "converged_"):
        raise ValueError("save needs a fitted GaussianMixture; call fit first.")
    arrays = {
        "weights": model.weights_, "means": model.means_, "covariances": model.covariances_,
        "precisions": model.precisions_, "precisions_cholesky": model.precisions_cholesky_,
        "lower_bound": np.asarray(model.lower_bound_), "lower_bounds": model.lower_bounds_,
    }
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    if hasattr(model, "feature_names_in_"):
        arrays["feature_names_in"] = np.asarray(model.feature_names_in_, dtype=str)
    params = {}
    for name, value in model.get_params().items():
        if name in _INIT_ARRAYS:
            if value is not None:
                arrays["init." + name] = np.asarray(value)
        else:
            params[name] = _json_value(name, value)
    extra = dict(
        kind="GaussianMixture", covariance_type=model.covariance_type, params=params,
        converged_=bool(model.converged_), n_iter_=int(model.n_iter_), n_features_in_=int(model.n_features_in_),
    )
    return arrays, extra


def _bad(path, problem):
    return ValueError(f"{path} is not a valid jaxgmm model file: {problem}")


def _read_members(path) -> dict:
    """Every member of the archive as a numpy array, never unpickling anything."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if "pickle" in str(exc):
            raise _bad(path, "it is not an .npz archive (it may hold pickled Python objects, which are never loaded).") from None
        raise _bad(path, f"cannot read it as an .npz archive ({exc}).") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _bad(path, "it holds a single array, not an .npz archive.")
    members = {}
    with archive:
        for name in archive.files:
            try:
                members[name] = archive[name]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise _bad(path, f"member {name!r} holds Python objects (refused: loading them could run code).") from None
                raise _bad(path, f"member {name!r} is damaged ({exc}).") from None
            except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
                raise _bad(path, f"member {name!r} is damaged or truncated ({exc}).") from None
    return members


def _read_header(path, members) -> dict:
    raw = members.get("header")
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > _MAX_HEADER_BYTES:
        raise _bad(path, "missing or malformed header.")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"the header is not valid JSON ({exc}).") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(path, f"the header does not say format {FORMAT!r}.")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has jaxgmm model format version {version!r} (written by jaxgmm "
            f"{header.get('jaxgmm_version', '?')}); this jaxgmm {_version()} reads version {FORMAT_VERSION}."
        )
    cov_type = header.get("covariance_type")
    if not isinstance(cov_type, str) or cov_type not in MODELS or header.get("dtype") not in _FLOAT_DTYPES:
        raise _bad(path, "the header's covariance_type or dtype is invalid.")
    if header.get("kind") not in ("GMMParams", "GaussianMixture"):
        raise _bad(path, f"unknown kind {header.get('kind')!r}.")
    for key in ("n_components", "n_features"):
        if not isinstance(header.get(key), int) or header[key] < 1:
            raise _bad(path, f"the header's {key} is invalid.")
    return header


def _check_arrays(path, header, members) -> None:
    k, d, cov_type = header["n_components"], header["n_features"], header["covariance_type"]
    expected = {"header", *_PARAM_ARRAYS, *_INFO_ARRAYS}
    shapes = {"weights": (k,), "means": (k, d), "covariances": covariance_shape(cov_type, k, d)}
    if header["kind"] == "GaussianMixture":
        expected |= set(_ESTIMATOR_ARRAYS) | {"feature_names_in"} | {"init." + n for n in _INIT_ARRAYS}
        n_iter = header.get("n_iter_")
        if not isinstance(n_iter, int) or n_iter < 0:
            raise _bad(path, "the header's n_iter_ is invalid.")
        shapes.update(
            precisions=shapes["covariances"], precisions_cholesky=shapes["covariances"], lower_bound=(),
            lower_bounds=(n_iter,),
        )
    unexpected = set(members) - expected
    if unexpected:
        raise _bad(path, f"unexpected members {sorted(unexpected)}.")
    for name, shape in shapes.items():
        if name not in members:
            raise _bad(path, f"member {name!r} is missing.")
        a = members[name]
        if a.dtype != np.dtype(header["dtype"]) or a.shape != shape:
            raise _bad(path, f"member {name!r} has dtype {a.dtype} and shape {a.shape}; expected {header['dtype']} {shape}.")
    for name in ("feature_names_in", "feature_names"):
        if name in members and (members[name].dtype.kind != "U" or members[name].shape != (d,)):
            raise _bad(path, f"{name} must be {d} strings.")
    for name in ("center", "scale"):
        if name in members:
            a = members[name]
            if a.dtype != np.float64 or a.shape != (d,) or not np.all(np.isfinite(a)):
                raise _bad(path, f"{name} must be {d} finite float64 numbers.")
    if "scale" in members and np.any(members["scale"] <= 0):
        raise _bad(path, "scale must be positive.")
    from jaxgmm.validation import check_params

    try:
        check_params(*(members[n] for n in _PARAM_ARRAYS), cov_type)
    except ValueError as exc:
        raise _bad(path, f"the parameters are not a valid mixture ({exc})") from None


def load(path):
    """Read a model written by :func:`~jaxgmm.save` (see :func:`~jaxgmm.io.read_model` for what was saved with it).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    GMMParams or jaxgmm.sklearn.GaussianMixture
        Whichever was saved. Arrays are bit-for-bit those saved (float64
        :class:`GMMParams` stay float64 only with ``jax_enable_x64``; the
        estimator's attributes are numpy and always keep their dtype).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a valid jaxgmm model (truncated, corrupted,
        holding pickled objects, or of another format version).

    Examples
    --------
    >>> import jax.numpy as jnp, os, tempfile, jaxgmm
    >>> p = jaxgmm.GMMParams(jnp.array([0.5, 0.5]), jnp.zeros((2, 3)), jnp.ones(2), "spherical")
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> jaxgmm.save(path, p)
    >>> q = jaxgmm.load(path)
    >>> q.covariance_type, bool((q.covariances == p.covariances).all())
    ('spherical', True)
    """
    return read_model(path).model


def read_model(path) -> SavedModel:
    """Read a model written by :func:`~jaxgmm.save`, with its feature names and standardisation.

    Raises as :func:`~jaxgmm.load`.

    Examples
    --------
    >>> import jax.numpy as jnp, os, tempfile, jaxgmm
    >>> from jaxgmm.io import read_model
    >>> p = jaxgmm.GMMParams(jnp.array([0.5, 0.5]), jnp.zeros((2, 2)), jnp.ones(2), "spherical")
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> jaxgmm.save(path, p, feature_names=["eruptions", "waiting"])
    >>> saved = read_model(path)
    >>> saved.feature_names, saved.center is None
    (('eruptions', 'waiting'), True)
    """
    members = _read_members(path)
    header = _read_header(path, members)
    _check_arrays(path, header, members)
    if header["kind"] == "GMMParams":
        model = GMMParams(*(jnp.asarray(members[n]) for n in _PARAM_ARRAYS), header["covariance_type"])
    else:
        model = _estimator_from(path, header, members)
    names = members.get("feature_names")
    return SavedModel(
        model, None if names is None else tuple(names.tolist()), members.get("center"), members.get("scale")
    )


def _estimator_from(path, header, members):
    from jaxgmm.sklearn import GaussianMixture

    params = header.get("params")
    if not isinstance(params, dict):
        raise _bad(path, "the header has no estimator parameters.")
    params = dict(params, **{n: members.get("init." + n) for n in _INIT_ARRAYS})
    try:
        model = GaussianMixture(**params)
    except TypeError as exc:
        raise _bad(path, f"unknown estimator parameters ({exc}).") from None
    if model.covariance_type != header["covariance_type"] or model.n_components != header["n_components"]:
        raise _bad(path, "the estimator parameters disagree with the header.")
    model.weights_, model.means_, model.covariances_ = (members[n] for n in _PARAM_ARRAYS)
    model.precisions_ = members["precisions"]
    model.precisions_cholesky_ = members["precisions_cholesky"]
    model.lower_bound_ = members["lower_bound"][()]
    model.lower_bounds_ = members["lower_bounds"]
    model.converged_ = bool(header.get("converged_"))
    model.n_iter_ = int(header["n_iter_"])
    model.n_features_in_ = header["n_features"]
    if "feature_names_in" in members:
        model.feature_names_in_ = members["feature_names_in"].astype(object)
    return model
