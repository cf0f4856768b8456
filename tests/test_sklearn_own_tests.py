"""scikit-learn's own tests of its two mixtures, run against jaxgmm.sklearn's GaussianMixture and
BayesianGaussianMixture.

The test files come from the installed scikit-learn (so they follow its version):
``sklearn/mixture/tests/test_gaussian_mixture.py``, ``test_bayesian_mixture.py``
and ``test_mixture.py``. Each is copied to a temporary directory with one
explicit source rewrite, its import of the estimator classes (scikit-learn's private helpers that it imports, such as
``_estimate_gaussian_covariances_full``, still come from scikit-learn), and run
with pytest in a subprocess, in float64 (``JAX_ENABLE_X64=1``; this test is
skipped in the float32 pass).

Why a subprocess rather than importing the rewritten modules here: the copied
files must run under scikit-learn's own pytest plugin (``-p sklearn.conftest``:
its ``global_random_seed`` and ``global_dtype`` fixtures and markers), not
jaxgmm's ``tests/conftest.py``; their ``filterwarnings`` marks and module-level
state stay out of this process; JAX_ENABLE_X64 is set before JAX starts
(x64 is never toggled inside a process); and the many programs they compile
die with the subprocess (see dev.py on long single-process runs).

Tests that test a documented difference, or that call scikit-learn's private
helpers on our object in a way that cannot apply, are deselected by name in
:data:`EXCLUDED`, each with its reason (by a conftest.py written next to the
copies, which also records that every name matched a collected test: pytest's
``--deselect`` silently ignores a name that matches nothing); everything else
must pass.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SklearnGM

from conftest import make_blobs, rtol_for
from jaxgmm.sklearn import FLOAT32_ACCURACY, ILL_DEFINED_COVARIANCE, GaussianMixture

ATTRIBUTE_NAMES = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")
OURS = "from jaxgmm.sklearn import GaussianMixture"

# file -> [(line in the installed file, its replacement)]; each line must occur exactly once.
REWRITES = {
    "test_gaussian_mixture.py": [("from sklearn.mixture import GaussianMixture", OURS)],
    "test_bayesian_mixture.py": [
        ("from sklearn.mixture import BayesianGaussianMixture", "from jaxgmm.sklearn import BayesianGaussianMixture")
    ],
    "test_mixture.py": [
        (
            "from sklearn.mixture import BayesianGaussianMixture, GaussianMixture",
            "from jaxgmm.sklearn import BayesianGaussianMixture, GaussianMixture",
        )
    ],
}

# pytest node id -> why it cannot pass against jaxgmm. An id without "[...]" excludes every parametrization
# (scikit-learn parametrizes many tests with its global_dtype or global_random_seed fixtures).
EXCLUDED = {
    "test_gaussian_mixture.py::test_gaussian_mixture_precisions_init_diag": (
        "documented difference: it starts scikit-learn's own KMeans(random_state=0) by hand and expects "
        "GaussianMixture(random_state=0) to start from the same labels (same n_iter_, same precisions); "
        "random_state seeds JAX's generator and jaxgmm's own k-means, so the start differs"
    ),
    "test_gaussian_mixture.py::test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters": (
        "cannot apply: it counts calls to scikit-learn's private M-step helper "
        "sklearn.mixture._gaussian_mixture._estimate_gaussian_parameters (monkeypatched), which jaxgmm's "
        "EM never calls"
    ),
}

# At least this many of scikit-learn's tests must pass (95 with scikit-learn 1.9.1: 76 GaussianMixture cases,
# 20 of them float32-data cases, 2 BayesianGaussianMixture cases of test_mixture.py and the 17 of
# test_bayesian_mixture.py; its
# array-API tests skip without torch/cupy/dpnp/SCIPY_ARRAY_API), so a silent collection failure cannot pass.
MIN_PASSED = 90
TIMEOUT_S = 900


def installed_tests_dir() -> Path:
    spec = importlib.util.find_spec("sklearn")
    tests = Path(next(iter(spec.submodule_search_locations))) / "mixture" / "tests"
    if not (tests / "test_gaussian_mixture.py").exists():
        pytest.skip(f"this scikit-learn installation has no test files ({tests})")
    return tests


def rewritten(name: str) -> str:
    """The installed test file ``name`` with its GaussianMixture import pointed at jaxgmm."""
    source = (installed_tests_dir() / name).read_text()
    for old, new in REWRITES[name]:
        lines = source.split("\n")
        assert lines.count(old) == 1, f"the installed {name} no longer has the line {old!r} exactly once"
        source = "\n".join(new if line == old else line for line in lines)
    return source


# Written next to the copied files: deselects EXCLUDED (every id must match at least one collected test,
# recorded in excluded.json for the check below).
CONFTEST = """
import json

EXCLUDED = {excluded!r}


def pytest_collection_modifyitems(config, items):
    matched, kept, dropped = {{}}, [], []
    for item in items:
        hits = [i for i in EXCLUDED if item.nodeid == i or item.nodeid.startswith(i + "[")]
        for i in hits:
            matched.setdefault(i, []).append(item.nodeid)
        (dropped if hits else kept).append(item)
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept
    with open("excluded.json", "w") as f:
        json.dump(matched, f)
