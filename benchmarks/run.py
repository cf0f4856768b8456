#!/usr/bin/env python3
"""Benchmark jaxgmm against scikit-learn and gmmx on identical data and initial parameters.

    python benchmarks/run.py                 # all cases, writes BENCHMARKS.md and benchmarks/results.{json,png}
    python benchmarks/run.py --cases mid     # a subset
    python benchmarks/run.py --smoke         # tiny sizes, for the test suite (writes nothing unless --out)
    python benchmarks/run.py --accelerator   # where JAX sees a GPU: its own section (benchmarks/accelerator.sh)

The driver generates each case's data and initial parameters once (numpy,
fixed seeds, a known mixture) and writes them to a temporary ``.npz``. Every
library's measurement runs in a process of its own with a time limit, so a
peer that crashes, hangs or returns NaN is reported as such and cannot take
the run down. The processes set up first (one at a time: imports, data, a
first call that compiles), then their timed repetitions **alternate** in the
same time window, several rounds, each round starting with the next library:
on a shared machine two timings are comparable only when taken side by side.
A repetition's time per EM iteration is the difference of runs with ``iters``
and with 1 iteration (``tol = 0``, so every library does the same iterations;
set-up and the final E-step cancel), for every library alike. The report
gives medians over the rounds with their range, and each speedup as the
median of the ratios within a round. It also gives the first call (with
compilation), a fresh process (import + compile + fit, with and without the
persistent compilation cache), the final mean log-likelihoods and peak
resident memory. The driver measures numpy's float32 matrix-product rate in
the same run and reports GFLOP/s on the basis of ``4·N·K·D²`` flops per
full-covariance iteration, ratios, and the largest log-likelihood difference
between libraries, so a fast wrong answer shows.

OpenBLAS: this machine's environment may set OPENBLAS_CORETYPE/L2_SIZE for old
OpenBLAS builds; they slow a current numpy (and so scikit-learn). Run the
benchmark with both unset (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``)
for a fair comparison; the report records what was set.
"""

import argparse
import json
import os
import platform
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# name: N, D, K, iterations, covariance types, libraries; rounds of interleaved repetitions (default
# DEFAULT_ROUNDS); fresh_process: also time new processes that import jaxgmm and fit.
CASES = {
    "teach": dict(n=1_000, d=2, k=3, iters=100, types=["full"], libs=["jaxgmm", "jaxgmm-fast", "sklearn", "gmmx"],
                  rounds=7, fresh_process=True),
    "mid": dict(n=100_000, d=16, k=16, iters=20, types=["full", "tied", "diag", "spherical"],
                libs=["jaxgmm", "jaxgmm-fast", "sklearn", "gmmx"]),
    "wide": dict(n=50_000, d=64, k=32, iters=5, types=["full"], libs=["jaxgmm", "jaxgmm-fast", "sklearn", "gmmx"],
                 rounds=3),
    "big": dict(n=10_000_000, d=16, k=16, iters=5, types=["full"], libs=["jaxgmm", "jaxgmm-fast"], rounds=2),
    "float64": dict(n=100_000, d=16, k=16, iters=20, types=["full"],
                    libs=["jaxgmm", "jaxgmm-fast", "sklearn", "gmmx"], x64=True),
    "restarts": dict(n=10_000, d=8, k=8, n_init=32, types=["full"], libs=["jaxgmm", "sklearn"], rounds=3),
    "many": dict(n=300, d=2, k=3, n_sets=1_000, types=["full"], libs=["jaxgmm", "sklearn"], rounds=3),
}
SMOKE = {
    "teach": dict(n=200, d=2, k=3, iters=5, types=["full", "diag"], libs=["jaxgmm", "jaxgmm-fast", "sklearn", "gmmx"],
                  rounds=2, fresh_process=True),
    "restarts": dict(n=300, d=2, k=2, n_init=3, types=["full"], libs=["jaxgmm", "sklearn"], rounds=2),
    "many": dict(n=50, d=2, k=2, n_sets=4, types=["full"], libs=["jaxgmm", "sklearn"], rounds=2),
}
DEFAULT_ROUNDS = 5
GMMX_TYPES = ("full", "diag")
TIME_LIMIT = {"big": 900, "wide": 400}
PEER_TIME_LIMIT = {"wide": 180}  # gmmx did not finish this case in the measurements
DEFAULT_TIME_LIMIT = 300


# ----------------------------------------------------------------------------- data

def make_mixture_data(seed, n, d, k, dtype=np.float32):
    """Samples of a known, moderately overlapping mixture (numpy only)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, d)) * 3.0
    A = rng.normal(size=(k, d, d)) * (0.5 / np.sqrt(d)) + np.eye(d)
    weights = rng.dirichlet(np.full(k, 5.0))
    labels = rng.choice(k, size=n, p=weights)
    X = np.empty((n, d), dtype)
    for start in range(0, n, 1_000_000):  # bounded memory for the 10M-row case
        sl = slice(start, min(n, start + 1_000_000))
        z = labels[sl]
        X[sl] = means[z] + np.einsum("nde,ne->nd", A[z], rng.normal(size=(len(z), d)))
    return X


def initial_params(X, k, covariance_type, seed):
    """Identical starting point for every library: K data points as means, the data's variance."""
    rng = np.random.default_rng(seed + 1)
    means = X[rng.choice(len(X), k, replace=False)].astype(np.float64)
    var = X[: 100_000].astype(np.float64).var(axis=0)
    d = X.shape[1]
    cov = {
        "full": np.broadcast_to(np.diag(var), (k, d, d)).copy(),
        "tied": np.diag(var),
        "diag": np.broadcast_to(var, (k, d)).copy(),
        "spherical": np.full(k, var.mean()),
    }[covariance_type]
    return np.full(k, 1.0 / k), means, cov


def responsibilities(X, weights, means, covariances):
    """The E-step of full-covariance parameters, in float64 numpy: a start shared by workers that begin from
    responsibilities (benchmarks/models.py, benchmarks/bayesian.py)."""
    X = X.astype(np.float64)
    logs = np.empty((len(X), len(weights)))
    for k, (w, mu, S) in enumerate(zip(weights, means, covariances)):
        L = np.linalg.cholesky(S)
        y = np.linalg.solve(L, (X - mu).T)
        logs[:, k] = np.log(w) - 0.5 * np.sum(y * y, axis=0) - np.log(np.diag(L)).sum() \
            - 0.5 * X.shape[1] * np.log(2 * np.pi)
    logs -= logs.max(axis=1, keepdims=True)
    z = np.exp(logs)
    return z / z.sum(axis=1, keepdims=True)


