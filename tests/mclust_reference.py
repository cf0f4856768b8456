"""R mclust reference data for the parsimonious covariance models.

``tests/mclust/reference.json`` is produced by ``tests/mclust/make_reference.R``
(run as ``Rscript tests/mclust/make_reference.R OUT.json`` from the repository
root) and committed as a fixture, so the tests need no R.  Layout, after
:func:`load_reference`::

    ref["mclust_version"]                      # "6.0.0"
    ref["control"]                             # me_tol, itmax, eps, mstep_inner_tols
    ref["n_parameters"]                        # [{model, d, G, n_parameters, nVarParams}]
    ds = ref["datasets"][name]                 # faithful, three_d, four_d, one_d
    ds["X"] (N, D), ds["z"] (N, G)             # data and starting responsibilities
    ds["G"], ds["models"]
    fit = ds["fits"][model]                    # model in ds["models"]
    fit["mstep"]: pro (G,), mean (G, D), sigma (G, D, D), returnCode,
                  [inner_iterations, inner_err, inner_tol]   # one M-step from z
    fit["me"]:    pro, mean, sigma, loglik, n_iter, err, z (N, G), returnCode,
                  [inner_iterations]                         # EM from z
    fit["error"]: None or a string

Numeric arrays (X, z, pro, mean, sigma) are numpy float64 arrays; everything
else is as JSON gives it.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
FIXTURE = HERE / "mclust" / "reference.json"
SCRIPT = HERE / "mclust" / "make_reference.R"
# MAP-EM with mclust's priorControl() (tests/test_map.py): see make_prior_reference.R for the layout.
PRIOR_FIXTURE = HERE / "mclust" / "prior_reference.json"
PRIOR_SCRIPT = HERE / "mclust" / "make_prior_reference.R"

_ARRAY_KEYS = frozenset({"X", "z", "pro", "mean", "sigma", "scale"})


@functools.lru_cache(maxsize=None)
def rscript_with_mclust() -> bool:
    """True iff ``Rscript`` is on PATH and ``library(mclust)`` loads."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return False
    try:
        proc = subprocess.run(
            [rscript, "-e", "suppressPackageStartupMessages(library(mclust))"],
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _convert(obj):
    if isinstance(obj, dict):
        return {
            k: (
                np.asarray(v, dtype=np.float64)
                if k in _ARRAY_KEYS and isinstance(v, list)
                else _convert(v)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_convert(v) for v in obj]
    return obj


def _run_script(out: Path, script: Path = SCRIPT) -> None:
    if not rscript_with_mclust():
        raise RuntimeError(
            "live mclust reference requested, but Rscript with the mclust "
            "package is not available (install R and mclust, e.g. "
            "`apt-get install r-cran-mclust`)"
        )
    proc = subprocess.run(
        [shutil.which("Rscript"), str(script), str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{script} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )


@functools.lru_cache(maxsize=None)
def load_reference(live: bool = False, fixture: Path = FIXTURE, script: Path = SCRIPT) -> dict:
    """The committed fixture, or (``live=True``) a fresh run of the R script.

    Cached per process: treat the returned dict and arrays as read-only.
    """
    if not live:
        with open(fixture) as fh:
            return _convert(json.load(fh))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "reference.json"
        _run_script(out, script)
        with open(out) as fh:
            return _convert(json.load(fh))


def load_prior_reference(live: bool = False) -> dict:
    """:func:`load_reference` for the MAP-EM fixture (``make_prior_reference.R``)."""
    return load_reference(live, PRIOR_FIXTURE, PRIOR_SCRIPT)
