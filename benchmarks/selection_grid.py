#!/usr/bin/env python3
"""Benchmark model selection over mclust's default grid (14 models × K = 1..9) against mclust's ``mclustBIC``.

    python benchmarks/selection_grid.py            # writes benchmarks/selection_grid.{json,md}; BENCHMARKS.md includes the table

Both libraries start every cell from mclust's hierarchical clustering
(``init="hc"`` in jaxgmm: one start per cell, as mclust), on Old Faithful and
on a 10,000 × 8 sample of a known mixture. jaxgmm runs in float32 in a fresh
subprocess (its first call compiles one program per model) and again on new
data of the same shape (no compilation); mclust's ``mclustBIC`` runs twice in
R. Each in its own process with a time limit.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402
import run  # noqa: E402

TIME_LIMIT = 1800


def worker(path):
    import jax

    import jaxgmm

    X = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
    t0 = time.perf_counter()
    sel = jaxgmm.select(jax.random.key(0), X, init="hc")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jaxgmm.select(jax.random.key(0), X[::-1].copy(), init="hc")  # new data, same shape: nothing compiles
    second = time.perf_counter() - t0
    print("RESULT " + json.dumps(dict(first_s=first, second_s=second,
                                      best=f"{sel.best.covariance_type},{sel.best.n_components}")))


def run_process(cmd):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout (> {TIME_LIMIT} s)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"status": f"crashed: {(proc.stderr.strip().splitlines() or ['no output'])[-1][:120]}"}
    return dict(json.loads(lines[-1][len("RESULT "):]), status="ok")


def markdown(rows):
    lines = ["## Model selection over mclust's default grid", "",
             "Produced by `benchmarks/selection_grid.py`: 14 models × K = 1..9 from mclust's hierarchical-clustering "
             "start (`init=\"hc\"`, one start per cell), jaxgmm in float32 against mclust's `mclustBIC` "
             "(float64). *first* includes jaxgmm's compilation (one program per model) in a fresh process; "
             "*again* is a second grid on new data of the same shape. Target: the whole grid faster than "
             "mclust's at equal restarts.", "",
             "| data | jaxgmm first s | jaxgmm again s | mclust s | mclust again s | × mclust (again) | best (jaxgmm) | best (mclust) |",
             "|" + "---|" * 8]
    for row in rows:
        ours, theirs = row["jaxgmm"], row["mclust"]
        ratio = (theirs["second_s"] / ours["second_s"]) if ours.get("status") == theirs.get("status") == "ok" else None
        lines.append(f"| {row['data']} | {run.cell(ours, 'first_s', '{:.1f}')} | {run.cell(ours, 'second_s', '{:.2f}')} | "
                     f"{run.cell(theirs, 'first_s', '{:.2f}')} | {run.cell(theirs, 'second_s', '{:.2f}')} | "
                     f"{run._fmt(ratio, '{:.1f}×')} | {ours.get('best', '—')} | {theirs.get('best', '—')} |")
    return "\n".join(lines + [""])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    run.strip_suite_compile_shortcuts(run.os.environ)
    data = {"Old Faithful (272 × 2)": np.loadtxt(run.ROOT / "jaxgmm" / "data" / "faithful.csv", delimiter=",",
                                                 skiprows=1),
            "10,000 × 8": run.make_mixture_data(7, 10_000, 8, 4, np.float64)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, X in data.items():
            path = Path(tmp) / "data.csv"
            np.savetxt(path, X, delimiter=",", header=",".join(f"x{j}" for j in range(X.shape[1])), comments="")
            row = dict(data=name, jaxgmm=run_process([sys.executable, __file__, "--worker", str(path)]))
            row["mclust"] = (run_process(["Rscript", str(run.ROOT / "benchmarks" / "mclust_bic.R"), str(path)])
                             if models.mclust_available() else {"status": "not run (no Rscript with mclust)"})
            print(name, row)
            rows.append(row)
    folder = run.ROOT / "benchmarks"
    (folder / "selection_grid.json").write_text(json.dumps(rows, indent=1))
    (folder / "selection_grid.md").write_text(markdown(rows))
    (run.ROOT / "BENCHMARKS.md").write_text(run.report(folder))
    print(markdown(rows))


if __name__ == "__main__":
    main()