def precisions_from(cov, covariance_type):
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(cov)
    return 1.0 / cov


# ----------------------------------------------------------------------------- workers
#
# Each library's measurement runs in a process of its own (a crash, hang or NaN is reported, not
# fatal). The process sets up (imports, data, a first call that compiles) and then serves timed
# repetitions on request, so the driver can alternate the libraries' repetitions in the same time
# window: on a shared machine a ratio is only as good as the two timings taken side by side.

class Session(NamedTuple):
    """A worker's measurement: ``info`` after set-up, one timed repetition per ``rep()`` call
    (``ms_per_iter`` or ``total_s``, and ``log_likelihood``), and ``final()`` once at the end."""

    info: dict
    rep: Callable[[], dict]
    final: Callable[[], dict] = dict


def peak_rss_mb():
    """This process's peak resident memory. VmHWM, not ru_maxrss: the latter survives exec, so a
    worker would report the driver's peak (the driver holds the 10M-row case's data)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t, out = timed(fn)
        times.append(t)
    return min(times), out


def per_iteration(run, iters):
    """One repetition of a fixed-iteration case: ms per iteration as the difference of runs with
    ``iters`` and 1 iterations (every library's fixed costs — set-up, initial and final E-steps —
    cancel), and the output of the long run."""
    t_all, out = timed(lambda: run(iters))
    t_one, _ = timed(lambda: run(1))
    return 1000 * (t_all - t_one) / (iters - 1), out


def worker_jaxgmm(spec, data, fast=False):
    import jax

    if spec.get("x64"):
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxgmm
    from jaxgmm.em import em_loop

    if spec["kind"] in ("restarts", "many"):
        X = data["X"]
        if spec["kind"] == "restarts":
            fit = lambda: jaxgmm.fit(jax.random.key(0), X, spec["k"], n_init=spec["n_init"], init="k-means++")  # noqa
        else:
            fit = lambda: jaxgmm.fit_many(jax.random.key(0), X, spec["k"])  # noqa
        first_s, r = timed(fit)
        info = dict(first_s=first_s)
        if spec["kind"] == "many":  # each data set's result must equal fitting it alone (spot-check 8)
            keys = jax.random.split(jax.random.key(0), X.shape[0])
            info["max_diff_vs_alone"] = max(
                float(np.max(np.abs(np.asarray(jaxgmm.fit(keys[b], X[b], spec["k"]).params.means)
                                    - np.asarray(r.params.means[b]))))
                for b in np.linspace(0, X.shape[0] - 1, 8).astype(int))

        def rep():
            total_s, r = timed(fit)
            return dict(total_s=total_s, log_likelihood=float(np.mean(np.asarray(r.log_likelihood))))

        return Session(info, rep)

    X = jnp.asarray(data["X"])
    dtype = X.dtype
    if spec.get("missing"):  # NaN = missing values (benchmarks/missing.py): laid out once, as em_loop would
        X = jaxgmm.incomplete.layout(data["X"], None, spec["covariance_type"])
    if "z" in data:  # start from responsibilities, as mclust's me() does (benchmarks/models.py)
        from jaxgmm.init import params_from_responsibilities

        params = params_from_responsibilities(X, jnp.asarray(data["z"], dtype), spec["covariance_type"],
                                              reg_covar=spec.get("reg_covar", 1e-6))
    else:
        params = jaxgmm.GMMParams(
            jnp.asarray(data["weights"], dtype), jnp.asarray(data["means"], dtype),
            jnp.asarray(data["covariances"], dtype), spec["covariance_type"],
        )
    iters, reg_covar = spec["iters"], spec.get("reg_covar", 1e-6)
    # MAP-EM with mclust's default prior (benchmarks/bayesian.py)
    prior = jaxgmm.default_prior(data["X"], spec["k"], spec["covariance_type"]) if spec.get("prior") else None

    def run(n):
        return jax.block_until_ready(em_loop(params, X, max_iter=n, tol=0.0, reg_covar=reg_covar, fast=fast,
                                             prior=prior))

    first_s, _ = timed(lambda: run(iters))
    run(1)  # compiles the one-iteration program
    compiles = em_loop._cache_size()

    def rep():
        ms, r = per_iteration(run, iters)
        # The last E-step's value, as scikit-learn's lower_bound_ and gmmx report it.
        return dict(ms_per_iter=ms, log_likelihood=float(r.history[iters - 1]), n_iter=int(r.n_iter))

    def final():
        out = dict(recompiles=em_loop._cache_size() - compiles)
        if "X_test" in data:  # held-out complete rows (benchmarks/missing.py)
            out["test_log_likelihood"] = float(jaxgmm.score(run(iters).params, jnp.asarray(data["X_test"], dtype)))
        return out

    return Session(dict(first_s=first_s), rep, final)


def worker_jaxgmm_vb(spec, data):
    """Variational Bayes (jaxgmm.vb_loop) from the responsibilities ``data["resp"]``, scikit-learn's prior."""
    import jax
    import jax.numpy as jnp

    import jaxgmm
    from jaxgmm.vb import vb_posterior_from_responsibilities

    X = jnp.asarray(data["X"])
    cov_type = spec["covariance_type"]
    prior = jaxgmm.bayesian_mixture_prior(X, spec["k"], cov_type)
    start = vb_posterior_from_responsibilities(X, jnp.asarray(data["resp"], X.dtype), prior, covariance_type=cov_type)

    def run(n):
        return jax.block_until_ready(jaxgmm.vb_loop(start, X, prior, max_iter=n, tol=0.0))

    first_s, _ = timed(lambda: run(spec["iters"]))
    run(1)

    def rep():
        ms, r = per_iteration(run, spec["iters"])
        # log_likelihood: what VB maximises, its lower bound, per row (for the row's status and comparison)
        return dict(ms_per_iter=ms, log_likelihood=float(r.lower_bound) / X.shape[0], n_iter=int(r.n_iter))

    return Session(dict(first_s=first_s), rep)


