"""The ``jaxgmm`` command line: fit, predict, select, sample, impute and demo.

Every failure (a missing file, a malformed CSV, non-numeric or NaN values,
bad options) is one line on stderr and a non-zero exit status, never a
traceback. Empty, ``NA``, ``NaN``, ``null`` … cells are missing values:
an error unless ``--missing marginalize`` (``fit``, ``predict``, ``select``)
or ``impute``. Progress goes to stderr, and only when it is a terminal and
``--quiet`` is not given.
"""

import argparse
import csv
import math
import os
import sys
from pathlib import Path

import numpy as np

from jaxgmm.models.names import ALL_COVARIANCE_TYPES, COVARIANCE_MODELS

__all__ = ["build_parser", "main"]  # the rest serves the subcommands

# Values that mean "missing" in a CSV cell; they are reported as NaN.
_MISSING = {"", "nan", "na", "n/a", "null", "none"}


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


# ----------------------------------------------------------------------------- data in and out


def read_data(path, columns=None, missing: str = "raise") -> tuple[np.ndarray, list[str]]:
    """``(X (N, D) float64, column names)`` from a CSV file with a header row, or a ``.npy`` file.

    ``columns``: a comma-separated string or a list of names to keep (for a
    ``.npy`` file the names are ``x0, x1, ...``); other columns may hold text.
    ``missing="marginalize"``: missing values are kept as NaN (a column with
    none observed is an error).
    """
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    if path.suffix == ".npy":
        cells = _read_npy(path)
        names = [f"x{j}" for j in range(cells.shape[1])]
    else:
        names, cells = _read_csv(path)
    if columns:
        wanted = [c.strip() for c in columns.split(",") if c.strip()] if isinstance(columns, str) else list(columns)
        missing = [c for c in wanted if c not in names]
        if missing:
            raise CLIError(f"{path}: no column {', '.join(map(repr, missing))}; columns are {', '.join(names)}")
        index = [names.index(c) for c in wanted]
        cells, names = cells[:, index], wanted
    if cells.shape[0] == 0:
        raise CLIError(f"{path}: no data rows")
    X = cells if cells.dtype == np.float64 else _to_numbers(path, cells, names)
    bad = ~np.isfinite(X) if missing == "raise" else np.isinf(X)
    if missing != "raise":
        empty = np.flatnonzero(np.isnan(X).all(axis=0))
        if empty.size:
            raise CLIError(f"{path}: column {names[empty[0]]!r} has no observed value; leave it out with --columns")
    if bad.any():
        row, col = np.argwhere(bad)[0]
        if missing != "raise":
            raise CLIError(f"{path}: infinite value in column {names[col]!r} (data row {row + 1})")
        raise CLIError(f"{path}: NaN or missing value in column {names[col]!r} (data row {row + 1}); remove or impute "
                       "it, or pass --missing marginalize")
    return X, names


def missing_summary(X: np.ndarray) -> str:
    """``"12 of 2,064 values missing (0.6 %), in 11 rows; 2 rows have none observed"``."""
    holes = np.isnan(X)
    text = (f"{int(holes.sum()):,} of {X.size:,} values missing ({100 * holes.mean():.1f} %), "
            f"in {int(holes.any(axis=1).sum()):,} rows")
    empty = int(holes.all(axis=1).sum())
    return text + (f"; {empty} rows have none observed (they contribute nothing)" if empty else "")


def _read_npy(path: Path) -> np.ndarray:
    try:
        X = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CLIError(f"{path}: not a readable .npy array ({' '.join(str(exc).split())})") from None
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise CLIError(f"{path}: expected a 2-D numeric array; got shape {X.shape}, dtype {X.dtype}")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise CLIError(f"{path}: expected real numbers; got dtype {X.dtype}")
    return np.asarray(X, dtype=np.float64)


