"""Streamed exact EM: equals the in-memory fit, validates block by block, keeps memory bounded."""

import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgmm
from conftest import DTYPE, X64, assert_reports_own_log_likelihood, make_blobs, random_params, rtol_for

# Checks that do not depend on the float precision run in the float32 pass only (suite runtime).
once = pytest.mark.skipif(X64, reason="precision-independent check; runs in the float32 pass")


def assert_fits_equal(a, b, rtol):
    """Two FitResults agree: every restart's params, log-likelihoods and histories; iteration counts exactly."""
    for x, y in zip(jax.tree.leaves(a.restarts.params), jax.tree.leaves(b.restarts.params)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(a.restarts.log_likelihood, b.restarts.log_likelihood, rtol=rtol)
    np.testing.assert_allclose(a.restarts.history, b.restarts.history, rtol=rtol)
    np.testing.assert_array_equal(a.restarts.n_iter, b.restarts.n_iter)
    np.testing.assert_array_equal(a.restarts.converged, b.restarts.converged)
    assert int(a.best_index) == int(b.best_index)


def ragged_blocks(X, w=None, sizes=(137, 500, 3, 1024)):
    """A re-iterable source yielding blocks of irregular sizes (pairs when weights are given)."""

    def blocks():
        start, i = 0, 0
        while start < len(X):
            stop = min(start + sizes[i % len(sizes)], len(X))
            yield X[start:stop] if w is None else (X[start:stop], w[start:stop])
            start, i = stop, i + 1

    return blocks


@pytest.mark.x64
def test_streamed_npy_equals_in_memory_fit(covariance_type, tmp_path):
    X, *_ = make_blobs(seed=11, n=1500, k=3, d=3, separation=3.0)
    w = np.random.default_rng(0).uniform(0.0, 3.0, size=len(X))
    path = tmp_path / "x.npy"
    np.save(path, X)
    options = dict(covariance_type=covariance_type, n_init=2, tol=1e-8, max_iter=60)
    expected = jaxgmm.fit(jax.random.key(4), X, 3, sample_weight=w, **options)
    streamed = jaxgmm.fit_stream(jax.random.key(4), path, 3, sample_weight=w, block_size=256, **options)
    assert_fits_equal(streamed, expected, 1e-10)
    assert_reports_own_log_likelihood(streamed, X, w)


@once
def test_streamed_fit_equals_in_memory_float32_sanity(covariance_type):
    X, *_ = make_blobs(seed=12, n=1200, k=3, d=2)
    X = X.astype(DTYPE)
    start = random_params(np.random.default_rng(1), covariance_type, k=3, d=2)
    expected = jaxgmm.fit(jax.random.key(0), X, 3, covariance_type=covariance_type, init=start, tol=1e-5)
    streamed = jaxgmm.fit_stream(
        jax.random.key(0), ragged_blocks(X), 3, covariance_type=covariance_type, init=start, tol=1e-5, block_size=300
    )
    assert_fits_equal(streamed, expected, rtol_for(DTYPE, 1e-10, 2e-4))


def test_stream_e_step_equals_e_step_and_integer_weights_equal_duplicates():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(700, 3)).astype(DTYPE) * 2
    counts = rng.integers(0, 3, size=len(X))
    params = random_params(rng, "full", k=4, d=3)
    # Reference: e_step on the rows repeated as many times as their weight.
    stats_ref, ll_ref = jaxgmm.e_step(params, jnp.asarray(np.repeat(X, counts, axis=0)))
    stats, ll = jaxgmm.stream_e_step(params, ragged_blocks(X, counts.astype(DTYPE)), block_size=128)
    rtol = rtol_for(DTYPE, 1e-11, 1e-4)
    np.testing.assert_allclose(ll, ll_ref, rtol=rtol)
    for name in ("counts", "sums", "scatters", "centers"):
        np.testing.assert_allclose(getattr(stats, name), getattr(stats_ref, name), rtol=rtol, atol=rtol * 10)


@once
def test_init_on_a_uniform_subsample_and_progress_per_pass(tmp_path):
    X, *_ = make_blobs(seed=13, n=2000, k=2, d=2, separation=8.0)
    X = X.astype(DTYPE)
    passes = []
    result = jaxgmm.fit_stream(
        jax.random.key(1), X, 2, init_size=200, block_size=512, tol=1e-6, callback=passes.append
    )
    # One callback per pass; its log-likelihoods are the history's.
    assert len(passes) == int(result.n_iter) and [p.iteration for p in passes] == list(range(1, len(passes) + 1))
    np.testing.assert_allclose([p.log_likelihood[0] for p in passes], result.history[: len(passes)], rtol=1e-6)
    assert all(p.n_samples == len(X) for p in passes) and passes[-1].n_running == 0
    # The data are two far-apart clusters: from a 200-row sample the fit finds them as the full fit does.
    full = jaxgmm.fit(jax.random.key(1), X, 2, tol=1e-6)
    np.testing.assert_allclose(result.log_likelihood, full.log_likelihood, rtol=1e-4)
    # The sample is uniform without replacement over all rows, not the first ones.
    from jaxgmm.streaming import _init_sample, _scan, _Source

    src = _Source(np.arange(2000.0)[:, None])
    rows, weights = _init_sample(jax.random.key(0), src, _scan(src, 200), 200)
    assert len(np.unique(rows)) == 200 and rows.max() > 1500 and rows.min() < 500
    np.testing.assert_array_equal(weights, 1)