def worker_sklearn_bgm(spec, data):
    """scikit-learn's BayesianGaussianMixture from the same responsibilities (its ``_initialize``)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    warnings.simplefilter("ignore", ConvergenceWarning)

    class FromResponsibilities(BayesianGaussianMixture):
        def _initialize_parameters(self, X, random_state, xp=None):
            self._initialize(X, data["resp"].astype(X.dtype))

    def run(max_iter):
        return FromResponsibilities(n_components=spec["k"], covariance_type=spec["covariance_type"],
                                    max_iter=max_iter, tol=0.0, random_state=0).fit(data["X"])

    first_s, _ = timed(lambda: run(spec["iters"]))

    def rep():
        ms, bgm = per_iteration(run, spec["iters"])
        return dict(ms_per_iter=ms, log_likelihood=float(bgm.lower_bound_) / len(data["X"]), n_iter=int(bgm.n_iter_))

    return Session(dict(first_s=first_s), rep)


def worker_imputer(spec, data):
    """The nearest user alternative to EM with missing values: scikit-learn's IterativeImputer, then its
    GaussianMixture from the same initial parameters (``iters`` iterations); each repetition times both."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer
    from sklearn.mixture import GaussianMixture

    warnings.simplefilter("ignore", ConvergenceWarning)
    cov_type = spec["covariance_type"]

    def fit():
        completed = IterativeImputer(random_state=0, max_iter=spec.get("imputer_iters", 10)).fit_transform(data["X"])
        return GaussianMixture(
            len(data["weights"]), covariance_type=cov_type, max_iter=spec["iters"], tol=0.0, reg_covar=1e-6,
            random_state=0, weights_init=data["weights"], means_init=data["means"],
            precisions_init=precisions_from(data["covariances"], cov_type)).fit(completed)

    def rep():
        total_s, gm = timed(fit)
        return dict(total_s=total_s, log_likelihood=float(gm.score(data["X_test"])))

    return Session({}, rep)


def worker_sklearn(spec, data):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    warnings.simplefilter("ignore", ConvergenceWarning)
    X = data["X"]
    if spec["kind"] == "restarts":
        def rep():
            gm = GaussianMixture(spec["k"], n_init=spec["n_init"], init_params="k-means++", random_state=0)
            total_s, gm = timed(lambda: gm.fit(X))
            return dict(total_s=total_s, log_likelihood=float(gm.lower_bound_))

        return Session({}, rep)
    if spec["kind"] == "many":
        def rep():
            total_s, lls = timed(lambda: [GaussianMixture(spec["k"], random_state=0).fit(x).lower_bound_ for x in X])
            return dict(total_s=total_s, log_likelihood=float(np.mean(lls)))

        return Session({}, rep)
    cov_type = spec["covariance_type"]

    def run(max_iter):
        gm = GaussianMixture(
            len(data["weights"]), covariance_type=cov_type, max_iter=max_iter, tol=0.0, reg_covar=1e-6,
            init_params="random_from_data", random_state=0, weights_init=data["weights"],
            means_init=data["means"], precisions_init=precisions_from(data["covariances"], cov_type),
        )
        return gm.fit(X)

    first_s, _ = timed(lambda: run(spec["iters"]))

    def rep():
        ms, gm = per_iteration(run, spec["iters"])
        return dict(ms_per_iter=ms, log_likelihood=float(gm.lower_bound_), n_iter=int(gm.n_iter_))

    return Session(dict(first_s=first_s), rep)


def worker_gmmx(spec, data):
    import jax

    if spec.get("x64"):
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from gmmx import EMFitter, GaussianMixtureModelJax

    X = jnp.asarray(data["X"])
    gmm = GaussianMixtureModelJax.from_squeezed(
        means=jnp.asarray(data["means"], X.dtype), covariances=jnp.asarray(data["covariances"], X.dtype),
        weights=jnp.asarray(data["weights"], X.dtype), covariance_type=spec["covariance_type"],
    )
    fits = {n: jax.jit(EMFitter(max_iter=n, tol=0.0, reg_covar=1e-6).fit) for n in (1, spec["iters"])}

    def run(n):
        return jax.block_until_ready(fits[n](X, gmm))

    first_s, _ = timed(lambda: run(spec["iters"]))
    run(1)

    def rep():
        ms, r = per_iteration(run, spec["iters"])
        return dict(ms_per_iter=ms, log_likelihood=float(r.log_likelihood), n_iter=int(r.n_iter))

    return Session(dict(first_s=first_s), rep)


def worker_mclust(spec, data):
    """R's mclust ``me()`` from the same responsibilities (``benchmarks/mclust_me.R``), in float64; each
    repetition is one Rscript run, which times its own iterations."""
    n, d = data["X"].shape
    folder = tempfile.TemporaryDirectory()
    paths = [Path(folder.name) / "X.bin", Path(folder.name) / "z.bin"]
    for path, a in zip(paths, (data["X"], data["z"])):
        np.ascontiguousarray(a, np.float64).tofile(path)

    def rep():
        proc = subprocess.run(
            ["Rscript", str(ROOT / "benchmarks" / "mclust_me.R"), *map(str, paths), str(n), str(d),
             str(data["z"].shape[1]), spec["covariance_type"], str(spec.get("r_iters", spec["iters"]))],
            capture_output=True, text=True, check=True,
        )
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
        return json.loads(line[len("RESULT "):])

    return Session({}, rep, lambda: folder.cleanup() or {})


def worker_matmul(spec, data):
    """JAX's float32 matrix-product rate (full precision) on its default device, and the device's name."""
    import jax
    import jax.numpy as jnp

    n = spec["n"]
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    product = jax.jit(lambda a: jnp.matmul(a, a, precision="highest"))
    jax.block_until_ready(product(a))
    device = jax.devices()[0]

    def rep():
        t, _ = best_of(lambda: jax.block_until_ready(product(a)), 10)
        return dict(gflops=2 * n**3 / t / 1e9, log_likelihood=0.0)

    return Session(dict(device=f"{device.platform.upper()} {device.device_kind}"), rep)


WORKERS = {
    "matmul": worker_matmul,
    "jaxgmm": worker_jaxgmm,
    "jaxgmm-fast": lambda spec, data: worker_jaxgmm(spec, data, fast=True),
    "sklearn": worker_sklearn,
    "gmmx": worker_gmmx,
    "mclust": worker_mclust,
    "imputer": worker_imputer,
    "jaxgmm-vb": worker_jaxgmm_vb,
    "sklearn-bgm": worker_sklearn_bgm,
}