def read_header(path) -> list[str] | None:
    """The column names of a CSV file (``None`` for a ``.npy`` file)."""
    path = Path(path)
    if path.suffix == ".npy":
        return None
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    return _read_csv(path)[0]


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """``(names, cells (N, D) of str)``; checks the shape of the table, not the values."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise CLIError(f"{path}: not a text CSV file") from None
    except csv.Error as exc:
        raise CLIError(f"{path}: malformed CSV ({exc})") from None
    rows = [r for r in rows if r and any(cell.strip() for cell in r)]
    if not rows:
        raise CLIError(f"{path}: empty file")
    names = [c.strip() for c in rows[0]]
    if any(_is_number(c) for c in names):
        raise CLIError(f"{path}: the first row must be a header of column names; got {','.join(rows[0])}")
    for i, row in enumerate(rows[1:]):
        if len(row) != len(names):
            raise CLIError(f"{path}: malformed CSV: line {i + 2} has {len(row)} fields, the header has {len(names)}")
    cells = np.array([[c.strip() for c in r] for r in rows[1:]], dtype=str).reshape(len(rows) - 1, len(names))
    return names, cells


def _to_numbers(path, cells, names) -> np.ndarray:
    X = np.empty(cells.shape)
    for (i, j), cell in np.ndenumerate(cells):
        if cell.lower() in _MISSING:
            X[i, j] = np.nan
        elif _is_number(cell):
            X[i, j] = float(cell)
        else:
            raise CLIError(f"{path}: non-numeric value {str(cell)!r} in column {names[j]!r} (line {i + 2})")
    return X


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_csv(path, header, rows) -> None:
    """Write rows under a header to ``path`` (``-`` or ``None``: stdout)."""
    if path in (None, "-"):
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return
    try:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None


def _standardize(X):
    center, scale = np.nanmean(X, axis=0), np.nanstd(X, axis=0)  # over the observed values
    if np.any(scale == 0):
        raise CLIError("--standardize: a column is constant (standard deviation 0)")
    return (X - center) / scale, center, scale


# ----------------------------------------------------------------------------- progress


class Progress:
    """One self-overwriting status line on a terminal; silent otherwise."""

    def __init__(self, stream=None, quiet=False):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._width = 0

    def show(self, text: str) -> None:
        if self.enabled:
            self.stream.write("\r" + text.ljust(self._width))
            self.stream.flush()
            self._width = len(text)

    def done(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


class _RestartTracker:
    """Turns per-restart E-step reports into "restarts done, iteration, log-likelihood"."""

    def __init__(self, progress, n_init, max_iter, tol):
        self.progress, self.n_init, self.max_iter, self.tol = progress, n_init, max_iter, tol
        self.iterations = [0] * n_init
        self.last = [-math.inf] * n_init
        self.done = [False] * n_init

    def report(self, restart, log_likelihood):
        r, ll = int(restart), float(log_likelihood)
        if self.done[r]:
            return  # under vmap, stopped restarts are still evaluated until all stop
        self.iterations[r] += 1
        if abs(ll - self.last[r]) < self.tol or self.iterations[r] >= self.max_iter or not math.isfinite(ll):
            self.done[r] = True
        self.last[r] = ll
        finite = [v for v in self.last if math.isfinite(v)]
        best = f"{max(finite):.6f}" if finite else "-"
        self.progress.show(
            f"EM: {sum(self.done)}/{self.n_init} restarts done, iteration {max(self.iterations)}, "
            f"best log-likelihood {best}"
        )


def fit_reporting(key, X, n_components, *, covariance_type, n_init, max_iter, tol, reg_covar, progress,
                  missing="raise", prior=None):
    """:func:`jaxgmm.fit`, showing progress on a terminal.

    With progress off (or missing values, or a prior) this is
    :func:`jaxgmm.fit`. With it on, the same restarts run under ``vmap`` with
    an E-step that reports each log-likelihood to the terminal through
    ``jax.debug.callback``.
    """
    from jaxgmm.fit import fit

    if not progress.enabled or (missing == "marginalize" and np.isnan(X).any()) or prior is not None:
        return fit(key, X, n_components, covariance_type=covariance_type, n_init=n_init, max_iter=max_iter,
                   tol=tol, reg_covar=reg_covar, missing=missing, prior=prior)
    import jax

    from jaxgmm.fit import _check_key, _check_options, _raise_if_failed
    from jaxgmm.validation import check_array

    key = _check_key(key)
    n_components, n_init, max_iter, tol, reg_covar = _check_options(
        n_components, covariance_type, n_init, "kmeans", max_iter, tol, reg_covar
    )
    X = check_array(X, min_samples=n_components)
    tracker = _RestartTracker(progress, n_init, max_iter, tol)
    result = _restarts_reporting(
        jax.random.split(key, n_init), X, tracker.report, n_components=n_components,
        covariance_type=covariance_type, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
    )
    jax.effects_barrier()
    progress.done()
    _raise_if_failed(result, "EM")
    return result


def _restarts_reporting(keys, X, report, *, n_components, covariance_type, max_iter, tol, reg_covar):
    import jax
    import jax.numpy as jnp

    from jaxgmm.em import e_step, iterate_em
    from jaxgmm.fit import _best_of
    from jaxgmm.init import initialize
    from jaxgmm.xla_options import jit

    @jit  # a closure over `report`; compiled once per call (one fit per command)
    def run(keys, X, tol, reg_covar):
        weight = jnp.ones(X.shape[0], X.dtype)

        def one_restart(index, key):
            params = initialize(key, X, n_components, covariance_type=covariance_type, reg_covar=reg_covar)

            def stats_fn(p):
                stats, ll = e_step(p, X, weight)
                jax.debug.callback(report, index, ll / X.shape[0])
                return stats, ll

            return iterate_em(stats_fn, params, jnp.sum(weight), max_iter=max_iter, tol=tol, reg_covar=reg_covar)

        return _best_of(jax.vmap(one_restart)(jnp.arange(keys.shape[0]), keys))

    return run(keys, X, tol, reg_covar)


# ----------------------------------------------------------------------------- commands


def _fit_and_report(X, names, k, args, progress, title):
    """Fit, print the table, write the figure if asked; returns the FitResult."""
    import jax

    from jaxgmm.density import predict
    from jaxgmm.params import n_parameters
    from jaxgmm.report import format_fit
    from jaxgmm.selection import bic

    if getattr(args, "method", "em") == "vb":
        return _fit_vb_and_report(X, names, k, args, title)
    missing = getattr(args, "missing", "raise")
    result = fit_reporting(
        jax.random.key(args.seed), X, k, covariance_type=args.covariance_type, n_init=args.n_init,
        max_iter=args.max_iter, tol=args.tol, reg_covar=args.reg_covar, progress=progress, missing=missing,
        prior=getattr(args, "prior", None),
    )
    Xj = jax.numpy.asarray(X, result.params.dtype)
    if missing == "marginalize" and np.isnan(X).any():  # the observed values' likelihood, over rows with one
        n_rows = int((~np.isnan(X)).any(axis=1).sum())
        bic_value = -2 * float(result.log_likelihood) * n_rows + n_parameters(result.params) * math.log(n_rows)
    else:
        bic_value = float(bic(result.params, Xj))
    prior = getattr(args, "prior", None)
    print(format_fit(result, names, bic=bic_value, log_posterior=None if prior is None else result.log_posterior))
    if args.plot:
        if X.shape[1] < 2:
            raise CLIError("--plot needs data with at least 2 columns")
        from jaxgmm.imputation import impute
        from jaxgmm.plotting import plot_fit

        labels = predict(result.params, Xj, missing=missing)
        shown = impute(result.params, X) if missing == "marginalize" else X  # incomplete rows at their imputed values
        objective = "mean log-likelihood" if prior is None else "mean log-posterior"
        fig = plot_fit(shown, labels, result.params, result.history, names, title=title, objective=objective)
        _savefig(fig, args.plot)
    return result


WEIGHT_PRIOR_NAMES = {"dp": "dirichlet_process", "dirichlet": "dirichlet_distribution"}
EFFECTIVE_WEIGHT = 0.01  # a component with less weight than this is switched off (reported, not removed)


def _fit_vb_and_report(X, names, k, args, title):
    """``fit --method vb``: variational Bayes, its table (with the effective number of components) and figure;
    returns the :class:`~jaxgmm.vb.VBFitResult`."""
    import jax

    from jaxgmm.report import format_params
    from jaxgmm.vb import effective_n_components, fit_vb

    result = fit_vb(jax.random.key(args.seed), X, k, covariance_type=args.covariance_type,
                    weight_prior=WEIGHT_PRIOR_NAMES[args.weight_prior], n_init=args.n_init,
                    max_iter=args.max_iter, tol=args.tol, reg_covar=args.reg_covar)
    params = result.posterior.params
    n_effective = int(effective_n_components(params.weights, EFFECTIVE_WEIGHT))
    print(format_params(params, names))
    print(f"\neffective components (weight >= {EFFECTIVE_WEIGHT:g}): {n_effective} of {k}")
    print(f"lower bound: {float(result.lower_bound):.4f}")
    print(f"VB iterations: {int(result.n_iter)}   converged: {'yes' if bool(result.converged) else 'no'}")
    if args.plot:
        if X.shape[1] < 2:
            raise CLIError("--plot needs data with at least 2 columns")
        from jaxgmm.density import weighted_log_prob
        from jaxgmm.params import GMMParams
        from jaxgmm.plotting import plot_fit

        # the effective components only (the others sit near the prior, weightless), each row labelled by them
        active = np.flatnonzero(np.asarray(params.weights) >= EFFECTIVE_WEIGHT)
        weights = np.asarray(params.weights)[active]
        shown = GMMParams(weights / weights.sum(), params.means[active],
                          params.model.storage.select_components(params.covariances, active), params.covariance_type)
        scores = weighted_log_prob(result.posterior.variational_params, jax.numpy.asarray(X, params.dtype))
        labels = np.asarray(scores)[:, active].argmax(axis=1)
        history = result.history / X.shape[0]  # the bound per row, on the log-likelihood's scale
        fig = plot_fit(X, labels, shown, history, names, title=f"{title}, variational Bayes",
                       objective="lower bound per row")
        _savefig(fig, args.plot)
    return result


def _check_method_options(args) -> None:
    """``--method``, ``--prior``, ``--weight-prior`` and ``--missing`` that do not combine."""
    if args.method == "vb":
        if args.prior is not None:
            raise CLIError("--prior is for --method em (MAP-EM); variational Bayes has its own prior")
        if args.missing != "raise":
            raise CLIError("--method vb needs complete data (--missing marginalize is for EM)")
    elif args.weight_prior != "dp":
        raise CLIError("--weight-prior is for --method vb")


def _savefig(fig, path):
    try:
        fig.savefig(path, dpi=120)
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot write figure {path}: {exc}") from None
    print(f"\nfigure written to {path}")


# .npy inputs larger than this are fitted by streamed EM (one pass over the file per iteration).
STREAM_THRESHOLD_BYTES = 1 << 30


def _streamed(args) -> bool:
    """Whether ``fit`` streams its input: a ``.npy`` file above the threshold, or ``--chunk-size`` given."""
    path = Path(args.data)
    if args.chunk_size is not None and args.chunk_size < 1:
        raise CLIError(f"--chunk-size must be >= 1; got {args.chunk_size}")
    if path.suffix != ".npy" or not path.is_file():
        if args.chunk_size is not None:
            raise CLIError("--chunk-size needs a .npy file")
        return False
    if args.chunk_size is None and path.stat().st_size <= STREAM_THRESHOLD_BYTES:
        return False
    if args.columns or args.standardize or args.plot:
        raise CLIError(
            "--columns, --standardize and --plot need the data in memory: not available for streamed .npy "
            f"input (files over {STREAM_THRESHOLD_BYTES >> 20} MiB, or with --chunk-size)"
        )
    return True


def _fit_streamed(args, progress):
    """``fit`` on a .npy file read block by block; returns (FitResult, column names, rows, BIC)."""
    import jax

    from jaxgmm.params import n_parameters
    from jaxgmm.streaming import fit_stream, stream_e_step

    def show(p):
        progress.show(f"EM pass {p.iteration} ({p.seconds:.1f} s): {p.n_running}/{args.n_init} restarts running, "
                      f"best log-likelihood {np.nanmax(p.log_likelihood):.6f}")

    result = fit_stream(
        jax.random.key(args.seed), args.data, args.k, covariance_type=args.covariance_type, n_init=args.n_init,
        max_iter=args.max_iter, tol=args.tol, reg_covar=args.reg_covar, block_size=args.chunk_size, callback=show,
        missing=args.missing,
    )
    progress.done()
    n_samples, n_features = np.load(args.data, mmap_mode="r").shape
    _, ll_sum = stream_e_step(result.params, args.data, block_size=args.chunk_size,  # one more pass, for the BIC
                              missing=args.missing)
    bic = -2 * float(ll_sum) + n_parameters(result.params) * math.log(n_samples)
    return result, [f"x{j}" for j in range(n_features)], n_samples, bic


def cmd_fit(args) -> int:
    from jaxgmm.io import save

    _check_method_options(args)
    if _streamed(args):
        if args.method != "em" or args.prior is not None:
            raise CLIError("streamed input (.npy files over the threshold, or --chunk-size) is fitted by plain EM: "
                           "--method vb and --prior need the data in memory")
        from jaxgmm.report import format_fit

        result, names, n_samples, bic = _fit_streamed(args, Progress(quiet=args.quiet))
        print(f"{args.data}: {n_samples} rows streamed from disk, columns {', '.join(names)}; K = {args.k}, "
              f"{args.covariance_type} covariances, {args.n_init} restart(s)\n")
        print(format_fit(result, names, bic=bic))
        save(args.out, result.params, feature_names=names)
        print(f"model written to {args.out}")
        return 0
    X, names = read_data(args.data, args.columns, args.missing)
    center = scale = None
    if args.standardize:
        X, center, scale = _standardize(X)
    progress = Progress(quiet=args.quiet)
    cov = args.covariance_type
    method = {"em": "", "vb": "; variational Bayes"}[args.method] + ("; MAP-EM, mclust's default prior"
                                                                     if args.prior else "")
    print(f"{args.data}: {X.shape[0]} rows, columns {', '.join(names)}; K = {args.k}, {cov} covariances, "
          f"{args.n_init} restart(s){'; standardized (table in standardized units)' if args.standardize else ''}"
          f"{method}")
    if args.missing == "marginalize":
        print(f"missing values: {missing_summary(X)}; EM maximises the likelihood of the observed values")
    print()
    result = _fit_and_report(X, names, args.k, args, progress, title=f"{Path(args.data).name}, K = {args.k}")
    params = result.posterior.params if args.method == "vb" else result.params  # VB: its point estimate
    try:
        save(args.out, params, feature_names=names, center=center, scale=scale)
    except OSError as exc:
        raise CLIError(f"cannot write model {args.out}: {exc.strerror or exc}") from None
    print(f"model written to {args.out}")
    return 0


def _read_model(path):
    from jaxgmm.io import read_model
    from jaxgmm.params import GMMParams

    if not Path(path).is_file():
        raise CLIError(f"{path}: no such file")
    saved = read_model(path)
    if not isinstance(saved.model, GMMParams):  # a saved estimator: use its parameters
        m = saved.model
        names = saved.feature_names or getattr(m, "feature_names_in_", None)
        params = GMMParams(m.weights_, m.means_, m.covariances_, m.covariance_type)
        return saved._replace(model=params, feature_names=None if names is None else tuple(names))
    return saved


def cmd_predict(args) -> int:
    import jax.numpy as jnp

    from jaxgmm.density import predict, predict_proba

    saved = _read_model(args.model)
    params = saved.model
    header = read_header(args.data)
    by_name = header is not None and saved.feature_names is not None and set(saved.feature_names) <= set(header)
    X, names = read_data(args.data, saved.feature_names if by_name else None, args.missing)
    if X.shape[1] != params.n_features:
        raise CLIError(f"{args.data} has {X.shape[1]} columns but the model was fitted to {params.n_features}")
    if saved.center is not None:
        X = (X - saved.center) / saved.scale
    Xj = jnp.asarray(X, params.dtype)
    if args.proba:
        proba = np.asarray(predict_proba(params, Xj, missing=args.missing), np.float64)
        header = [f"p{k}" for k in range(params.n_components)]
        write_csv(args.out, header, [[f"{v:.6g}" for v in row] for row in proba])
    else:
        write_csv(args.out, ["component"], [[int(v)] for v in np.asarray(predict(params, Xj, missing=args.missing))])
    report = sys.stdout if args.out not in (None, "-") else sys.stderr  # stdout may be the CSV
    if args.missing == "marginalize":
        print(f"missing values: {missing_summary(X)}; rows predicted from their observed values", file=report)
    if args.out not in (None, "-"):
        print(f"{X.shape[0]} {'probabilities' if args.proba else 'labels'} written to {args.out}")
    return 0


def cmd_impute(args) -> int:
    """Fill in the missing values of a data file with a saved model: conditional means, or one draw each."""
    import jax

    from jaxgmm.imputation import impute, sample_missing

    saved = _read_model(args.model)
    params = saved.model
    header = read_header(args.data)
    by_name = header is not None and saved.feature_names is not None and set(saved.feature_names) <= set(header)
    X, names = read_data(args.data, saved.feature_names if by_name else None, "marginalize")
    if X.shape[1] != params.n_features:
        raise CLIError(f"{args.data} has {X.shape[1]} columns but the model was fitted to {params.n_features}")
    center, scale = (0.0, 1.0) if saved.center is None else (saved.center, saved.scale)
    model_units = (X - center) / scale
    if args.sample:
        filled = sample_missing(jax.random.key(args.seed), params, model_units)
    else:
        filled = impute(params, model_units)
    completed = np.where(np.isnan(X), np.asarray(filled, np.float64) * scale + center, X)  # observed: as read
    write_csv(args.out, names, [[repr(float(v)) for v in row] for row in completed])
    report = sys.stdout if args.out not in (None, "-") else sys.stderr
    what = "drawn from their conditional distribution" if args.sample else "set to their conditional means"
    print(f"missing values: {missing_summary(X)}; {what}", file=report)
    if args.out not in (None, "-"):
        print(f"{X.shape[0]} completed rows written to {args.out}")
    return 0


def cmd_sample(args) -> int:
    import jax

    from jaxgmm.sampling import sample

    if args.n < 1:
        raise CLIError(f"-n must be >= 1; got {args.n}")
    saved = _read_model(args.model)
    X, _ = sample(jax.random.key(args.seed), saved.model, args.n)
    X = np.asarray(X, np.float64)
    if saved.center is not None:
        X = X * saved.scale + saved.center
    names = saved.feature_names or [f"x{j}" for j in range(X.shape[1])]
    write_csv(args.out, list(names), [[f"{v:.10g}" for v in row] for row in X])
    if args.out not in (None, "-"):
        print(f"{args.n} samples written to {args.out}")
    return 0


def _parse_k_range(text: str) -> list[int]:
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-", 1))
            ks = list(range(lo, hi + 1))
        else:
            ks = [int(v) for v in text.split(",")]
    except ValueError:
        raise CLIError(f"--k must look like 1-8 or 1,2,4; got {text!r}") from None
    if not ks or min(ks) < 1:
        raise CLIError(f"--k must name numbers of components >= 1; got {text!r}")
    return ks


def cmd_select(args) -> int:
    """The library's :func:`jaxgmm.select` on a data file: the best three, the criterion table, a figure."""
    import jax

    from jaxgmm.report import format_ranking, format_selection
    from jaxgmm.selection import select

    ks = _parse_k_range(args.k)
    types = [t.strip() for t in args.covariance_types.split(",") if t.strip()]
    unknown = [t for t in types if t not in ALL_COVARIANCE_TYPES]
    if unknown or not types:
        raise CLIError(f"--covariance-types: unknown {', '.join(unknown) or '(none given)'}; "
                       f"choose from {', '.join(ALL_COVARIANCE_TYPES)}")
    X, names = read_data(args.data, args.columns, args.missing)
    if args.standardize:
        X, _, _ = _standardize(X)
    if max(ks) > X.shape[0]:
        raise CLIError(f"--k goes up to {max(ks)} but {args.data} has only {X.shape[0]} rows")
    progress = Progress(quiet=args.quiet)
    sel = select(
        jax.random.key(args.seed), X, ks, types, criterion=args.criterion, n_init=args.n_init, init=args.init,
        max_iter=args.max_iter, tol=args.tol, reg_covar=args.reg_covar, missing=args.missing,
        progress=lambda done, total, t, k: progress.show(f"select: fitted K = {k}, {t} ({done}/{total})"),
    )
    progress.done()
    label = args.criterion.upper()
    starts = "mclust's hierarchical clustering start" if args.init == "hc" else f"{args.n_init} restart(s) each"
    print(f"{args.data}: {X.shape[0]} rows, columns {', '.join(names)}; {label} (lower is better), {starts}")
    if args.missing == "marginalize":
        print(f"missing values: {missing_summary(X)}; criteria from the observed values' likelihood")
    print()
    print(format_ranking(sel.ranked()[:3]))
    print()
    table = sel.criterion_table()
    print(format_selection(ks, {t: list(row) for t, row in zip(sel.covariance_types, table)}, label=label))
    failed = [c for c in sel.table if c.failed is not None]
    if failed:
        print(f"\n{len(failed)} fit(s) failed, e.g. K = {failed[0].n_components}, {failed[0].covariance_type}: "
              f"{failed[0].failed}")
    if args.plot:
        from jaxgmm.plotting import plot_criterion

        _savefig(plot_criterion(sel, title=f"{Path(args.data).name}: {label} by K and model"), args.plot)
    if args.out:
        from jaxgmm.io import save

        save(args.out, sel.params, feature_names=names)
        print(f"\nbest model saved to {args.out}")
    return 0


