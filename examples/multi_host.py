#!/usr/bin/env python3
"""Recipe 3 — several hosts (or processes): the same program everywhere, each with its own rows.

On each of N hosts (process ids 0..N-1, host 0 reachable at HOST0):

    python examples/multi_host.py --coordinator HOST0:12345 --num-processes N --process-id I

Try it on one machine with two local processes on loopback (CPU, gloo collectives):

    python examples/multi_host.py --local 2

Every process calls ``jax.distributed.initialize``, loads *its own* share of
the rows and calls ``fit_sharded`` with the same key and options; XLA's
collectives sum the statistics across processes, and every process gets the
fit of all the rows.
"""

import argparse
import socket
import subprocess
import sys

import numpy as np


def own_rows(process_id: int, rows_per_process: int) -> np.ndarray:
    """This process's share of the data (here drawn with a per-process seed; in practice, your files)."""
    centres = np.random.default_rng(0).normal(size=(3, 4)) * 4  # the same mixture everywhere
    rng = np.random.default_rng(1 + process_id)
    return (centres[rng.integers(3, size=rows_per_process)] + rng.normal(size=(rows_per_process, 4))).astype(np.float32)


def worker(args) -> None:
    import jax

    jax.distributed.initialize(
        coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id,
        initialization_timeout=120,
    )
    from jaxgmm.distributed import fit_sharded

    X = own_rows(args.process_id, args.rows)
    result = fit_sharded(jax.random.key(0), X, 3, n_init=2)
    if jax.process_index() == 0:
        print(f"{jax.process_count()} processes, {len(jax.devices())} devices, "
              f"{args.rows * jax.process_count():,} rows in all")
        print(f"log-likelihood {float(result.log_likelihood):.6f} after {int(result.n_iter)} iterations")
        print("weights:", np.round(np.asarray(result.params.weights), 4))
    jax.distributed.shutdown()


def launch_local(n: int, rows: int) -> int:
    """Start ``n`` processes of this script on 127.0.0.1 and wait for them (10 minutes at most)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen([sys.executable, __file__, "--coordinator", f"127.0.0.1:{port}",
                          "--num-processes", str(n), "--process-id", str(i), "--rows", str(rows)])
        for i in range(n)
    ]
    try:
        return max(p.wait(timeout=600) for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coordinator", help="HOST:PORT of process 0")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per process")
    parser.add_argument("--local", type=int, metavar="N", help="run N processes on this machine (loopback)")
    args = parser.parse_args()
    if args.local:
        return launch_local(args.local, args.rows)
    if args.coordinator is None or args.num_processes is None or args.process_id is None:
        parser.error("give --coordinator, --num-processes and --process-id, or --local N")
    worker(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