def serve(lib, spec_json, data_path):
    """The worker process: set up, print ``READY``, then answer ``rep`` with ``REP`` and ``done`` with ``FINAL``."""
    spec = json.loads(spec_json)
    data = {}
    if data_path != "None":  # the matmul worker needs none
        with np.load(data_path) as f:
            data = {k: f[k] for k in f.files}
    session = WORKERS[lib](spec, data)
    print("READY " + json.dumps(session.info), flush=True)
    for line in sys.stdin:
        if line.strip() == "rep":
            print("REP " + json.dumps(session.rep()), flush=True)
        else:
            print("FINAL " + json.dumps(dict(session.final(), peak_rss_mb=peak_rss_mb())), flush=True)
            return


def fresh_process(spec_json, data_path):
    """``--fresh``: what a user's new process pays: import jaxgmm, read the data, fit, exit."""
    t0 = time.perf_counter()
    import jax

    import jaxgmm

    if os.environ.get("JAXGMM_CACHE_DIR"):
        jaxgmm.enable_compilation_cache()
    spec = json.loads(spec_json)
    with np.load(data_path) as f:
        X, w, mu, cov = (f[k] for k in ("X", "weights", "means", "covariances"))
    params = jaxgmm.GMMParams.from_arrays(w, mu, cov, spec["covariance_type"])
    params = jax.tree.map(lambda a: a.astype(X.dtype), params)
    r = jaxgmm.em_loop(params, X, max_iter=spec["iters"], tol=0.0)
    print("RESULT " + json.dumps(dict(log_likelihood=float(r.log_likelihood), in_process_s=time.perf_counter() - t0)))


# ----------------------------------------------------------------------------- driver

def strip_suite_compile_shortcuts(env):
    """Remove the test runner's cheaper-compile settings (dev.py) so they cannot reach measured workers."""
    env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
    added = env.pop("JAXGMM_SUITE_XLA_FLAGS", "").split()
    flags = [flag for flag in env.get("XLA_FLAGS", "").split() if flag not in added]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    else:
        env.pop("XLA_FLAGS", None)


def _worker_env(spec, extra=None):
    env = dict(os.environ)
    env["JAX_ENABLE_X64"] = "1" if spec.get("x64") else "0"  # never inherited from the caller
    env.update(extra or {})
    return env


class WorkerFailed(Exception):
    """A worker crashed, timed out or answered badly; the message is the row's status."""


class Worker:
    """One library's serving process, talked to line by line with a time limit on every answer."""

    def __init__(self, lib, spec, data_path, time_limit):
        self.lib, self.time_limit, self.started = lib, time_limit, time.perf_counter()
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", lib, json.dumps(spec), str(data_path)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=_worker_env(spec),
        )
        self.lines = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(ln) for ln in self.proc.stdout] + [self.lines.put(None)],
                         daemon=True).start()

    def expect(self, tag) -> dict:
        deadline = time.perf_counter() + self.time_limit
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                self.kill()
                raise WorkerFailed(f"timeout (> {self.time_limit} s)") from None
            if line is None:
                self.proc.wait()
                self.stderr.seek(0)
                last = (self.stderr.read().strip().splitlines() or ["no output"])[-1]
                raise WorkerFailed(f"crashed (exit {self.proc.returncode}): {last[:120]}")
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])

    def ask(self, command, tag) -> dict:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died: expect() reports how
        return self.expect(tag)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def _median_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    return float(np.median(values)), float(np.min(values)), float(np.max(values))


def run_interleaved(libs, spec, data_path, time_limits, rounds, label="", log=print):
    """Every library's repetitions on ``spec``, alternated in ``rounds`` rounds; see :func:`interleave`."""
    return interleave({lib: (lib, spec) for lib in libs}, data_path, time_limits, rounds, label=label, log=log)


def interleave(jobs, data_path, time_limits, rounds, label="", log=print):
    """Timed repetitions of several workers, alternated in ``rounds`` rounds (each round starts one later).

    ``jobs`` maps a name to ``(library, spec)``, or ``(library, spec, data_path)`` for a job with data of its
    own; ``time_limits`` maps the names to seconds. Returns
    ``{name: result}``: the median of the measured value (``ms_per_iter`` or ``total_s``) with its minimum
    and maximum over the rounds (``…_min``, ``…_max``), every repetition (``reps``), the set-up's ``info``
    (``first_s`` includes compilation), ``final`` and ``status``.
    """
    libs = list(jobs)
    workers, results = {}, {}
    for lib in libs:  # set up one at a time: first calls compile without competing
        try:
            library, spec, *own_data = jobs[lib]
            workers[lib] = Worker(library, spec, own_data[0] if own_data else data_path, time_limits[lib])
            results[lib] = dict(workers[lib].expect("READY"), reps=[])
        except WorkerFailed as failure:
            results[lib] = {"status": str(failure)}
            workers.pop(lib, None)
    for r in range(rounds):
        alive = [lib for lib in libs if lib in workers]
        for lib in alive[r % max(1, len(alive)):] + alive[: r % max(1, len(alive))]:
            try:
                results[lib]["reps"].append(workers[lib].ask("rep", "REP"))
            except WorkerFailed as failure:
                results[lib] = {"status": str(failure)}
                del workers[lib]
    for lib, worker in workers.items():
        try:
            results[lib].update(worker.ask("done", "FINAL"))
        except WorkerFailed:
            pass
        worker.kill()
        results[lib]["process_s"] = time.perf_counter() - worker.started
    for lib, res in results.items():
        reps = res.get("reps")
        if not reps:
            continue
        for key in ("ms_per_iter", "total_s", "gflops"):
            if key in reps[0]:
                res[key], res[key + "_min"], res[key + "_max"] = _median_spread([rep.get(key) for rep in reps])
        res["rounds"] = len(reps)
        for key, value in reps[-1].items():
            res.setdefault(key, value)
        ll = res.get("log_likelihood")
        res["status"] = "ok" if ll is not None and np.isfinite(ll) else "NaN result"
    for lib, res in results.items():
        log(f"{label:16s} {lib:8s} {res['status']}: "
            + ", ".join(f"{k}={v:.4g}" for k, v in res.items() if isinstance(v, float)))
    return results


def run_worker(lib, spec, data_path, time_limit, repeats=None):
    """One library alone: ``repeats`` repetitions (default ``spec['repeats']`` or 3), median and spread."""
    repeats = repeats or spec.get("repeats", 3)
    return interleave({lib: (lib, spec)}, data_path, {lib: time_limit}, repeats, log=lambda *_: None)[lib]


def paired_ratio(a, b, key="ms_per_iter"):
    """Median and range of ``a/b`` over the rounds of an interleaved measurement (repetitions taken side
    by side); ``(None, None, None)`` unless both ran."""
    if a.get("status") != "ok" or b.get("status") != "ok":
        return None, None, None
    return _median_spread([x[key] / y[key] for x, y in zip(a["reps"], b["reps"]) if x.get(key) and y.get(key)])


