"""The ``jaxgmm`` command line."""

import argparse
import sys


def demo(args) -> int:
    """Fit the bundled Old Faithful data with K=2, print the result and plot it."""
    import jax

    from jaxgmm.datasets import FAITHFUL_COLUMNS, load_faithful
    from jaxgmm.density import predict
    from jaxgmm.fit import fit
    from jaxgmm.report import format_fit

    X = load_faithful()
    result = fit(jax.random.key(args.seed), X, 2, covariance_type="full", n_init=args.n_init)
    print(f"Old Faithful: {X.shape[0]} eruptions, features {', '.join(FAITHFUL_COLUMNS)}; K = 2, full covariances\n")
    print(format_fit(result, FAITHFUL_COLUMNS))
    if args.plot:
        from jaxgmm.plotting import plot_fit

        labels = predict(result.params, jax.numpy.asarray(X, result.params.dtype))
        fig = plot_fit(X, labels, result.params, result.history, FAITHFUL_COLUMNS, title="Old Faithful, K = 2")
        fig.savefig(args.plot, dpi=120)
        print(f"\nfigure written to {args.plot}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="jaxgmm", description="Gaussian mixtures fitted by EM in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="fit the bundled Old Faithful data and show the result")
    p_demo.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p_demo.add_argument("--n-init", type=int, default=4, help="restarts run in parallel (default 4)")
    p_demo.add_argument("--plot", default="faithful.png", help="figure path (default faithful.png); '' for none")
    p_demo.set_defaults(func=demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
