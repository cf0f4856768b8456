"""Data-parallel EM: 4 CPU devices and 2 processes on loopback give the single-device fit.

Device counts are fixed when JAX starts, so the multi-device and
multi-process runs happen in subprocesses; the reference fits run here, on
this process's single device.
"""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import jaxgmm
from conftest import X64, assert_reports_own_log_likelihood, make_blobs, rtol_for
from jaxgmm.distributed import data_mesh, fit_sharded

# float32 sums in another order move the log-likelihood by ~1e-7: with tol=0
# no convergence decision can flip and the runs do the same iterations.
OPTIONS = dict(n_init=2, tol=1e-7, max_iter=80) if X64 else dict(n_init=2, tol=0.0, max_iter=25)
KEY = 5
SHARDED_TYPES = jaxgmm.COVARIANCE_TYPES + ("VEV",)  # and one of mclust's iterative models
FIELDS = ("weights", "means", "covariances")


def blobs_with_weights():
    X, *_ = make_blobs(seed=21, n=1203, k=3, d=3, separation=4.0)  # not a multiple of 4: padding
    w = np.random.default_rng(22).uniform(0.2, 2.0, size=len(X))
    return X, w


def flatten(result, prefix):
    """The restarts' arrays of a FitResult as a flat dict of numpy arrays."""
    out = {f"{prefix}/{f}": np.asarray(getattr(result.restarts.params, f)) for f in FIELDS}
    out[f"{prefix}/log_likelihood"] = np.asarray(result.restarts.log_likelihood)
    out[f"{prefix}/n_iter"] = np.asarray(result.restarts.n_iter)
    return out


def assert_matches(saved, prefix, expected, rtol):
    for f in FIELDS:
        np.testing.assert_allclose(saved[f"{prefix}/{f}"], getattr(expected.restarts.params, f), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(saved[f"{prefix}/log_likelihood"], expected.restarts.log_likelihood, rtol=rtol)
    np.testing.assert_array_equal(saved[f"{prefix}/n_iter"], expected.restarts.n_iter)
    assert_reports_own_log_likelihood(expected, *blobs_with_weights())  # and so, by the above, does the sharded fit


def run_python(script, *args, env_extra=None, timeout=240):
    env = {**os.environ, "JAX_ENABLE_X64": "1" if X64 else "0", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=os.path.dirname(__file__),
    )


def wait_all(processes, timeout):
    """Wait for every process; kill them all if any runs past ``timeout`` seconds."""
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
        for p in processes:
            p.communicate()
        pytest.fail(f"subprocesses did not finish within {timeout} s")
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-4000:]
    return outputs


COMMON = textwrap.dedent(
    """
    import sys
    import jax, numpy as np, jaxgmm
    from jaxgmm.distributed import data_mesh, fit_sharded
    from test_distributed import flatten, OPTIONS, KEY, SHARDED_TYPES
    data = np.load(sys.argv[1])
    X, w = data["X"], data["w"]
    """
)

FOUR_DEVICES = COMMON + textwrap.dedent(
    """
    assert len(jax.devices()) == 4, jax.devices()
    out = {}
    for cov in SHARDED_TYPES:
        result = fit_sharded(jax.random.key(KEY), X, 3, sample_weight=w, covariance_type=cov, mesh=data_mesh(), **OPTIONS)
        out.update(flatten(result, cov))
    # Restarts spread over a second mesh axis: 2 restart groups x 2 data shards.
    mesh = data_mesh(restart_devices=2)
    out.update(flatten(fit_sharded(jax.random.key(KEY), X, 3, sample_weight=w, mesh=mesh, **OPTIONS), "restarts"))
    np.savez(sys.argv[2], **out)
    """
)

TWO_PROCESSES = COMMON + textwrap.dedent(
    """
    pid, port, split = int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid, initialization_timeout=60
    )
    mine = slice(0, split) if pid == 0 else slice(split, None)
    out = {}
    result = fit_sharded(jax.random.key(KEY), X[mine], 3, sample_weight=w[mine], covariance_type="full", **OPTIONS)
    out.update(flatten(result, "full"))
    np.savez(sys.argv[2], **out)
    jax.distributed.shutdown()
    """
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Start the 4-device run and the two loopback processes at once; tests wait for them."""
    tmp = tmp_path_factory.mktemp("distributed")
    X, w = blobs_with_weights()
    np.savez(tmp / "data.npz", X=X, w=w)
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    four = run_python(FOUR_DEVICES, tmp / "data.npz", tmp / "four.npz", env_extra={"XLA_FLAGS": flags})
    port, split = free_port(), 650  # unequal shares: process 1 gets padded
    # The two-process run (the slowest) in the float64 pass only, where the comparison is strictest.
    pair = [run_python(TWO_PROCESSES, tmp / "data.npz", tmp / f"proc{pid}.npz", pid, port, split)
            for pid in (0, 1)] if X64 else []
    yield tmp, four, pair
    for p in [four, *pair]:  # a test that failed early leaves nothing running
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_four_devices_equal_one_device(launched):
    tmp, four, _ = launched
    X, w = blobs_with_weights()
    rtol = rtol_for(float64=1e-9, float32=2e-4)
    expected = {
        cov: jaxgmm.fit(jax.random.key(KEY), X, 3, sample_weight=w, covariance_type=cov, **OPTIONS)
        for cov in SHARDED_TYPES
    }
    # The same driver on this process's single device gives the same fit.
    one = fit_sharded(jax.random.key(KEY), X, 3, sample_weight=w, mesh=data_mesh(), **OPTIONS)
    assert_matches(flatten(one, "full"), "full", expected["full"], rtol)
    wait_all([four], timeout=300)
    saved = np.load(tmp / "four.npz")
    for cov in SHARDED_TYPES:
        assert_matches(saved, cov, expected[cov], rtol)
    assert_matches(saved, "restarts", expected["full"], rtol)


@pytest.mark.x64
def test_two_processes_on_loopback_equal_one_process(launched):
    tmp, _, pair = launched
    X, w = blobs_with_weights()
    expected = jaxgmm.fit(jax.random.key(KEY), X, 3, sample_weight=w, covariance_type="full", **OPTIONS)
    wait_all(pair, timeout=300)
    for pid in (0, 1):
        assert_matches(np.load(tmp / f"proc{pid}.npz"), "full", expected, rtol_for(float64=1e-9, float32=2e-4))


def test_bad_mesh_and_options_raise():
    X, w = blobs_with_weights()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="restart_devices=3 does not divide"):
        data_mesh(jax.devices()[:1] * 2, restart_devices=3)
    with pytest.raises(ValueError, match="mesh must have the axes"):
        fit_sharded(key, X, 3, mesh=jax.sharding.Mesh(np.array(jax.devices()[:1]), ("rows",)))
    with pytest.raises(ValueError, match="negative|>= 0"):
        fit_sharded(key, X, 3, sample_weight=-w)
    with pytest.raises(ValueError, match="at least 5 are needed"):
        fit_sharded(key, X[:4], 5)
    with pytest.raises(ValueError, match="NaN"):
        fit_sharded(key, np.full((10, 2), np.nan), 2)
