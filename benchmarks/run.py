#!/usr/bin/env python3
"""Benchmark jaxgmm against scikit-learn and gmmx on identical data and initial parameters.

    python benchmarks/run.py                 # all cases, writes BENCHMARKS.md and benchmarks/results.{json,png}
    python benchmarks/run.py --cases mid     # a subset
    python benchmarks/run.py --smoke         # tiny sizes, for the test suite (writes nothing unless --out)
    python benchmarks/run.py --accelerator   # where JAX sees a GPU: its own section (benchmarks/accelerator.sh)

The driver generates each case's data and initial parameters once (numpy,
fixed seeds, a known mixture), writes them to a temporary ``.npz``, and runs
every library's measurement in its own subprocess with a time limit, so a peer
that crashes, hangs or returns NaN is reported as such and cannot take the
run down. Each worker reports ms per EM iteration (best of several warm runs,
``tol = 0`` so every library does the same number of iterations), its first
call including compilation, its final mean log-likelihood and its peak
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
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# name: (N, D, K, iterations, covariance types, libraries)
CASES = {
    "teach": dict(n=1_000, d=2, k=3, iters=100, types=["full"], libs=["jaxgmm", "jaxgmm-fast", "sklearn", "gmmx"]),
    "mid": dict(n=100_000, d=16, k=16, iters=20, types=["full", "tied", "diag", "spherical"],
                libs=["jaxgmm", "jaxgmm-fast", "sklearn", "gmmx"]),
    "wide": dict(n=50_000, d=64, k=32, iters=5, types=["full"], libs=["jaxgmm", "jaxgmm-fast", "sklearn", "gmmx"]),
    "big": dict(n=10_000_000, d=16, k=16, iters=5, types=["full"], libs=["jaxgmm", "jaxgmm-fast"]),
    "float64": dict(n=100_000, d=16, k=16, iters=20, types=["full"],
                    libs=["jaxgmm", "jaxgmm-fast", "sklearn", "gmmx"], x64=True),
    "restarts": dict(n=10_000, d=8, k=8, n_init=32, types=["full"], libs=["jaxgmm", "sklearn"]),
    "many": dict(n=300, d=2, k=3, n_sets=1_000, types=["full"], libs=["jaxgmm", "sklearn"]),
}
SMOKE = {
    "teach": dict(n=200, d=2, k=3, iters=5, types=["full", "diag"], libs=["jaxgmm", "jaxgmm-fast", "sklearn", "gmmx"]),
    "restarts": dict(n=300, d=2, k=2, n_init=3, types=["full"], libs=["jaxgmm", "sklearn"]),
    "many": dict(n=50, d=2, k=2, n_sets=4, types=["full"], libs=["jaxgmm", "sklearn"]),
}
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


def precisions_from(cov, covariance_type):
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(cov)
    return 1.0 / cov


# ----------------------------------------------------------------------------- workers

def peak_rss_mb():
    """This process's peak resident memory. VmHWM, not ru_maxrss: the latter survives exec, so a
    worker would report the driver's peak (the driver holds the 10M-row case's data)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_of(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def worker_jaxgmm(spec, data, fast=False):
    import jax

    if spec.get("x64"):
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxgmm
    from jaxgmm.em import em_loop

    out = {}
    if spec["kind"] == "restarts":
        X = data["X"]
        fit = lambda: jaxgmm.fit(jax.random.key(0), X, spec["k"], n_init=spec["n_init"], init="k-means++")  # noqa
        t0 = time.perf_counter()
        r = fit()
        out["first_s"] = time.perf_counter() - t0
        best, r = best_of(fit, 3)
        out.update(total_s=best, log_likelihood=float(r.log_likelihood), n_iter=int(r.n_iter))
        return out
    if spec["kind"] == "many":
        X = data["X"]
        fit = lambda: jaxgmm.fit_many(jax.random.key(0), X, spec["k"])  # noqa
        t0 = time.perf_counter()
        r = fit()
        out["first_s"] = time.perf_counter() - t0
        best, r = best_of(fit, 3)
        # Each data set's result must equal fitting it alone (spot-check 8 of them).
        keys = jax.random.split(jax.random.key(0), X.shape[0])
        worst = 0.0
        for b in np.linspace(0, X.shape[0] - 1, 8).astype(int):
            alone = jaxgmm.fit(keys[b], X[b], spec["k"])
            worst = max(worst, float(np.max(np.abs(np.asarray(alone.params.means) - np.asarray(r.params.means[b])))))
        out.update(total_s=best, log_likelihood=float(np.mean(np.asarray(r.log_likelihood))),
                   max_diff_vs_alone=worst)
        return out

    X = jnp.asarray(data["X"])
    dtype = X.dtype
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
    run = lambda: jax.block_until_ready(  # noqa: E731
        em_loop(params, X, max_iter=iters, tol=0.0, reg_covar=reg_covar, fast=fast))
    t0 = time.perf_counter()
    r = run()
    out["first_s"] = time.perf_counter() - t0
    compiles_before = em_loop._cache_size()
    best, r = best_of(run, spec.get("repeats", 3))
    out.update(
        ms_per_iter=1000 * best / iters,
        log_likelihood=float(r.history[iters - 1]),
        n_iter=int(r.n_iter),
        recompiles=em_loop._cache_size() - compiles_before,
    )
    return out


def worker_sklearn(spec, data):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    warnings.simplefilter("ignore", ConvergenceWarning)
    X = data["X"]
    if spec["kind"] == "restarts":
        gm = GaussianMixture(spec["k"], n_init=spec["n_init"], init_params="k-means++", random_state=0)
        total, gm = best_of(lambda: gm.fit(X), 1)
        return dict(total_s=total, first_s=total, log_likelihood=float(gm.lower_bound_))
    if spec["kind"] == "many":
        def loop():
            return [GaussianMixture(spec["k"], random_state=0).fit(x).lower_bound_ for x in X]
        total, lls = best_of(loop, 1)
        return dict(total_s=total, first_s=total, log_likelihood=float(np.mean(lls)))
    cov_type = spec["covariance_type"]

    def fit(max_iter):
        gm = GaussianMixture(
            len(data["weights"]), covariance_type=cov_type, max_iter=max_iter, tol=0.0, reg_covar=1e-6,
            init_params="random_from_data", random_state=0, weights_init=data["weights"],
            means_init=data["means"], precisions_init=precisions_from(data["covariances"], cov_type),
        )
        return gm.fit(X)

    iters = spec["iters"]
    # Per-iteration time: difference of fits with iters and 1 iteration removes the
    # fixed costs (initialisation, final E-step) that every fit pays once.
    t_one, _ = best_of(lambda: fit(1), 2)
    t_all, gm = best_of(lambda: fit(iters), spec.get("repeats", 2))
    return dict(ms_per_iter=1000 * (t_all - t_one) / (iters - 1), first_s=t_all,
                log_likelihood=float(gm.lower_bound_), n_iter=int(gm.n_iter_))


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
    iters = spec["iters"]
    fitter = EMFitter(max_iter=iters, tol=0.0, reg_covar=1e-6)
    fit = jax.jit(fitter.fit)
    t0 = time.perf_counter()
    r = jax.block_until_ready(fit(X, gmm))
    first = time.perf_counter() - t0
    best, r = best_of(lambda: jax.block_until_ready(fit(X, gmm)), spec.get("repeats", 3))
    return dict(ms_per_iter=1000 * best / iters, first_s=first, log_likelihood=float(r.log_likelihood),
                n_iter=int(r.n_iter))


def worker_mclust(spec, data):
    """R's mclust ``me()`` from the same responsibilities (``benchmarks/mclust_me.R``), in float64."""
    n, d = data["X"].shape
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "X.bin", Path(tmp) / "z.bin"]
        for path, a in zip(paths, (data["X"], data["z"])):
            np.ascontiguousarray(a, np.float64).tofile(path)
        proc = subprocess.run(
            ["Rscript", str(ROOT / "benchmarks" / "mclust_me.R"), *map(str, paths), str(n), str(d),
             str(data["z"].shape[1]), spec["covariance_type"], str(spec.get("r_iters", spec["iters"]))],
            capture_output=True, text=True, check=True,
        )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def worker_matmul(spec, data):
    """JAX's float32 matrix-product rate (full precision) on its default device, and the device's name."""
    import jax
    import jax.numpy as jnp

    n = spec["n"]
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    product = jax.jit(lambda a: jnp.matmul(a, a, precision="highest"))
    jax.block_until_ready(product(a))
    t, _ = best_of(lambda: jax.block_until_ready(product(a)), 10)
    device = jax.devices()[0]
    return dict(gflops=2 * n**3 / t / 1e9, device=f"{device.platform.upper()} {device.device_kind}",
                log_likelihood=0.0)


