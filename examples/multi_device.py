#!/usr/bin/env python3
"""Recipe 2 — several devices on one host: the rows sharded over the devices, statistics summed by XLA.

    python examples/multi_device.py                      # every local device (e.g. all GPUs)
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python examples/multi_device.py   # try it on CPU

``fit_sharded`` puts the rows on a ``("restarts", "data")`` device mesh; each
device computes the sufficient statistics of its rows and ``psum`` adds them,
so the result equals the single-device ``jaxgmm.fit``.
"""

import argparse

import jax
import numpy as np

import jaxgmm
from jaxgmm.distributed import data_mesh, fit_sharded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("-k", "--components", type=int, default=4)
    parser.add_argument("--n-init", type=int, default=2)
    parser.add_argument("--restart-devices", type=int, default=1, help="spread the restarts over this many devices")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.components, 8)) * 4
    X = (centres[rng.integers(args.components, size=args.rows)] + rng.normal(size=(args.rows, 8))).astype(np.float32)

    mesh = data_mesh(restart_devices=args.restart_devices)
    print(f"{len(jax.devices())} devices ({jax.devices()[0].device_kind}); mesh {dict(mesh.shape)}")
    sharded = fit_sharded(jax.random.key(0), X, args.components, n_init=args.n_init, mesh=mesh)
    single = jaxgmm.fit(jax.random.key(0), X, args.components, n_init=args.n_init)
    print(f"sharded: log-likelihood {float(sharded.log_likelihood):.6f} in {int(sharded.n_iter)} iterations")
    print(f"single : log-likelihood {float(single.log_likelihood):.6f} in {int(single.n_iter)} iterations")
    diff = np.max(np.abs(np.asarray(sharded.params.means) - np.asarray(single.params.means)))
    print(f"largest difference between the means: {diff:.2e}")


if __name__ == "__main__":
    main()
