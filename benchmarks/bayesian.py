#!/usr/bin/env python3
"""Benchmark MAP-EM and variational Bayes on *mid* against EM, and against scikit-learn's two mixtures.

    python benchmarks/bayesian.py            # writes benchmarks/bayesian.{json,md}; BENCHMARKS.md includes the table
    python benchmarks/bayesian.py --smoke    # tiny sizes, for the test suite (writes nothing unless --out)

The *mid* case (100,000 × 16, K = 16, full covariances, 20 iterations,
float32, ``tol = 0``), five ways in the same time window (``run.py``'s
workers, repetitions alternated in rounds): jaxgmm's EM from the *mid* start,
its MAP-EM with mclust's default prior from the same start, its variational
Bayes (``vb_loop``, scikit-learn's default prior) from the responsibilities of
that start, and scikit-learn's ``GaussianMixture`` and
``BayesianGaussianMixture`` from the same parameters and responsibilities.
Per-iteration times difference runs of 20 and 1 iterations. Ratios are the
medians of the ratios within a round. Targets (issue 16): MAP-EM and VB each
within 1.3× of EM per iteration, and VB at least as many times faster than
scikit-learn's BayesianGaussianMixture as EM is than its GaussianMixture.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the benchmark's workers and data)

CASE = dict(n=100_000, d=16, k=16, iters=20, rounds=5)
SMOKE = dict(n=600, d=4, k=3, iters=4, rounds=2)
TIME_LIMIT = 900
JOBS = {"em": "jaxgmm", "map": "jaxgmm", "vb": "jaxgmm-vb", "sklearn": "sklearn", "sklearn_bgm": "sklearn-bgm"}


def measure(case, log=print):
    seed = sum(map(ord, "mid"))  # the mid case's data and start
    X = run.make_mixture_data(seed, case["n"], case["d"], case["k"], np.float32)
    w, mu, c = run.initial_params(X, case["k"], "full", seed)
    spec = dict(kind="iterations", n=case["n"], d=case["d"], k=case["k"], iters=case["iters"], covariance_type="full")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mid.npz"
        np.savez(path, X=X, weights=w, means=mu, covariances=c, resp=run.responsibilities(X, w, mu, c))
        jobs = {name: (lib, dict(spec, prior=True) if name == "map" else spec) for name, lib in JOBS.items()}
        results = run.interleave(jobs, path, dict.fromkeys(jobs, TIME_LIMIT), case["rounds"], log=lambda *_: None)
    for name, res in results.items():
        log(f"{name:12s} {res.get('status')}: " + ", ".join(f"{k}={v:.4g}" for k, v in res.items()
                                                              if isinstance(v, float)))
    ratios = {
        "map_vs_em": run.paired_ratio(results["map"], results["em"]),
        "vb_vs_em": run.paired_ratio(results["vb"], results["em"]),
        "sklearn_vs_em": run.paired_ratio(results["sklearn"], results["em"]),
        "sklearn_bgm_vs_vb": run.paired_ratio(results["sklearn_bgm"], results["vb"]),
    }
    return [dict(spec=spec, results=results, ratios=ratios)]


def markdown(saved):
    (row,), case = saved["rows"], saved["case"]
    res, ratios = row["results"], row["ratios"]

    def ratio(name):
        median, low, high = ratios[name]
        return "—" if median is None else f"{median:.2f} ({low:.2f}–{high:.2f})"

    def met(ok):
        return "met" if ok else "**not met**"

    map_em, vb_em = ratios["map_vs_em"][0], ratios["vb_vs_em"][0]
    vb_speedup, em_speedup = ratios["sklearn_bgm_vs_vb"][0], ratios["sklearn_vs_em"][0]
    lines = [
        "## Bayesian mixtures on *mid*", "",
        f"Produced by `benchmarks/bayesian.py`: N = {case['n']:,}, D = {case['d']}, K = {case['k']}, full, "
        f"{case['iters']} iterations (float32, `tol = 0`), {case['rounds']} rounds alternating the five workers; "
        f"ms per iteration by differencing {case['iters']} and 1 iterations; ratios are medians of the within-round ratios "
        "(range). EM and MAP-EM start from the *mid* parameters, variational Bayes and scikit-learn's "
        "BayesianGaussianMixture from their responsibilities. Objective: the last E-step's mean log-likelihood "
        "(EM, MAP-EM's log-likelihood part) or the lower bound per row (VB).", "",
        "| method | ms/iter (range) | first call s | objective per row |", "|---|---|---|---|",
    ]
    labels = {"em": "jaxgmm EM", "map": "jaxgmm MAP-EM (mclust's default prior)", "vb": "jaxgmm variational Bayes",
              "sklearn": "scikit-learn GaussianMixture", "sklearn_bgm": "scikit-learn BayesianGaussianMixture"}
    for name, label in labels.items():
        lines.append(f"| {label} | {run.spread(res[name])} | {run.cell(res[name], 'first_s', '{:.2f}')} | "
                     f"{run.cell(res[name], 'log_likelihood', '{:.4f}')} |")
    lines += [
        "", "| comparison | ratio | target |", "|---|---|---|",
        f"| MAP-EM / EM per iteration | {ratio('map_vs_em')} | ≤ 1.3 ({met(map_em is not None and map_em <= 1.3)}) |",
        f"| VB / EM per iteration | {ratio('vb_vs_em')} | ≤ 1.3 ({met(vb_em is not None and vb_em <= 1.3)}) |",
        f"| scikit-learn GaussianMixture / jaxgmm EM | {ratio('sklearn_vs_em')} | — |",
        f"| scikit-learn BayesianGaussianMixture / jaxgmm VB | {ratio('sklearn_bgm_vs_vb')} | ≥ the line above "
        f"({met(None not in (vb_speedup, em_speedup) and vb_speedup >= em_speedup)}) |",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    return run.side_benchmark(argv, doc=__doc__, name="bayesian", case=CASE, smoke=SMOKE, rows_of=measure,
                              markdown=markdown)


if __name__ == "__main__":
    main()
