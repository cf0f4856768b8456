"""The installed ``jaxgmm`` command, end to end on real files, including the failure cases."""

import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxgmm
from jaxgmm import cli
from conftest import rtol_for, scipy_mean_log_likelihood

EXE = shutil.which("jaxgmm", path=str(Path(sys.executable).parent))
TRUE_MEANS = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 2.0], [0.0, 5.0, -3.0]])


def run(*args, cwd):
    assert EXE, "the jaxgmm console script is not installed"
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """Three well-separated clusters in 3-D with known labels, as CSV (with a text column) and .npy."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [150, 100, 120])
    X = TRUE_MEANS[labels] + rng.normal(size=(370, 3)) * np.array([1.0, 0.5, 0.8])[labels, None]
    root = tmp_path_factory.mktemp("cli")
    with open(root / "blobs.csv", "w") as f:
        f.write("a,b,c,name\n")
        for row in X:
            f.write(",".join(f"{v:.17g}" for v in row) + ",point\n")
    np.save(root / "blobs.npy", X)
    return root, X, labels


def test_fit_predict_sample_select_end_to_end(blobs):
    root, X, labels = blobs
    out = run("fit", "blobs.csv", "-k", 3, "--columns", "a,b,c", "--standardize", "--n-init", 2,
              "--out", "model.npz", "--plot", "fit.png", cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # not a terminal: no progress
    for expected in ("weight", "mean a", "log-likelihood", "BIC", "EM iterations", "converged: yes", "model.npz"):
        assert expected in out.stdout
    assert "log-posterior" not in out.stdout  # no prior, no posterior
    assert is_png(root / "fit.png")

    # The saved model, back in data units, found the true clusters (an independent reference).
    saved = jaxgmm.io.read_model(root / "model.npz")
    assert saved.feature_names == ("a", "b", "c")
    means = np.asarray(saved.model.means, np.float64) * saved.scale + saved.center
    order = [int(np.argmin(np.linalg.norm(means - m, axis=1))) for m in TRUE_MEANS]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(means[order], TRUE_MEANS, atol=0.25)
    # The printed BIC is scikit-learn's formula for the saved parameters on the standardised data.
    Z = (X - saved.center) / saved.scale
    n_params = 3 * 6 + 3 * 3 + 2
    expected_bic = -2 * jaxgmm.score(saved.model, Z.astype(saved.model.dtype)) * len(Z) + n_params * np.log(len(Z))
    printed = float(out.stdout.split("BIC:")[1].split()[0])
    np.testing.assert_allclose(printed, expected_bic, rtol=rtol_for(float64=1e-6, float32=1e-4))
    # The printed log-likelihood is that of the saved parameters (scipy's density), not of the last E-step.
    printed_ll = float(out.stdout.split("mean log-likelihood per sample:")[1].split()[0])
    np.testing.assert_allclose(printed_ll, scipy_mean_log_likelihood(saved.model, Z), rtol=1e-6)

    # predict: labels (from the .npy, columns matched by position) and probabilities (from the CSV, by name).
    out = run("predict", "model.npz", "blobs.npy", "--out", "labels.csv", cwd=root)
    assert out.returncode == 0, out.stderr
    header, predicted = read_csv(root / "labels.csv")
    assert header == ["component"]
    predicted = predicted[:, 0].astype(int)
    assert np.mean(np.asarray(order)[labels] == predicted) > 0.97
    out = run("predict", "model.npz", "blobs.csv", "--proba", cwd=root)
    assert out.returncode == 0, out.stderr
    rows = list(csv.reader(io.StringIO(out.stdout)))
    proba = np.array(rows[1:], dtype=float)
    assert rows[0] == ["p0", "p1", "p2"] and proba.shape == (370, 3)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1), predicted)

    # sample: in data units, with the fitted weights and means.
    out = run("sample", "model.npz", "-n", 6000, "--seed", 3, "--out", "samples.csv", cwd=root)
    assert out.returncode == 0, out.stderr
    header, samples = read_csv(root / "samples.csv")
    assert header == ["a", "b", "c"] and samples.shape == (6000, 3)
    nearest = np.argmin(((samples[:, None] - means[None]) ** 2).sum(-1), axis=1)
    weights = np.asarray(saved.model.weights, np.float64)
    np.testing.assert_allclose(np.bincount(nearest, minlength=3) / 6000, weights, atol=0.03)

    # select (the library's select): the true K has the lowest BIC, the table marks it, the best
    # three are ranked, the figure and the chosen model are written.
    out = run("select", "blobs.npy", "--k", "2,3", "--covariance-types", "full,VEV", "--plot", "bic.png",
              "--out", "best.npz", cwd=root)
    assert out.returncode == 0, out.stderr
    assert "best: K = 3, covariance_type = " in out.stdout and out.stdout.count("*") == 1
    ranking = out.stdout.split("rank")[1].splitlines()[1:4]
    assert [line.split()[0] for line in ranking] == ["1", "2", "3"]
    assert is_png(root / "bic.png")
    best = jaxgmm.load(root / "best.npz")
    assert best.n_components == 3 and best.covariance_type in ("full", "VEV")
    assert f"{best.covariance_type:>5}   3" in ranking[0]
    out = run("select", "blobs.npy", "--k", "3", "--covariance-types", "EII", "--criterion", "icl", cwd=root)
    assert out.returncode == 0 and "ICL (lower is better)" in out.stdout and "(ICL " in out.stdout, out.stderr


def test_failures_are_one_line_on_stderr_with_a_non_zero_exit(blobs, tmp_path):
    root, X, _ = blobs
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    (tmp_path / "text.csv").write_text("a,b\n1,2\n3,x\n")
    (tmp_path / "nan.csv").write_text("a,b\n1,2\n3,nan\n4,5\n")
    (tmp_path / "model.npz").write_bytes(b"PK\x03\x04 not really a zip file")
    np.save(tmp_path / "x.npy", X)
    cases = [
        (("fit", "missing.csv", "-k", 2, "--out", "m.npz"), "no such file"),
        (("fit", "ragged.csv", "-k", 1, "--out", "m.npz"), "malformed CSV"),
        (("fit", "text.csv", "-k", 1, "--out", "m.npz"), "non-numeric value 'x' in column 'b'"),
        (("fit", "nan.csv", "-k", 1, "--out", "m.npz"), "NaN"),
        (("fit", "x.npy", "-k", 2, "--columns", "zz", "--out", "m.npz"), "no column 'zz'"),
        (("fit", "x.npy", "-k", 2, "--covariance-type", "banana", "--out", "m.npz"), "invalid choice"),
        (("fit", "x.npy", "--out", "m.npz"), "required: -k"),
        (("fit", "x.npy", "-k", 0, "--out", "m.npz"), "n_components"),
        (("predict", "model.npz", "x.npy"), "not a valid jaxgmm model file"),
        (("select", "x.npy", "--k", "3-x"), "--k"),
        (("select", "x.npy", "--covariance-types", "VVX"), "--covariance-types: unknown VVX"),
        (("select", "x.npy", "--k", "1-400", "--covariance-types", "EII"), "only 370 rows"),
        (("sample", "model.npz", "-n", 0), "-n must be >= 1"),
    ]
    for args, message in cases:
        out = run(*args, cwd=tmp_path)
        assert out.returncode != 0, args
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr, (args, out.stderr)
    assert not (tmp_path / "m.npz").exists()


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_shows_on_a_terminal_only_and_changes_nothing(dtype):
    X = jaxgmm.load_faithful()
    settings = dict(covariance_type="full", n_init=3, max_iter=100, tol=1e-3, reg_covar=1e-6)
    terminal = FakeTerminal()
    shown = cli.fit_reporting(jax.random.key(1), X, 2, progress=cli.Progress(terminal), **settings)
    assert "3/3 restarts done" in terminal.getvalue() and "best log-likelihood" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r")  # the status line is cleared at the end
    plain = jaxgmm.fit(jax.random.key(1), X, 2, **settings)
    rtol = rtol_for(dtype, 1e-12, 1e-5)
    for a, b in zip(jax.tree.leaves(shown.params), jax.tree.leaves(plain.params)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    assert int(shown.n_iter) == int(plain.n_iter)
    for quiet, stream in ((True, FakeTerminal()), (False, io.StringIO())):
        cli.Progress(stream, quiet=quiet).show("x")
        assert stream.getvalue() == ""


def test_fit_by_variational_bayes_and_with_a_prior(blobs, tmp_path, capsys):
    root, X, labels = blobs
    # --method vb: K = 8 is an upper bound; the Dirichlet process keeps the 3 clusters the data hold (the best
    # of 4 restarts: a single one can stop at a local optimum with a cluster split in two)
    assert cli.main(["fit", str(root / "blobs.npy"), "-k", "8", "--method", "vb", "--n-init", "4", "--max-iter", "500",
                     "--quiet", "--out", str(tmp_path / "vb.npz"), "--plot", str(tmp_path / "vb.png")]) == 0
    out = capsys.readouterr().out
    assert "variational Bayes" in out and "effective components (weight >= 0.01): 3 of 8" in out
    assert is_png(tmp_path / "vb.png")
    saved = jaxgmm.io.read_model(tmp_path / "vb.npz").model
    kept = np.asarray(saved.weights) >= 0.01
    means = np.asarray(saved.means, np.float64)[kept]
    order = [int(np.argmin(np.linalg.norm(means - m, axis=1))) for m in TRUE_MEANS]
    np.testing.assert_allclose(means[order], TRUE_MEANS, atol=0.25)
    np.testing.assert_allclose(np.asarray(saved.weights)[kept][order], np.bincount(labels) / len(labels), atol=0.02)

    # --prior default: rows on 3 points and K = 3 collapse EM without reg_covar; MAP-EM stays finite
    (tmp_path / "dup.csv").write_text("a,b\n" + "1,2\n3,5\n1,2\n2,1\n" * 5)
    common = ["fit", str(tmp_path / "dup.csv"), "-k", "3", "--reg-covar", "0", "--quiet"]
    assert cli.main(common + ["--out", str(tmp_path / "ml.npz")]) == 1
    assert cli.main(common + ["--prior", "default", "--out", str(tmp_path / "map.npz")]) == 0
    out = capsys.readouterr().out
    assert "MAP-EM" in out and "mean log-posterior per sample" in out
    saved = jaxgmm.io.read_model(tmp_path / "map.npz").model
    assert np.all(np.isfinite(np.asarray(saved.covariances)))
    assert np.all(np.linalg.eigvalsh(np.asarray(saved.covariances, np.float64)) > 0)

    for extra, message in [(["--method", "vb", "--prior", "default"], "--prior is for --method em"),
                           (["--weight-prior", "dirichlet"], "--weight-prior is for --method vb"),
                           (["--method", "vb", "--covariance-type", "VEV"], "scikit-learn's covariance types")]:
        assert cli.main(["fit", str(root / "blobs.npy"), "-k", "2", "--quiet", "--out", str(tmp_path / "x.npz"),
                         *extra]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