def fresh_process_seconds(spec, data_path, cache_dir=None, time_limit=DEFAULT_TIME_LIMIT):
    """Wall time of a new Python process that imports jaxgmm and fits (``--fresh``); with ``cache_dir``, the
    second of two such processes sharing a persistent compilation cache (the first one fills it)."""
    extra = {} if cache_dir is None else {"JAXGMM_CACHE_DIR": str(cache_dir)}
    cmd = [sys.executable, __file__, "--fresh", json.dumps(spec), str(data_path)]
    for _ in range(1 if cache_dir is None else 2):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=time_limit, env=_worker_env(spec, extra))
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            return None
    return seconds


def matmul_gflops(n=4000, repeats=3):
    a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    t, _ = best_of(lambda: a @ a, repeats)
    return 2 * n**3 / t / 1e9


def machine_info():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("jaxgmm", "jax", "jaxlib", "numpy", "scikit-learn", "gmmx"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "not installed"
    if versions["jaxgmm"] == "not installed":  # run from a checkout on PYTHONPATH
        init = (ROOT / "jaxgmm" / "__init__.py").read_text()
        versions["jaxgmm"] = init.split('__version__ = "', 1)[1].split('"', 1)[0] + " (checkout)"
    blas_env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(), system=platform.platform(),
                versions=versions, blas_env=blas_env or "unset")


def case_specs(name, cfg):
    """The measurements of one case: (label, spec, arrays)."""
    seed = sum(map(ord, name))  # stable across runs, unlike hash()
    dtype = np.float64 if cfg.get("x64") else np.float32
    if name == "restarts":
        X = make_mixture_data(seed, cfg["n"], cfg["d"], cfg["k"], dtype)
        return [(name, dict(kind="restarts", k=cfg["k"], n_init=cfg["n_init"], n=cfg["n"], d=cfg["d"]), {"X": X})]
    if name == "many":
        X = np.stack([make_mixture_data(seed + i, cfg["n"], cfg["d"], cfg["k"], dtype) for i in range(cfg["n_sets"])])
        return [(name, dict(kind="many", k=cfg["k"], n=cfg["n"], d=cfg["d"], n_sets=cfg["n_sets"]), {"X": X})]
    X = make_mixture_data(seed, cfg["n"], cfg["d"], cfg["k"], dtype)
    out = []
    for cov_type in cfg["types"]:
        w, mu, cov = initial_params(X, cfg["k"], cov_type, seed)
        spec = dict(kind="iterations", n=cfg["n"], d=cfg["d"], k=cfg["k"], iters=cfg["iters"],
                    covariance_type=cov_type, x64=bool(cfg.get("x64")))
        label = name if len(cfg["types"]) == 1 else f"{name} {cov_type}"
        out.append((label, spec, {"X": X, "weights": w, "means": mu, "covariances": cov}))
    return out


def run_cases(cases, tmpdir, log=print, partial=None):
    """Measure every case, its libraries interleaved; with ``partial`` (a path) the rows so far are saved
    after each case."""
    rows = []
    for name, cfg in cases.items():
        for label, spec, arrays in case_specs(name, cfg):
            path = Path(tmpdir) / f"{label.replace(' ', '_')}.npz"
            np.savez(path, **arrays)
            row = dict(case=label, spec=spec, rounds=cfg.get("rounds", DEFAULT_ROUNDS), results={})
            libs = [lib for lib in cfg["libs"] if lib != "gmmx" or spec.get("covariance_type", "full") in GMMX_TYPES]
            limits = {lib: TIME_LIMIT.get(name, DEFAULT_TIME_LIMIT) if lib.startswith("jaxgmm")
                      else PEER_TIME_LIMIT.get(name, TIME_LIMIT.get(name, DEFAULT_TIME_LIMIT)) for lib in libs}
            row["results"] = {lib: {"status": "not supported"} for lib in cfg["libs"] if lib not in libs}
            row["results"].update(run_interleaved(libs, spec, path, limits, row["rounds"], label=label, log=log))
            if cfg.get("fresh_process") and "jaxgmm" in libs:
                # What a new process pays to import jaxgmm and fit, without and with the persistent cache.
                row["fresh_process_s"] = fresh_process_seconds(spec, path)
                row["fresh_process_cached_s"] = fresh_process_seconds(spec, path, cache_dir=Path(tmpdir) / "cache")
            if name == "mid" and spec["covariance_type"] == "full":
                # float64 reference from the same start, for the float32 accuracy target.
                ref_spec = dict(spec, x64=True)
                np.savez(path, **{**arrays, "X": arrays["X"].astype(np.float64)})
                row["float64_reference"] = run_worker("jaxgmm", ref_spec, path, DEFAULT_TIME_LIMIT, repeats=1)
            path.unlink()
            rows.append(row)
            if partial:
                Path(partial).write_text(json.dumps(rows, indent=1, default=str))
    return rows


# ----------------------------------------------------------------------------- report

def _fmt(v, spec="{:.3g}"):
    return "—" if v is None else spec.format(v)


def summarise(rows, rate):
    """Derived numbers per row: speedups, GFLOP/s, % of matmul rate, log-likelihood differences."""
    for row in rows:
        spec, res = row["spec"], row["results"]
        ours = res.get("jaxgmm", {})
        lls = [r["log_likelihood"] for r in res.values() if r.get("status") == "ok"]
        row["max_ll_diff"] = (max(lls) - min(lls)) if len(lls) > 1 else None
        key = "ms_per_iter" if spec["kind"] == "iterations" else "total_s"
        fast = res.get("jaxgmm-fast", {})
        for lib, r in res.items():
            if lib.startswith("jaxgmm") or r.get("status") != "ok":
                continue
            for prefix, mine in (("", ours), ("fast_", fast)):
                if mine.get("status") == "ok":
                    ratio, low, high = paired_ratio(r, mine, key)
                    row[f"{prefix}speedup_vs_{lib}"] = ratio
                    row[f"{prefix}speedup_vs_{lib}_range"] = (low, high)
        for prefix, r in (("", ours), ("fast_", fast)):
            if spec["kind"] == "iterations" and r.get("status") == "ok":
                flops = 4 * spec["n"] * spec["k"] * spec["d"] ** 2
                row[prefix + "gflops"] = flops / (r["ms_per_iter"] / 1000) / 1e9
                row[prefix + "pct_of_matmul"] = 100 * row[prefix + "gflops"] / rate
                row[prefix + "ns_per_point_iter"] = 1e6 * r["ms_per_iter"] / spec["n"]
            ref = row.get("float64_reference")
            if ref and ref.get("status") == "ok" and r.get("status") == "ok":
                row[prefix + "rel_ll_err_vs_float64"] = (
                    abs(r["log_likelihood"] - ref["log_likelihood"]) / abs(ref["log_likelihood"]))
    return rows