WORKERS = {
    "matmul": worker_matmul,
    "jaxgmm": worker_jaxgmm,
    "jaxgmm-fast": lambda spec, data: worker_jaxgmm(spec, data, fast=True),
    "sklearn": worker_sklearn,
    "gmmx": worker_gmmx,
    "mclust": worker_mclust,
}


def worker_main(lib, spec_json, data_path):
    spec = json.loads(spec_json)
    data = {}
    if data_path != "None":  # the matmul worker needs none
        with np.load(data_path) as f:
            data = {k: f[k] for k in f.files}
    t0 = time.perf_counter()
    result = WORKERS[lib](spec, data)
    result["wall_s"] = time.perf_counter() - t0
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result))


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


def run_worker(lib, spec, data_path, time_limit):
    env = dict(os.environ)
    env["JAX_ENABLE_X64"] = "1" if spec.get("x64") else "0"  # never inherited from the caller
    cmd = [sys.executable, __file__, "--worker", lib, json.dumps(spec), str(data_path)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=time_limit, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout (> {time_limit} s)"}
    process_s = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"crashed (exit {proc.returncode}): {last[:120]}"}
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_s"] = process_s
    ll = result.get("log_likelihood")
    result["status"] = "ok" if ll is not None and np.isfinite(ll) else "NaN result"
    return result


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
                    covariance_type=cov_type, x64=bool(cfg.get("x64")), repeats=1 if name == "big" else 3)
        label = name if len(cfg["types"]) == 1 else f"{name} {cov_type}"
        out.append((label, spec, {"X": X, "weights": w, "means": mu, "covariances": cov}))
    return out


