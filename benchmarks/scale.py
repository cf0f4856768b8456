#!/usr/bin/env python3
"""Scale-out benchmark rows: streamed vs in-memory EM, and 4 devices vs 1, per pass.

    python benchmarks/scale.py                     # 10M x 16 file, K=8 full, 3 passes
    python benchmarks/scale.py --rows 1000000      # quicker

Each measurement runs in its own subprocess (device counts are fixed when JAX
starts; peak memory is per process). Peak resident memory is Linux's VmHWM,
reset after imports and compilation, so it is the fit's own growth.
Prints one line per row and a JSON summary (``--json`` writes it to a file).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import json, sys, time
    import jax, jax.numpy as jnp, numpy as np, jaxgmm
    from jaxgmm.distributed import data_mesh, fit_sharded

    def vm(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return vm("VmRSS")

    mode, path, k, passes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    head = np.load(path, mmap_mode="r")
    n, d = head.shape
    start = jaxgmm.initialize(jax.random.key(0), jnp.asarray(head[:20000]), k, covariance_type="full")
    del head
    options = dict(init=start, max_iter=passes, tol=0.0)
    out = {"mode": mode, "rows": n, "features": d, "components": k, "devices": len(jax.devices()),
           "device": jax.devices()[0].device_kind}
    if mode == "streamed":
        small = path.replace(".npy", "_small.npy")
        np.save(small, np.load(path, mmap_mode="r")[:50000])
        jaxgmm.fit_stream(jax.random.key(0), small, k, **options)  # compile at the same block shape
        before = reset_peak()
        times = []
        jaxgmm.fit_stream(jax.random.key(0), path, k, callback=lambda p: times.append(p.seconds), **options)
        out["seconds_per_pass"] = float(np.median(times))
    else:
        X = np.load(path)  # the whole array in memory
        if mode == "sharded":
            fit = lambda: fit_sharded(jax.random.key(0), X, k, mesh=data_mesh(), **options)
        else:  # EM itself on a device array: no validation or copies in the timing
            Xj = jnp.asarray(X)
            fit = lambda: jaxgmm.em_loop(start, Xj, max_iter=passes, tol=0.0)
        fit()  # compile
        before = reset_peak()
        t = time.perf_counter()
        jax.block_until_ready(fit())
        out["seconds_per_pass"] = (time.perf_counter() - t) / passes
    out["peak_rss_growth_bytes"] = vm("VmHWM") - before
    out["peak_rss_bytes"] = vm("VmHWM")
    out["file_bytes"] = n * d * 4
    print("RESULT " + json.dumps(out))
    """
)


def run(mode, path, k, passes, devices=1):
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    proc = subprocess.run([sys.executable, "-c", WORKER, mode, str(path), str(k), str(passes)], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--sharded-rows", type=int, default=1_000_000, help="rows for the 4-device vs 1-device rows")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(args.components, args.features)) * 4
        path = Path(tmp) / "data.npy"
        X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(args.rows, args.features))
        for i in range(0, args.rows, 1_000_000):  # written in chunks: this process stays small too
            m = min(1_000_000, args.rows - i)
            X[i : i + m] = centres[rng.integers(args.components, size=m)] + rng.normal(size=(m, args.features))
        X.flush()
        small = Path(tmp) / "sharded.npy"
        np.save(small, np.asarray(X[: args.sharded_rows]))
        del X
        rows.append(run("streamed", path, args.components, args.passes))
        rows.append(run("in-memory", path, args.components, args.passes))
        rows.append(run("sharded", small, args.components, args.passes, devices=1))
        rows.append(run("sharded", small, args.components, args.passes, devices=4))
    for r in rows:
        print(f"{r['mode']:>10} {r['devices']} x {r['device']:<5} N={r['rows']:>10,} D={r['features']} "
              f"K={r['components']} full: {r['seconds_per_pass']:.3f} s/pass, peak RSS growth "
              f"{r['peak_rss_growth_bytes'] / 2**20:,.0f} MiB, peak RSS {r['peak_rss_bytes'] / 2**20:,.0f} MiB "
              f"(file {r['file_bytes'] / 2**20:,.0f} MiB)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
