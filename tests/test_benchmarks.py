"""The benchmark script must not rot: a smoke run at tiny sizes, all three libraries."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import X64

# The benchmark sets each worker's precision itself, so a float64 pass would repeat the float32 run.
pytestmark = pytest.mark.skipif(X64, reason="runs once, in the float32 pass (workers set their own precision)")

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke_run(tmp_path):
    out = tmp_path / "BENCH.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "| teach full |" in text and "| restarts |" in text and "| many |" in text
    # Every library ran and agreed on the fixed-iteration log-likelihoods.
    for lib in ("jaxgmm", "sklearn", "gmmx"):
        assert f"teach full       {lib:8s} ok" in proc.stdout, proc.stdout
    assert "crashed" not in text and "timeout" not in text and "NaN result" not in text
    assert (tmp_path / "benchmarks" / "results.png").stat().st_size > 5_000
    rows = json.loads((tmp_path / "benchmarks" / "results.json").read_text())["rows"]
    for row in rows:
        if row["spec"]["kind"] == "iterations":
            assert row["max_ll_diff"] < 1e-4 * abs(row["results"]["sklearn"]["log_likelihood"]), row
            assert row["results"]["jaxgmm"]["recompiles"] == 0
        # Repetitions interleaved in rounds; a speedup is the median of the ratios within each round.
        key = "ms_per_iter" if row["spec"]["kind"] == "iterations" else "total_s"
        ours, theirs = row["results"]["jaxgmm"]["reps"], row["results"]["sklearn"]["reps"]
        assert len(ours) == len(theirs) == row["rounds"] == 2
        assert row["speedup_vs_sklearn"] == pytest.approx(np.median([t[key] / o[key] for o, t in zip(ours, theirs)]))


def test_measured_runs_lose_the_suites_compile_shortcuts_and_keep_other_flags():
    spec = importlib.util.spec_from_file_location("benchmark_run", ROOT / "benchmarks" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    env = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "XLA_FLAGS": "--mine=4 --a=false --b=1",
           "JAXGMM_SUITE_XLA_FLAGS": "--a=false --b=1", "HOME": "/home/x"}
    run.strip_suite_compile_shortcuts(env)
    assert env == {"XLA_FLAGS": "--mine=4", "HOME": "/home/x"}
    env = {"XLA_FLAGS": "--a=false", "JAXGMM_SUITE_XLA_FLAGS": "--a=false"}
    run.strip_suite_compile_shortcuts(env)
    assert env == {}


def test_missing_values_benchmark_smoke_run(tmp_path):
    out = tmp_path / "missing.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "missing.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["covariance_type"], r["version"]) for r in rows} == {("full", "mcar10"), ("full", "patterns")}
    for row in rows:
        assert all(res["status"] == "ok" for res in row["results"].values()), row["results"]
        assert row["results"][row["version"]]["recompiles"] == 0
        assert row["vs_complete"] is not None
    assert "IterativeImputer + GaussianMixture" in out.with_suffix(".md").read_text()


def test_bayesian_benchmark_smoke_run(tmp_path):
    out = tmp_path / "bayesian.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bayesian.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    results = row["results"]
    assert all(res["status"] == "ok" for res in results.values()), results
    # the same start and the same iterations: each pair computes the same objective
    assert results["vb"]["log_likelihood"] == pytest.approx(results["sklearn_bgm"]["log_likelihood"], rel=1e-4)
    assert results["em"]["log_likelihood"] == pytest.approx(results["sklearn"]["log_likelihood"], rel=1e-4)
    assert all(ratio[0] is not None for ratio in row["ratios"].values())
    assert "BayesianGaussianMixture / jaxgmm VB" in out.with_suffix(".md").read_text()