def cell(r, key="ms_per_iter", spec="{:.3g}"):
    if not r:
        return "—"
    if r.get("status") != "ok":
        return r.get("status", "—")
    return _fmt(r.get(key), spec)


def spread(r, key="ms_per_iter", spec="{:.3g}"):
    """A median with its range over the rounds: ``38.2 (36.9–41.0)``."""
    if not r or r.get("status") != "ok" or r.get(key + "_min") is None:
        return cell(r, key, spec)
    return f"{_fmt(r[key], spec)} ({_fmt(r[key + '_min'], spec)}–{_fmt(r[key + '_max'], spec)})"


def ratio(row, key):
    """A paired ratio with its range: ``8.7× (8.1–9.3)``."""
    if row.get(key) is None:
        return "—"
    low, high = row.get(key + "_range", (None, None))
    return f"{row[key]:.1f}× ({_fmt(low, '{:.1f}')}–{_fmt(high, '{:.1f}')})"


def markdown(rows, rate, info, title):
    lines = [f"## {title}", ""]
    lines.append(f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}; "
                 + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
                 + f". OpenBLAS environment: {info['blas_env']}."
                 + (f" Accelerator: {info['accelerator']} (jaxgmm and gmmx run on it)." if "accelerator" in info else ""))
    source = info.get("rate_source", "numpy float32 matrix product (4000², this CPU)")
    lines.append(f"{source}, same run: **{rate:.0f} GFLOP/s**.")
    lines.append("")
    lines.append("### Fixed iterations (`tol = 0`), identical data and initial parameters")
    lines.append("")
    lines.append("Every library runs in a process of its own, and their repetitions alternate in the same time "
                 "window: each round times every library once, each round starting with the next library. A "
                 "repetition's time per iteration is the difference of runs with `iters` and with 1 iteration "
                 "(fixed costs cancel), for every library alike. Times are medians over the rounds with the "
                 "range in parentheses; a ratio is the median of the ratios within each round (range in "
                 "parentheses). GFLOP/s and % of the matrix-product rate count `4·N·K·D²` flops per "
                 "iteration for every row, as for full covariances; tied, diag and spherical do less work, so "
                 "theirs are nominal.")
    lines.append("")
    lines.append("| case | N × D × K | iters | rounds | jaxgmm ms/iter | `fast=True` ms/iter | sklearn ms/iter "
                 "| gmmx ms/iter | × sklearn | × gmmx | `fast=True` × sklearn | `fast=True` × gmmx "
                 "| % of matmul (fast) | first call s | max Δ mean loglik | peak RSS MB |")
    lines.append("|" + "---|" * 16)
    for row in rows:
        s, res = row["spec"], row["results"]
        if s["kind"] != "iterations":
            continue
        ours, fast = res.get("jaxgmm", {}), res.get("jaxgmm-fast", {})
        rss = max([r.get("peak_rss_mb", 0) for r in (ours, fast) if r.get("status") == "ok"], default=None)
        lines.append(
            f"| {row['case']} | {s['n']:,} × {s['d']} × {s['k']} | {s['iters']} | {row.get('rounds', '—')} | "
            f"{spread(ours)} | {spread(fast)} | {spread(res.get('sklearn'))} | {spread(res.get('gmmx'))} | "
            f"{ratio(row, 'speedup_vs_sklearn')} | {ratio(row, 'speedup_vs_gmmx')} | "
            f"{ratio(row, 'fast_speedup_vs_sklearn')} | {ratio(row, 'fast_speedup_vs_gmmx')} | "
            f"{_fmt(row.get('pct_of_matmul'), '{:.0f}%')} ({_fmt(row.get('fast_pct_of_matmul'), '{:.0f}%')}) | "
            f"{cell(ours, 'first_s', '{:.2f}')} | {_fmt(row.get('max_ll_diff'), '{:.1e}')} | {_fmt(rss, '{:.0f}')} |"
        )
    lines.append("")
    for row in rows:
        if "rel_ll_err_vs_float64" in row:
            lines.append(f"- {row['case']}: float32 final mean log-likelihood vs a float64 run from the same start: "
                         f"relative difference {row['rel_ll_err_vs_float64']:.1e} "
                         f"(`fast=True`: {_fmt(row.get('fast_rel_ll_err_vs_float64'), '{:.1e}')}).")
        if row["spec"]["kind"] == "iterations" and "ns_per_point_iter" in row:
            floor_ms = 4 * row["spec"]["n"] * row["spec"]["k"] * row["spec"]["d"] ** 2 / rate / 1e6
            lines.append(f"- {row['case']}: {row['ns_per_point_iter']:.1f} ns per point per iteration "
                         f"(`fast=True`: {_fmt(row.get('fast_ns_per_point_iter'), '{:.1f}')}); the matrix-product "
                         f"floor is {floor_ms:.2g} ms per iteration, so the default runs at "
                         f"{_fmt(row.get('pct_of_matmul'), '{:.0f}%')} of it; recompiles "
                         f"during warm runs: {row['results']['jaxgmm'].get('recompiles')}.")
        if row.get("fresh_process_s") is not None:
            lines.append(f"- {row['case']}: a new Python process that imports jaxgmm and fits (import, trace, compile, "
                         f"run, exit): {row['fresh_process_s']:.2f} s; with the persistent compilation cache "
                         f"(`jaxgmm.enable_compilation_cache()`, filled by an earlier process): "
                         f"{_fmt(row.get('fresh_process_cached_s'), '{:.2f}')} s.")
    lines.append("")
    lines.append("### Whole fits")
    lines.append("")
    lines.append("| case | work | rounds | jaxgmm s | first call s | sklearn s | × sklearn | best/mean loglik jaxgmm "
                 "| sklearn | notes |")
    lines.append("|" + "---|" * 10)
    batching = "`vmap`" if "accelerator" in info else "`lax.map` on CPU"
    for row in rows:
        s, res = row["spec"], row["results"]
        if s["kind"] == "iterations":
            continue
        ours, sk = res.get("jaxgmm", {}), res.get("sklearn", {})
        if s["kind"] == "restarts":
            work = f"N={s['n']:,}, D={s['d']}, K={s['k']}, n_init={s['n_init']}, k-means++, to convergence"
            note = f"jaxgmm: one compiled call (restarts under {batching}); sklearn: sequential"
        else:
            work = f"{s['n_sets']:,} data sets × {s['n']} × {s['d']}, K={s['k']}, to convergence"
            note = (f"one compiled call ({batching} over data sets) "
                    "vs a Python loop; largest difference of "
                    f"means vs fitting each alone: {_fmt(ours.get('max_diff_vs_alone'), '{:.1e}')}")
        lines.append(
            f"| {row['case']} | {work} | {row.get('rounds', '—')} | {spread(ours, 'total_s', '{:.3f}')} | "
            f"{cell(ours, 'first_s', '{:.2f}')} | {spread(sk, 'total_s', '{:.3f}')} | {ratio(row, 'speedup_vs_sklearn')} | "
            f"{cell(ours, 'log_likelihood', '{:.5f}')} | {cell(sk, 'log_likelihood', '{:.5f}')} | {note} |"
        )
    lines.append("")
    return "\n".join(lines)


