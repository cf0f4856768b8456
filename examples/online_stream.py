#!/usr/bin/env python3
"""Online (stepwise) EM on a stream, against batch EM and mini-batch gradient ascent.

    python examples/online_stream.py

Stepwise EM (Cappé & Moulines, 2009) reads each mini-batch once and keeps a
running average of sufficient statistics with step sizes γ_t = (t + t0)^-κ.
Mini-batch gradient ascent (Adam on the log-likelihood) sees the same number
of rows. Both are scored on held-out data against batch EM on all the rows.
"""

import jax
import numpy as np
import optax

import jaxgmm


def main() -> None:
    rng = np.random.default_rng(0)
    k, d, n, batch = 4, 4, 100_000, 500
    centres = rng.normal(size=(k, d)) * 3
    draw = lambda m: (centres[rng.integers(k, size=m)] + rng.normal(size=(m, d))).astype(np.float32)  # noqa: E731
    X, held_out = draw(n), draw(20_000)

    stream = (X[i : i + batch] for i in range(0, n, batch))  # read once
    online = jaxgmm.fit_online(jax.random.key(0), stream, k, batch_size=batch, kappa=0.6)
    full = jaxgmm.fit(jax.random.key(0), X, k)
    start = jaxgmm.initialize(jax.random.key(0), jax.numpy.asarray(X[:batch]), k)  # as stepwise EM starts
    gradient = jaxgmm.fit_gradient(start, X, optimizer=optax.adam(3e-2), num_steps=n // batch,
                                   key=jax.random.key(1), batch_size=batch)
    print(f"{n:,} rows in mini-batches of {batch}; held-out mean log-likelihood:")
    for name, params in [("batch EM (all rows, many passes)", full.params),
                         ("stepwise EM (one pass)", online.params),
                         ("mini-batch Adam (one pass)", gradient.params)]:
        print(f"  {name:34s} {float(jaxgmm.score(params, held_out)):.5f}")


if __name__ == "__main__":
    main()