def cmd_demo(args) -> int:
    """Fit the bundled Old Faithful data with K=2, print the result and plot it."""
    from jaxgmm.datasets import FAITHFUL_COLUMNS, load_faithful

    X = load_faithful()
    print(f"Old Faithful: {X.shape[0]} eruptions, features {', '.join(FAITHFUL_COLUMNS)}; K = 2, full covariances\n")
    args.covariance_type, args.max_iter, args.tol, args.reg_covar = "full", 100, 1e-3, 1e-6
    _fit_and_report(X, list(FAITHFUL_COLUMNS), 2, args, Progress(quiet=args.quiet), title="Old Faithful, K = 2")
    return 0


# ----------------------------------------------------------------------------- parser


def _fit_options(p, *, covariance_type=True):
    if covariance_type:
        p.add_argument("--covariance-type", default="full", choices=ALL_COVARIANCE_TYPES, metavar="TYPE",
                       help="covariance type: full, tied, diag, spherical, or one of mclust's models "
                            "(EII VII EEI VEI EVI VVI EEE VEE EVE VVE EEV VEV EVV VVV; E/V for one feature); "
                            "default full")
    p.add_argument("--n-init", type=int, default=1, help="restarts, run in parallel (default 1)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--max-iter", type=int, default=100, help="EM iterations per restart (default 100)")
    p.add_argument("--tol", type=float, default=1e-3, help="convergence threshold (default 1e-3)")
    p.add_argument("--reg-covar", type=float, default=1e-6, help="added to covariance diagonals (default 1e-6)")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def _missing_option(p):
    p.add_argument("--missing", default="raise", choices=("raise", "marginalize"),
                   help="empty/NA cells: raise an error (default), or marginalize: treat them as missing at "
                        "random and use each row's observed values")


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxgmm`` command's parser: one subparser per subcommand, each with its options.

    Examples
    --------
    >>> args = build_parser().parse_args(["sample", "model.npz", "-n", "10"])
    >>> args.command, args.n, args.seed
    ('sample', 10, 0)
    """
    parser = _Parser(prog="jaxgmm", description="Gaussian mixtures fitted by EM in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fit", help="fit a mixture to a CSV (with header) or .npy file")
    p.add_argument("data", help="CSV file with a header row, or a .npy array")
    p.add_argument("-k", type=int, required=True, help="number of components")
    _fit_options(p)
    p.add_argument("--columns", help="comma-separated column names to use (default all)")
    p.add_argument("--standardize", action="store_true", help="fit (x - mean) / sd; saved with the model")
    p.add_argument("--out", required=True, help="model file to write (.npz)")
    p.add_argument("--plot", help="figure to write (.png)")
    p.add_argument("--chunk-size", type=int, help="stream a .npy file in blocks of this many rows "
                   f"(automatic above {STREAM_THRESHOLD_BYTES >> 20} MiB)")
    _missing_option(p)
    p.add_argument("--prior", choices=("default",),
                   help="MAP-EM with a conjugate prior: default is mclust's priorControl() (keeps components from "
                        "collapsing; not for VEE, EVE, VVE, EVV)")
    p.add_argument("--method", default="em", choices=("em", "vb"),
                   help="em: maximum likelihood (or MAP with --prior), the default; vb: variational Bayes "
                        "(scikit-learn's BayesianGaussianMixture; full, tied, diag, spherical), which switches "
                        "components the data do not need off: -k is then an upper bound")
    p.add_argument("--weight-prior", default="dp", choices=tuple(WEIGHT_PRIOR_NAMES),
                   help="with --method vb: dp, a Dirichlet process (stick-breaking; default), or dirichlet, "
                        "a Dirichlet distribution")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("predict", help="label (or give probabilities for) the rows of a data file")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--proba", action="store_true", help="write component probabilities instead of labels")
    p.add_argument("--out", help="CSV to write (default stdout)")
    _missing_option(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("impute", help="fill in the missing values of a data file with a saved model")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--out", help="CSV to write (default stdout): the model's columns, observed values as read")
    p.add_argument("--sample", action="store_true",
                   help="draw each row's missing values from their conditional distribution (multiple "
                        "imputation: one draw per --seed) instead of taking their conditional means")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for --sample (default 0)")
    p.set_defaults(func=cmd_impute)

    p = sub.add_parser("select", help="BIC/ICL table over numbers of components and covariance models")
    p.add_argument("data")
    p.add_argument("--k", default="1-9", help="numbers of components: 1-9 or 1,2,4 (default 1-9, as mclust)")
    p.add_argument("--covariance-types", default=",".join(COVARIANCE_MODELS),
                   help="comma-separated (default mclust's 14 models; full,tied,diag,spherical also work)")
    p.add_argument("--criterion", default="bic", choices=("bic", "icl", "aic"), help="default bic")
    p.add_argument("--init", default="kmeans", choices=("kmeans", "k-means++", "random", "random_from_data", "hc"),
                   help="initialiser; hc: mclust's hierarchical clustering start (default kmeans)")
    p.add_argument("--out", help="save the best model (.npz)")
    _fit_options(p, covariance_type=False)
    p.add_argument("--columns", help="comma-separated column names to use (default all)")
    p.add_argument("--standardize", action="store_true", help="fit (x - mean) / sd")
    p.add_argument("--plot", help="figure of the criterion against K to write (.png)")
    _missing_option(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("sample", help="draw samples from a saved model")
    p.add_argument("model")
    p.add_argument("-n", type=int, required=True, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--out", help="CSV to write (default stdout)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("demo", help="fit the bundled Old Faithful data and show the result")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--n-init", type=int, default=4, help="restarts run in parallel (default 4)")
    p.add_argument("--plot", default="faithful.png", help="figure path (default faithful.png); '' for none")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    """Run the ``jaxgmm`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Errors (a missing file, a malformed CSV, bad options, the library's ``ValueError``) are one
    line on stderr and status 1, never a traceback.

    Examples
    --------
    >>> import contextlib, io, os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> data, model = os.path.join(folder, "data.npy"), os.path.join(folder, "model.npz")
    >>> np.save(data, np.random.default_rng(0).normal(size=(50, 2)))
    >>> with contextlib.redirect_stdout(io.StringIO()):  # the fit's table
    ...     status = main(["fit", data, "-k", "1", "--out", model, "--quiet"])
    >>> status, os.path.exists(model)
    (0, True)
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `jaxgmm predict ... | head`: stop quietly
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as exc:
        message = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    except Exception as exc:  # noqa: BLE001 - CLIError, the library's ValueErrors, anything: never a traceback
        message = str(exc) if isinstance(exc, (CLIError, ValueError, TypeError, ImportError)) else (
            f"unexpected {type(exc).__name__}: {exc}"
        )
    print(f"jaxgmm {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
