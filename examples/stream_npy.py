#!/usr/bin/env python3
"""Recipe 1 — a .npy file bigger than memory: exact EM, one pass over the file per iteration.

    python examples/stream_npy.py                       # writes a 2M x 16 example file first
    python examples/stream_npy.py data.npy -k 8 --block-size 200000

The file is memory-mapped and read block by block; resident memory stays
O(block size) however large the file. The result equals ``jaxgmm.fit`` on
the whole array (to the rounding of sums), restarts and weights included.
"""

import argparse
import resource
import tempfile
from pathlib import Path

import jax
import numpy as np

import jaxgmm


def write_example(path: Path, rows: int, features: int, components: int) -> None:
    """A mixture sample written chunk by chunk after a .npy header (never all in memory)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(components, features)) * 4
    with open(path, "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (rows, features)}
        np.lib.format.write_array_header_1_0(f, header)
        for i in range(0, rows, 500_000):
            m = min(500_000, rows - i)
            chunk = centres[rng.integers(components, size=m)] + rng.normal(size=(m, features))
            f.write(chunk.astype("<f4").tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", help=".npy file of shape (N, D); default: write an example")
    parser.add_argument("-k", "--components", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=None, help="rows per block")
    parser.add_argument("--n-init", type=int, default=2)
    parser.add_argument("--max-iter", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.path
        if path is None:
            path = Path(tmp) / "example.npy"
            write_example(path, 2_000_000, 16, args.components)
        shape = np.load(path, mmap_mode="r").shape
        print(f"{path}: {shape[0]:,} rows x {shape[1]} features")

        def progress(p: jaxgmm.StreamProgress) -> None:
            print(f"pass {p.iteration:3d}: {p.seconds:6.2f} s, mean log-likelihood per restart "
                  f"{np.array2string(p.log_likelihood, precision=5)}, {p.n_running} running")

        result = jaxgmm.fit_stream(
            jax.random.key(0), path, args.components, n_init=args.n_init, max_iter=args.max_iter,
            block_size=args.block_size, callback=progress,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"converged: {bool(result.converged)} after {int(result.n_iter)} passes; "
          f"log-likelihood {float(result.log_likelihood):.5f}; peak resident memory {peak:,.0f} MiB "
          "(JAX runtime and compilation included; it does not grow with the file)")
    print("weights:", np.round(np.asarray(result.params.weights), 3))


if __name__ == "__main__":
    main()
