#!/usr/bin/env python3
"""Benchmark the 14 covariance models on *mid* against VVV and against R's mclust.

    python benchmarks/models.py             # writes benchmarks/models.{json,md}; BENCHMARKS.md includes the table
    python benchmarks/models.py --smoke     # tiny sizes, for the test suite (writes nothing unless --out)

Every model starts from the same responsibilities (the E-step of the *mid*
case's initial parameters, computed with numpy): jaxgmm takes one M-step
from them (``params_from_responsibilities``) and runs ``em_loop`` with
``tol = 0`` and ``reg_covar = 0``; mclust's ``me()`` starts from the same
``z`` (``benchmarks/mclust_me.R``, float64, in a subprocess with a time
limit; reported as not run where ``Rscript`` with mclust is absent). Each
library's measurement runs in its own process (``run.py``'s workers), the
two libraries alternating model by model. jaxgmm runs in float32 as on the
other rows; mclust computes in float64.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the benchmark's workers and data)

ROOT = run.ROOT
MODELS = ("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV")
ITERATIVE = {"VEI", "VEE", "EVE", "VVE", "VEV"}
CASE = dict(n=100_000, d=16, k=16, iters=20, r_iters=4)
SMOKE = dict(n=400, d=3, k=3, iters=5, r_iters=3)
TIME_LIMIT = 600
ROUNDS = 5


def mclust_available() -> bool:
    if shutil.which("Rscript") is None:
        return False
    return subprocess.run(["Rscript", "-e", "library(mclust)"], capture_output=True).returncode == 0


def measure(case, log=print):
    seed = sum(map(ord, "mid"))  # the mid case's data and start
    X = run.make_mixture_data(seed, case["n"], case["d"], case["k"], np.float32)
    w, mu, cov = run.initial_params(X, case["k"], "full", seed)
    z = run.responsibilities(X, w, mu, cov)
    with_r = mclust_available()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        np.savez(path, X=X, z=z)
        for model in MODELS:
            spec = dict(kind="iterations", n=case["n"], d=case["d"], k=case["k"], iters=case["iters"],
                        r_iters=case["r_iters"], covariance_type=model, reg_covar=0.0)
            # Each model alternates with VVV in the same time window, for a paired ratio.
            jobs = {"jaxgmm": ("jaxgmm", spec), "VVV": ("jaxgmm", dict(spec, covariance_type="VVV"))}
            results = run.interleave(jobs, path, dict.fromkeys(jobs, TIME_LIMIT), ROUNDS, log=lambda *_: None)
            results["mclust"] = (run.run_worker("mclust", spec, path, TIME_LIMIT, repeats=1) if with_r
                                 else {"status": "not run (no Rscript with mclust)"})
            for lib, res in results.items():
                log(f"{model} {lib:7s} {res.get('status')}: "
                    + ", ".join(f"{k}={v:.4g}" for k, v in res.items() if isinstance(v, float)))
            rows.append(dict(model=model, spec=spec, results=results))
    return rows


def summarise(rows):
    for row in rows:
        ours, theirs = row["results"]["jaxgmm"], row["results"]["mclust"]
        row["vs_vvv"], *row["vs_vvv_range"] = run.paired_ratio(ours, row["results"]["VVV"])
        if ours.get("status") == "ok" and theirs.get("status") == "ok":
            row["speedup_vs_mclust"] = theirs["ms_per_iter"] / ours["ms_per_iter"]
    return rows


def markdown(saved):
    rows, case = saved["rows"], saved["case"]
    lines = ["## Covariance models (mclust's 14) on *mid*", "",
             f"Produced by `benchmarks/models.py`: N = {case['n']:,}, D = {case['d']}, K = {case['k']}, "
             f"{case['iters']} EM iterations for jaxgmm (float32, `tol = 0`, `reg_covar = 0`) and "
             f"{case['r_iters']} for mclust {saved.get('mclust_version', '')} (`me()`, float64; its time per "
             "iteration is the difference of runs with that many and one iteration), every model from the same "
             f"responsibilities. Each model's repetitions alternate with VVV's in {ROUNDS} rounds: × VVV is the "
             "median of the ratios within a round (range in parentheses), times are medians (range). "
             "Targets: closed-form models within 1.2× of VVV per iteration, iterative ones "
             "within 2×, every model faster than mclust.", "",
             "| model | M-step | jaxgmm ms/iter | × VVV | target | mclust ms/iter | × mclust | first call s | "
             f"mean loglik jaxgmm ({case['iters']} it.) |",
             "|" + "---|" * 9]
    for row in rows:
        ours, theirs = row["results"]["jaxgmm"], row["results"]["mclust"]
        iterative = row["model"] in ITERATIVE
        goal = 2.0 if iterative else 1.2
        vs = row.get("vs_vvv")
        met = "—" if vs is None else ("met" if vs <= goal else "**not met**")
        faster = row.get("speedup_vs_mclust")
        lines.append(
            f"| {row['model']} | {'iterative' if iterative else 'closed form'} | {run.spread(ours)} | "
            f"{run._fmt(vs, '{:.2f}')} ({run._fmt(row['vs_vvv_range'][0], '{:.2f}')}–"
            f"{run._fmt(row['vs_vvv_range'][1], '{:.2f}')}) | ≤ {goal} ({met}) | {run.cell(theirs)} | "
            f"{run._fmt(faster, '{:.0f}×')}{'' if faster is None or faster > 1 else ' **not met**'} | "
            f"{run.cell(ours, 'first_s', '{:.2f}')} | {run.cell(ours, 'log_likelihood', '{:.5f}')} |")
    lines.append("")
    return "\n".join(lines)


def _mclust_version(saved):
    versions = {r["results"]["mclust"].get("version") for r in saved["rows"]} - {None}
    if versions:
        saved["mclust_version"] = versions.pop()


def main(argv=None):
    return run.side_benchmark(argv, doc=__doc__, name="models", case=CASE, smoke=SMOKE,
                              rows_of=lambda case: summarise(measure(case)), markdown=markdown,
                              annotate=_mclust_version)


if __name__ == "__main__":
    main()
