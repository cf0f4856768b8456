#!/usr/bin/env python3
"""Where *mid*'s EM iteration goes: an XLA:CPU profile of ``em_loop`` (full covariances, default E-step).

    python benchmarks/profile_mid.py            # writes benchmarks/profile.md; BENCHMARKS.md includes it
    python benchmarks/profile_mid.py --fast     # the same for fast=True (printed only)

Runs ``em_loop`` on the *mid* case (100,000 × 16, K = 16, 20 iterations,
``tol = 0``, the benchmark's data and start) under ``jax.profiler.trace``,
reads the Perfetto trace XLA:CPU writes (one event per executed thunk: a
fusion, a matrix product, a scatter, ...), and sums each operation's time.
The operations are grouped by what they are (their XLA names say it), and
compared with the matrix-product floor (``4·N·K·D²`` flops at numpy's
float32 matrix-product rate, measured in the same run).
"""

import argparse
import gzip
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the benchmark's data, start and matmul rate)

ITERS = 20
# XLA's names for the thunks of one E-step, grouped by kind of work (first match wins).
GROUPS = (
    ("dot", "matrix products (Mahalanobis terms, moments)"),
    ("scatter", "scatter-adds (by-group sums of the change of centre)"),
    ("slice", "packing the products a_i a_j (slices, concatenation)"),
    ("concatenate", "packing the products a_i a_j (slices, concatenation)"),
    ("reduce", "elementwise work with a reduction (squared norms, sums)"),
    ("fusion", "other elementwise work (responsibilities, differences)"),
)


def group_of(name: str) -> str:
    return next((label for key, label in GROUPS if key in name), "other (loop control, copies)")


def profile(fast: bool) -> tuple[dict, float, int]:
    """``({op name: total µs}, wall ms per iteration, number of E-steps)`` of one run under the profiler."""
    import jax
    import jax.numpy as jnp

    import jaxgmm
    from jaxgmm.em import em_loop

    seed = sum(map(ord, "mid"))
    X = run.make_mixture_data(seed, 100_000, 16, 16)
    w, mu, cov = run.initial_params(X, 16, "full", seed)
    Xj = jnp.asarray(X)
    params = jaxgmm.GMMParams(*(jnp.asarray(a, jnp.float32) for a in (w, mu, cov)), "full")

    def fit():
        return jax.block_until_ready(em_loop(params, Xj, max_iter=ITERS, tol=0.0, fast=fast))

    fit()
    started = time.perf_counter()
    fit()
    wall_ms = 1000 * (time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            fit()
        trace = next(Path(folder).rglob("perfetto_trace.json.gz"))
        events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    totals = defaultdict(float)
    for event in events:
        name = event.get("name", "")
        # Thunk events only: not the executor's own spans nor Python's ($-prefixed).
        if event.get("ph") == "X" and not name.startswith(("$", "ThunkExecutor")) and name != "while":
            totals[name] += event.get("dur", 0.0)
    return dict(totals), wall_ms, ITERS + 1  # em_loop's E-steps: one per iteration and one after


def markdown(totals: dict, wall_ms: float, n_steps: int, rate: float) -> str:
    floor_ms = 4 * 100_000 * 16 * 16**2 / (rate * 1e9) * 1e3
    per_step = {name: us / 1000 / n_steps for name, us in totals.items()}
    by_group = defaultdict(float)
    for name, ms in per_step.items():
        by_group[group_of(name)] += ms
    measured = sum(per_step.values())
    lines = [
        "## Where *mid*'s iteration goes (profile)", "",
        "Produced by `benchmarks/profile_mid.py`: `em_loop` on *mid* (100,000 × 16, K = 16, full, default E-step) "
        "under `jax.profiler.trace`; each XLA:CPU operation's time summed from the trace, per EM iteration "
        f"({n_steps} E-steps: one per iteration and the final one). Wall time of the profiled call: "
        f"{wall_ms / n_steps:.1f} ms per iteration; the operations' times add up to {measured:.1f} ms (XLA runs "
        "independent operations on both cores at once, so the sum can exceed the wall time; shares below are of "
        f"the sum). The matrix-product floor is {floor_ms:.1f} ms per "
        f"iteration (numpy's float32 product at {rate:.0f} GFLOP/s, same run).", "",
        "| kind of work | ms per iteration | share |", "|---|---|---|",
    ]
    for label, ms in sorted(by_group.items(), key=lambda item: -item[1]):
        lines.append(f"| {label} | {ms:.1f} | {100 * ms / measured:.0f}% |")
    lines += ["", "The ten largest operations (XLA's names):", "", "| operation | ms per iteration |", "|---|---|"]
    for name, ms in sorted(per_step.items(), key=lambda item: -item[1])[:10]:
        lines.append(f"| `{name}` | {ms:.2f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="profile fast=True (printed, not written)")
    args = parser.parse_args(argv)
    run.strip_suite_compile_shortcuts(run.os.environ)
    rate = run.matmul_gflops()
    text = markdown(*profile(args.fast), rate)
    if not args.fast:
        (run.ROOT / "benchmarks" / "profile.md").write_text(text)
        (run.ROOT / "BENCHMARKS.md").write_text(run.report(run.ROOT / "benchmarks"))
    print(text)


if __name__ == "__main__":
    main()