"""


def test_excluded_tests_exist_in_the_installed_files():
    for node_id in EXCLUDED:
        name, test = node_id.split("::")
        function = test.split("[")[0]
        source = (installed_tests_dir() / name).read_text()
        assert re.search(rf"^def {function}\(", source, re.MULTILINE), f"{node_id}: no such test in scikit-learn {name}"


@pytest.mark.x64
def test_scikit_learn_own_mixture_tests_pass(tmp_path):
    for name in REWRITES:
        (tmp_path / name).write_text(rewritten(name))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # the rootdir: no outer configuration applies
    (tmp_path / "conftest.py").write_text(CONFTEST.format(excluded=EXCLUDED))
    report = tmp_path / "report.xml"
    cmd = [sys.executable, "-m", "pytest", *REWRITES, "-q", "-rfE", "-p", "no:cacheprovider",
           "-p", "sklearn.conftest", f"--junitxml={report}", "--durations=5"]
    # SKLEARN_RUN_FLOAT32_TESTS: scikit-learn's global_dtype fixture then also runs its float32-data cases
    # (20 tests, ~20 s): float32 input fitted in float32 while x64 is on.
    env = dict(os.environ, JAX_ENABLE_X64="1", SKLEARN_RUN_FLOAT32_TESTS="1")
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    output = proc.stdout + proc.stderr
    tail = output[-8000:]
    assert proc.returncode == 0, f"scikit-learn's tests failed against jaxgmm (exit {proc.returncode}):\n{tail}"
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    assert passed >= MIN_PASSED, f"only {passed} of scikit-learn's tests passed ({counts}):\n{tail}"
    matched = json.loads((tmp_path / "excluded.json").read_text())
    assert set(matched) == set(EXCLUDED), f"EXCLUDED ids that matched no collected test: {set(EXCLUDED) - set(matched)}"


# ---- what the run above needs of the estimator, checked in both passes (the run itself is float64 only)

DEGENERATE = np.vstack((np.ones((5, 5)), np.zeros((5, 5))))  # scikit-learn's test_regularisation data


@pytest.mark.parametrize("covariance_type", ["full", "VEV"])
def test_a_fit_that_breaks_down_raises_scikit_learns_message(covariance_type, dtype):
    X = DEGENERATE.astype(dtype)
    message = ILL_DEFINED_COVARIANCE + (FLOAT32_ACCURACY if dtype == np.float32 else "")
    gm = GaussianMixture(10, covariance_type=covariance_type, reg_covar=0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=re.escape(message + " (jaxgmm: the log-likelihood or parameters")):
            gm.fit(X)
    assert not hasattr(gm, "weights_")  # nothing half-set


def test_private_parameter_methods_match_scikit_learns(covariance_type, dtype):
    X, *_ = make_blobs(seed=3, n=120, k=3, d=3)
    X = X.astype(dtype)
    resp = np.random.default_rng(4).dirichlet(np.ones(3), size=len(X)).astype(dtype)
    ours, theirs = (cls(3, covariance_type=covariance_type) for cls in (GaussianMixture, SklearnGM))
    ours._initialize(X, resp)
    theirs._initialize(X, resp)
    theirs._set_parameters(theirs._get_parameters())  # sets precisions_
    rtol = rtol_for(dtype, 1e-10, 1e-4)
    for a, b, name in zip(ours._get_parameters() + (ours.precisions_,),
                          theirs._get_parameters() + (theirs.precisions_,), ATTRIBUTE_NAMES):
        assert a.dtype == dtype, name
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, err_msg=name)
    # _set_parameters on a new instance: the same model, precisions_ derived as scikit-learn derives them
    copy = GaussianMixture(3, covariance_type=covariance_type)
    copy._set_parameters(ours._get_parameters())
    np.testing.assert_allclose(copy.precisions_, theirs.precisions_, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(copy.predict_proba(X), theirs.predict_proba(X), rtol=rtol, atol=rtol)


def test_private_parameter_methods_take_mclust_models(dtype):
    X, *_ = make_blobs(seed=5, n=120, k=3, d=3)
    gm = GaussianMixture(3, covariance_type="VEV", random_state=0).fit(X.astype(dtype))
    copy = GaussianMixture(3, covariance_type="VEV")
    copy._set_parameters(gm._get_parameters())
    np.testing.assert_allclose(copy.precisions_, gm.precisions_, rtol=rtol_for(dtype, 1e-10, 1e-4))
    np.testing.assert_array_equal(copy.predict(X), gm.predict(X))
    gm.set_params(precisions_init=np.eye(3)[None].repeat(3, 0) * [[[1.0]], [[1.0]], [[-1.0]]])
    with pytest.raises(ValueError, match=re.escape("'VEV precision' should be symmetric, positive-definite")):
        gm.fit(X)


def test_sample_draws_any_count():
    # drawn in power-of-two counts (one program each) and cut: scikit-learn draws 1, 2, ..., 99 samples
    gm = GaussianMixture(2, random_state=0).fit(make_blobs(seed=6, n=60, k=2, d=2)[0])
    for n in (1, 2, 15, 16, 17, 99):
        X, y = gm.sample(n)
        assert X.shape == (n, 2) and y.shape == (n,) and np.all(np.diff(y) >= 0)
    np.testing.assert_array_equal(gm.sample(17)[0], gm.sample(17)[0])
