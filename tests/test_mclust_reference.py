"""Checks of the R mclust reference fixture itself (numpy/scipy only)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from mclust_reference import FIXTURE, load_reference, rscript_with_mclust

REF = load_reference()
FITS = [
    (name, model)
    for name, ds in REF["datasets"].items()
    for model in ds["models"]
]
FIT_IDS = [f"{name}-{model}" for name, model in FITS]


def _log_resp(X, pro, mean, sigma):
    """(N, G) log pro_k + log N(x_i | mean_k, sigma_k)."""
    return np.stack(
        [
            np.log(p) + multivariate_normal(mean=m, cov=s).logpdf(X).reshape(-1)
            for p, m, s in zip(pro, mean, sigma)
        ],
        axis=1,
    )


def test_fixture_shape_and_version():
    assert FIXTURE.exists()
    assert REF["mclust_version"].split(".")[0] in {"5", "6"}
    assert set(REF["datasets"]) == {"faithful", "three_d", "four_d", "one_d"}
    for name, ds in REF["datasets"].items():
        X, z, G = ds["X"], ds["z"], ds["G"]
        assert X.ndim == 2 and z.shape == (X.shape[0], G)
        np.testing.assert_allclose(z.sum(axis=1), 1.0, rtol=1e-12)
        assert np.all(z > 0)
        for model in ds["models"]:
            fit = ds["fits"][model]
            assert fit["error"] is None, (name, model, fit["error"])
            for step in ("mstep", "me"):
                p = fit[step]
                assert p["pro"].shape == (G,)
                assert p["mean"].shape == (G, X.shape[1])
                assert p["sigma"].shape == (G, X.shape[1], X.shape[1])
            assert fit["me"]["z"].shape == z.shape
            assert fit["me"]["returnCode"] == 0


def test_n_parameters_rows():
    rows = REF["n_parameters"]
    models = {r["model"] for r in rows}
    assert len(models) == 16  # 14 multivariate + "E", "V"
    for r in rows:
        d, G = r["d"], r["G"]
        assert r["n_parameters"] == r["nVarParams"] + G * d + (G - 1)
    vvv = {(r["d"], r["G"]): r["nVarParams"] for r in rows if r["model"] == "VVV"}
    assert vvv[(3, 2)] == 12


@pytest.mark.parametrize(("name", "model"), FITS, ids=FIT_IDS)
def test_me_loglik_matches_own_parameters(name, model):
    ds = REF["datasets"][name]
    me = ds["fits"][model]["me"]
    lr = _log_resp(ds["X"], me["pro"], me["mean"], me["sigma"])
    loglik = logsumexp(lr, axis=1).sum()
    np.testing.assert_allclose(loglik, me["loglik"], rtol=1e-9)
    # mclust's final z is the E-step of the final parameters.
    post = np.exp(lr - logsumexp(lr, axis=1, keepdims=True))
    np.testing.assert_allclose(me["z"], post, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize(("name", "model"), FITS, ids=FIT_IDS)
def test_sigma_symmetric_positive_definite(name, model):
    fit = REF["datasets"][name]["fits"][model]
    for step in ("mstep", "me"):
        for s in fit[step]["sigma"]:
            np.testing.assert_allclose(s, s.T, rtol=1e-10, atol=1e-12)
            assert np.linalg.eigvalsh(s).min() > 0


@pytest.mark.parametrize(("name", "model"), FITS, ids=FIT_IDS)
def test_mstep_closed_form_pro_and_mean(name, model):
    ds = REF["datasets"][name]
    X, z = ds["X"], ds["z"]
    ms = ds["fits"][model]["mstep"]
    nk = z.sum(axis=0)
    np.testing.assert_allclose(ms["pro"], nk / X.shape[0], rtol=1e-10)
    np.testing.assert_allclose(ms["mean"], (z.T @ X) / nk[:, None], rtol=1e-10)
    if model in ("VVV", "V"):  # unconstrained: weighted scatter / n_k
        for k in range(z.shape[1]):
            r = X - ms["mean"][k]
            np.testing.assert_allclose(
                ms["sigma"][k], (z[:, k, None] * r).T @ r / nk[k], rtol=1e-10
            )


def _assert_same(a, b, path="ref"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray) or (
        isinstance(a, float) and not isinstance(a, bool)
    ):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=0, err_msg=path)
    else:
        assert a == b, path


@pytest.mark.skipif(not rscript_with_mclust(), reason="needs Rscript with mclust")
def test_fixture_is_what_the_script_makes():
    live = load_reference(live=True)
    _assert_same(REF, live)