def targets(rows):
    """The speed targets of the project's benchmark issue, checked against this run's numbers."""
    by = {row["case"]: row for row in rows}
    out = []

    def check(name, value, goal, fmt, met):
        state = "—" if value is None else ("met" if met(value) else "**not met**")
        out.append(f"| {name} | {goal} | {_fmt(value, fmt)} | {state} |")

    mid = by.get("mid full", {})
    for key, label in (("", "default"), ("fast_", "`fast=True`")):
        check(f"mid full vs sklearn, {label}", mid.get(key + "speedup_vs_sklearn"), "≥ 12×", "{:.1f}×", lambda v: v >= 12)
        check(f"mid full vs gmmx, {label}", mid.get(key + "speedup_vs_gmmx"), "≥ 6×", "{:.1f}×", lambda v: v >= 6)
        check(f"mid full, rel. loglik vs float64, {label}", mid.get(key + "rel_ll_err_vs_float64"), "≤ 1e-4",
              "{:.1e}", lambda v: v <= 1e-4)
    for cov in ("tied", "diag", "spherical"):
        row = by.get(f"mid {cov}", {})
        for key, label in (("", "default"), ("fast_", "`fast=True`")):
            check(f"mid {cov} vs sklearn, {label}", row.get(key + "speedup_vs_sklearn"), "≥ 3×", "{:.1f}×",
                  lambda v: v >= 3)
    wide = by.get("wide", {})
    check("wide vs sklearn", wide.get("speedup_vs_sklearn"), "≥ 5×", "{:.1f}×", lambda v: v >= 5)
    check("wide, % of matmul rate", wide.get("pct_of_matmul"), "≥ 40%", "{:.0f}%", lambda v: v >= 40)
    big = by.get("big", {})
    ours = big.get("results", {}).get("jaxgmm", {})
    if ours.get("status") == "ok":
        data_mb = big["spec"]["n"] * big["spec"]["d"] * 4 / 2**20
        check("big, peak RSS − data size", ours["peak_rss_mb"] - data_mb, "≤ 1536 MB", "{:.0f} MB",
              lambda v: v <= 1536)
        if "ns_per_point_iter" in mid:
            check("big / mid time per point per iteration", big["ns_per_point_iter"] / mid["ns_per_point_iter"],
                  "≤ 1.5", "{:.2f}", lambda v: v <= 1.5)
    for case, goal in (("restarts", 5), ("many", 100)):
        check(f"{case} vs sklearn", by.get(case, {}).get("speedup_vs_sklearn"), f"≥ {goal}×", "{:.1f}×",
              lambda v, g=goal: v >= g)
    teach = by.get("teach", {})
    check("teach warm vs sklearn", teach.get("speedup_vs_sklearn"), "≥ 5×", "{:.1f}×", lambda v: v >= 5)
    if not out:
        return ""
    return "\n".join(["### Targets", "", "| target | goal | this run | |", "|---|---|---|---|", *out, ""])