def run_cases(cases, tmpdir, log=print, partial=None):
    """Measure every case; with ``partial`` (a path) the rows so far are saved after each case."""
    rows = []
    for name, cfg in cases.items():
        for label, spec, arrays in case_specs(name, cfg):
            path = Path(tmpdir) / f"{label.replace(' ', '_')}.npz"
            np.savez(path, **arrays)
            row = dict(case=label, spec=spec, results={})
            for lib in cfg["libs"]:
                if lib == "gmmx" and spec.get("covariance_type") not in GMMX_TYPES:
                    row["results"][lib] = {"status": "not supported"}
                    continue
                limit = TIME_LIMIT.get(name, DEFAULT_TIME_LIMIT)
                if not lib.startswith("jaxgmm"):
                    limit = PEER_TIME_LIMIT.get(name, limit)
                res = run_worker(lib, spec, path, limit)
                row["results"][lib] = res
                log(f"{label:16s} {lib:8s} {res.get('status')}: "
                    + ", ".join(f"{k}={v:.4g}" for k, v in res.items() if isinstance(v, float)))
            if name == "mid" and spec["covariance_type"] == "full":
                # float64 reference from the same start, for the float32 accuracy target.
                ref_spec = dict(spec, x64=True, repeats=1)
                np.savez(path, **{**arrays, "X": arrays["X"].astype(np.float64)})
                row["float64_reference"] = run_worker("jaxgmm", ref_spec, path, DEFAULT_TIME_LIMIT)
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
            if ours.get("status") == "ok":
                row[f"speedup_vs_{lib}"] = r[key] / ours[key]
            if fast.get("status") == "ok":
                row[f"fast_speedup_vs_{lib}"] = r[key] / fast[key]
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
    lines.append("GFLOP/s and % of the matrix-product rate count `4·N·K·D²` flops per iteration for every row, "
                 "as for full covariances; tied, diag and spherical do less work, so theirs are nominal. "
                 "Speedups in parentheses are for `fast=True`.")
    lines.append("")
    lines.append("| case | N × D × K | iters | jaxgmm ms/iter | `fast=True` ms/iter | first call s (compile) | fresh process s "
                 "| sklearn ms/iter | gmmx ms/iter | × sklearn (fast) | × gmmx (fast) | GFLOP/s (fast) "
                 "| % of matmul (fast) | max Δ mean loglik | peak RSS MB |")
    lines.append("|" + "---|" * 15)
    for row in rows:
        s, res = row["spec"], row["results"]
        if s["kind"] != "iterations":
            continue
        ours, fast = res.get("jaxgmm", {}), res.get("jaxgmm-fast", {})

        def pair(key, spec):
            return f"{_fmt(row.get(key), spec)} ({_fmt(row.get('fast_' + key), spec)})"

        rss = max([r.get("peak_rss_mb", 0) for r in (ours, fast) if r.get("status") == "ok"], default=None)
        lines.append(
            f"| {row['case']} | {s['n']:,} × {s['d']} × {s['k']} | {s['iters']} | {cell(ours)} | {cell(fast)} | "
            f"{cell(ours, 'first_s', '{:.2f}')} | {cell(ours, 'process_s', '{:.2f}')} | "
            f"{cell(res.get('sklearn'))} | {cell(res.get('gmmx'))} | "
            f"{pair('speedup_vs_sklearn', '{:.1f}×')} | {pair('speedup_vs_gmmx', '{:.1f}×')} | "
            f"{pair('gflops', '{:.0f}')} | {pair('pct_of_matmul', '{:.0f}%')} | "
            f"{_fmt(row.get('max_ll_diff'), '{:.1e}')} | {_fmt(rss, '{:.0f}')} |"
        )
    lines.append("")
    for row in rows:
        if "rel_ll_err_vs_float64" in row:
            lines.append(f"- {row['case']}: float32 final mean log-likelihood vs a float64 run from the same start: "
                         f"relative difference {row['rel_ll_err_vs_float64']:.1e} "
                         f"(`fast=True`: {_fmt(row.get('fast_rel_ll_err_vs_float64'), '{:.1e}')}).")
        if row["spec"]["kind"] == "iterations" and "ns_per_point_iter" in row:
            lines.append(f"- {row['case']}: {row['ns_per_point_iter']:.1f} ns per point per iteration "
                         f"(`fast=True`: {_fmt(row.get('fast_ns_per_point_iter'), '{:.1f}')}); recompiles during "
                         f"warm runs: {row['results']['jaxgmm'].get('recompiles')}.")
    lines.append("")
    lines.append("### Whole fits")
    lines.append("")
    lines.append("| case | work | jaxgmm s | first call s | sklearn s | × sklearn | best/mean loglik jaxgmm | sklearn | notes |")
    lines.append("|" + "---|" * 9)
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
            f"| {row['case']} | {work} | {cell(ours, 'total_s', '{:.3f}')} | {cell(ours, 'first_s', '{:.2f}')} | "
            f"{cell(sk, 'total_s', '{:.3f}')} | {_fmt(row.get('speedup_vs_sklearn'), '{:.1f}×')} | "
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
    check("teach fresh process (import + compile + fit)", teach.get("results", {}).get("jaxgmm", {}).get("process_s"),
          "< 2 s", "{:.2f} s", lambda v: v < 2)
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
    # benchmarks/models.py (the 14 covariance models) and benchmarks/selection_grid.py (the selection grid), against mclust
    for extra in ("models.md", "selection_grid.md"):
        if with_scale_note and (Path(folder) / extra).exists():
            parts.append("\n" + (Path(folder) / extra).read_text())
    return "".join(parts)


HEADER = ("# Benchmarks\n\nProduced by `benchmarks/run.py` (see its docstring for method; "
          "`--report-only` rewrites this file from `benchmarks/results.json`). "
          "Re-run after any change to the hot path and commit the result.\n\n")
SCALE_NOTE = ("\n### Scale-out rows\n\nProduced by `benchmarks/scale.py` (streamed from a memory-mapped `.npy` "
              "vs in memory; 4 CPU devices vs 1); its last run is in `benchmarks/scale.md`.\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, metavar=("LIB", "SPEC", "DATA"), help=argparse.SUPPRESS)
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
    if args.worker:
        return worker_main(*args.worker)
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
        measured = run_worker("matmul", dict(n=8192), None, DEFAULT_TIME_LIMIT)
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