@once
def test_bad_sources_raise_clear_errors(tmp_path):
    X = np.random.default_rng(3).normal(size=(500, 2))
    bad = X.copy()
    bad[450, 1] = np.nan
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="block 3 of the source contains NaN"):
        jaxgmm.fit_stream(key, lambda: (bad[i : i + 150] for i in range(0, 500, 150)), 2)
    with pytest.raises(ValueError, match="block 1 of the source has 3 features"):
        jaxgmm.fit_stream(key, lambda: iter([X[:100], np.ones((10, 3))]), 2)
    with pytest.raises(ValueError, match="negative"):
        jaxgmm.fit_stream(key, X, 2, sample_weight=-np.ones(500))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(500,\)"):
        jaxgmm.fit_stream(key, X, 2, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="yield \\(X_block, weight_block\\) pairs"):
        jaxgmm.fit_stream(key, lambda: iter([X]), 2, sample_weight=np.ones(500))
    with pytest.raises(ValueError, match="at least 5 are needed"):
        jaxgmm.fit_stream(key, X[:4], 5)
    with pytest.raises(ValueError, match="no rows"):
        jaxgmm.fit_stream(key, lambda: iter([]), 2)
    with pytest.raises(TypeError, match="source must be"):
        jaxgmm.fit_stream(key, 3.0, 2)
    with pytest.raises(ValueError, match="block_size"):
        jaxgmm.fit_stream(key, X, 2, block_size=0)
    (tmp_path / "three.npy").write_bytes(b"")
    np.save(tmp_path / "three.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        jaxgmm.fit_stream(key, tmp_path / "three.npy", 2)
    # The caller's arrays are not modified.
    before = X.copy()
    jaxgmm.fit_stream(key, X, 2, max_iter=3)
    np.testing.assert_array_equal(X, before)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, jaxgmm

    def vm(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

    small, big, block = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = dict(covariance_type="diag", max_iter=3, tol=0.0, block_size=block, init="k-means++", init_size=2000)
    jaxgmm.fit_stream(jax.random.key(0), small, 2, **options)  # compile everything at these shapes
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident memory to the current one
    before = vm("VmRSS")
    jaxgmm.fit_stream(jax.random.key(0), big, 2, **options)
    print(vm("VmHWM") - before)
    """
)


@once
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_stays_bounded_for_a_file_many_blocks_long(tmp_path):
    rng = np.random.default_rng(4)
    block = 16384
    big = rng.normal(size=(2_000_000, 8)).astype(np.float32)  # 64 MB, 122 blocks
    np.save(tmp_path / "big.npy", big)
    np.save(tmp_path / "small.npy", big[:20000])
    file_bytes = big.nbytes
    del big
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "small.npy"), str(tmp_path / "big.npy"), str(block)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_ENABLE_X64": "0"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    growth = int(out.stdout.split()[-1])
    # Three passes over 64 MB (plus the validating and sampling passes) with a
    # 0.5 MB block: resident memory grows by far less than a quarter of the file.
    assert growth < file_bytes / 4, f"peak RSS grew by {growth / 1e6:.1f} MB for a {file_bytes / 1e6:.0f} MB file"


@once
def test_cli_fit_streams_a_npy_file_with_chunk_size(tmp_path, capsys):
    from jaxgmm import cli
    from jaxgmm.io import read_model

    X, *_ = make_blobs(seed=14, n=900, k=2, d=2, separation=6.0)
    np.save(tmp_path / "x.npy", X.astype(DTYPE))
    args = ["fit", str(tmp_path / "x.npy"), "-k", "2", "--tol", "1e-6", "--out", str(tmp_path / "m.npz"), "--quiet"]
    assert cli.main(args + ["--chunk-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "900 rows streamed" in out and "BIC" in out
    expected = jaxgmm.fit(jax.random.key(0), X.astype(DTYPE), 2, tol=1e-6)
    np.testing.assert_allclose(read_model(tmp_path / "m.npz").model.means, expected.params.means,
                               rtol=rtol_for(DTYPE, 1e-9, 1e-4), atol=1e-4)
    printed_bic = float(re.search(r"BIC: (\S+)", out).group(1))
    np.testing.assert_allclose(printed_bic, jaxgmm.bic(expected.params, jnp.asarray(X, DTYPE)), rtol=1e-5)
    assert cli.main(args + ["--chunk-size", "128", "--standardize"]) == 1
    assert "not available for streamed" in capsys.readouterr().err