def plot(rows, path, title=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iter_rows = [r for r in rows if r["spec"]["kind"] == "iterations"]
    libs = ["jaxgmm", "jaxgmm-fast", "sklearn", "gmmx"]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(iter_rows)), 4))
    width = 0.2
    for i, lib in enumerate(libs):
        vals = [r["results"].get(lib, {}).get("ms_per_iter") if r["results"].get(lib, {}).get("status") == "ok"
                else np.nan for r in iter_rows]
        ax.bar(np.arange(len(iter_rows)) + (i - 1.5) * width, vals, width, label=lib)
    ax.set_xticks(np.arange(len(iter_rows)), [r["case"] for r in iter_rows], rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("ms per EM iteration (log scale)")
    ax.set_title(f"EM iteration time, same data and start (lower is better)\n{title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def section(saved):
    """One machine's part of BENCHMARKS.md: the targets are the CPU's; an accelerator run gets notes instead."""
    rows, info = saved["rows"], saved["info"]
    tail = accelerator_notes(rows) if "accelerator" in info else targets(rows)
    return markdown(rows, saved["rate"], info, saved["title"]) + "\n" + tail


def accelerator_notes(rows):
    """What to read into an accelerator run's numbers."""
    by = {row["case"]: row for row in rows}
    teach = by.get("teach", {}).get("results", {}).get("jaxgmm", {})
    gmmx_diffs = [row["max_ll_diff"] for row in rows
                  if row["results"].get("gmmx", {}).get("status") == "ok" and row.get("max_ll_diff") is not None]
    lines = ["### Reading this run", ""]
    if gmmx_diffs:
        lines.append(f"- gmmx leaves float32 matrix products at JAX's default precision, TensorFloat-32 on this GPU; "
                     f"its final log-likelihoods differ from jaxgmm's by up to {max(gmmx_diffs):.1e} (see *max Δ*), "
                     "while jaxgmm (full float32 products) stays within "
                     f"{_fmt(by.get('mid full', {}).get('rel_ll_err_vs_float64'), '{:.0e}')} (relative) of float64 "
                     "on *mid*.")
    if teach.get("status") == "ok":
        lines.append(f"- Peak RSS is host memory. Any JAX process with the CUDA runtime loaded holds about "
                     f"{teach['peak_rss_mb'] / 1024:.1f} GB (*teach*), so the CPU's memory target does not carry "
                     "over; *big*'s data lives on the GPU.")
    ran_sklearn = any(row["results"].get("sklearn", {}).get("status") == "ok" for row in rows)
    lines.append("- The issue's speed targets are checked in the CPU section (the project's machine)"
                 + ("; scikit-learn ran on this machine's CPU." if ran_sklearn else "; scikit-learn was not run here."))
    return "\n".join(lines + [""])


def report(folder, with_scale_note=True):
    """BENCHMARKS.md from the saved results in ``folder``: the CPU run, then an accelerator run if any."""
    parts = [HEADER]
    for name in ("results", "results-accelerator"):
        path = Path(folder) / f"{name}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            saved.setdefault("title", "CPU (this project's machine)")
            parts.append(section(saved) + "\n")
            if name == "results" and with_scale_note:
                parts.append(SCALE_NOTE + "\n")
    # benchmarks/profile_mid.py (where mid's time goes), benchmarks/models.py (the 14 covariance models) and
    # benchmarks/selection_grid.py (the selection grid), against mclust; benchmarks/missing.py (missing values);
    # benchmarks/bayesian.py (MAP-EM and variational Bayes)
    for extra in ("profile.md", "models.md", "selection_grid.md", "missing.md", "bayesian.md"):
        if with_scale_note and (Path(folder) / extra).exists():
            parts.append("\n" + (Path(folder) / extra).read_text())
    return "".join(parts)


def side_benchmark(argv, *, doc, name, case, smoke, rows_of, markdown, annotate=None):
    """The command line of a benchmark beside this one (``models.py``, ``missing.py``): ``--smoke`` (tiny sizes,
    writes nothing unless ``--out``) or the full case, saved as ``benchmarks/<name>.{json,md}`` and folded into
    BENCHMARKS.md. ``rows_of(case)`` measures; ``annotate(saved)`` may add to what is saved."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (writes nothing unless --out)")
    parser.add_argument("--out", default=None, help=f"results JSON (default benchmarks/{name}.json unless --smoke)")
    args = parser.parse_args(argv)
    if not args.smoke:
        strip_suite_compile_shortcuts(os.environ)
    chosen = smoke if args.smoke else case
    rows = rows_of(chosen)
    saved = dict(case=chosen, rows=rows, info=machine_info())
    if annotate is not None:
        annotate(saved)
    out = args.out or (None if args.smoke else str(ROOT / "benchmarks" / f"{name}.json"))
    if out:
        Path(out).write_text(json.dumps(saved, indent=1, default=str))
        Path(out).with_suffix(".md").write_text(markdown(saved))
        if not args.smoke:
            (ROOT / "BENCHMARKS.md").write_text(report(ROOT / "benchmarks"))
    print(markdown(saved))
    return rows


HEADER = ("# Benchmarks\n\nProduced by `benchmarks/run.py` (see its docstring for method; "
          "`--report-only` rewrites this file from `benchmarks/results.json`). "
          "Re-run after any change to the hot path and commit the result.\n\n")
SCALE_NOTE = ("\n### Scale-out rows\n\nProduced by `benchmarks/scale.py` (streamed from a memory-mapped `.npy` "
              "vs in memory; 4 CPU devices vs 1); its last run is in `benchmarks/scale.md`.\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=3, metavar=("LIB", "SPEC", "DATA"), help=argparse.SUPPRESS)
    parser.add_argument("--fresh", nargs=2, metavar=("SPEC", "DATA"), help=argparse.SUPPRESS)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ",".join(CASES))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the test suite's smoke run)")
    parser.add_argument("--out", default=None, help="markdown output (default BENCHMARKS.md unless --smoke)")
    parser.add_argument("--title", default=None, help="section title (default: the machine)")
    parser.add_argument("--libs", default=None, help="comma-separated subset of jaxgmm,jaxgmm-fast,sklearn,gmmx")
    parser.add_argument("--accelerator", action="store_true",
                        help="JAX runs on a GPU: the rate is JAX's float32 matmul on it, results go to "
                             "benchmarks/results-accelerator.json and form their own section of BENCHMARKS.md")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite BENCHMARKS.md from benchmarks/results.json without measuring")
    args = parser.parse_args(argv)
    if args.serve:
        return serve(*args.serve)
    if args.fresh:
        return fresh_process(*args.fresh)
    if args.report_only:
        (ROOT / "BENCHMARKS.md").write_text(report(ROOT / "benchmarks"))
        return None
    if not args.smoke:
        strip_suite_compile_shortcuts(os.environ)
    table = SMOKE if args.smoke else CASES
    cases = {name: table[name] for name in args.cases.split(",") if name in table}
    if args.libs:
        keep = args.libs.split(",")
        cases = {name: dict(cfg, libs=[lib for lib in cfg["libs"] if lib in keep]) for name, cfg in cases.items()}
    info = machine_info()
    if args.accelerator:
        measured = run_worker("matmul", dict(n=8192), None, DEFAULT_TIME_LIMIT, repeats=1)
        rate, info["accelerator"] = measured["gflops"], measured["device"]
        info["rate_source"] = f"JAX float32 matrix product, full precision (8192², {measured['device']})"
    else:
        rate = matmul_gflops(1000 if args.smoke else 4000)
        info["rate_source"] = f"numpy float32 matrix product ({1000 if args.smoke else 4000}², this CPU)"
    print(f"{info['rate_source']}: {rate:.0f} GFLOP/s")
    out = args.out or (None if args.smoke else str(ROOT / "BENCHMARKS.md"))
    partial = Path(out).with_name("benchmarks-partial.json") if out else None
    with tempfile.TemporaryDirectory() as tmp:
        rows = summarise(run_cases(cases, tmp, partial=partial), rate)
    if partial:
        partial.unlink(missing_ok=True)
    title = args.title or (f"Accelerator: {info['accelerator']}" if args.accelerator else "CPU (this project's machine)")
    saved = dict(title=title, rate=rate, info=info, rows=rows)
    if out:
        folder = Path(out).with_name("benchmarks")
        folder.mkdir(exist_ok=True)
        name = "results-accelerator" if args.accelerator else "results"
        (folder / f"{name}.json").write_text(json.dumps(saved, indent=1, default=str))
        plot(rows, folder / f"{name}.png", title)
        Path(out).write_text(report(folder, with_scale_note=not args.smoke))
    print(section(saved))
    return rows


if __name__ == "__main__":
    main()
