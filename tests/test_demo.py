"""The demo a new user runs first: the installed command fits Old Faithful, prints and plots."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import jaxgmm


def test_bundled_data_is_old_faithful():
    X = jaxgmm.load_faithful()
    assert X.shape == (272, 2)
    # R's datasets::faithful: mean eruption 3.487783 min, mean waiting 70.89706 min.
    np.testing.assert_allclose(X.mean(0), [3.487783, 70.89706], rtol=1e-6)


def test_demo_prints_and_plots(tmp_path):
    exe = shutil.which("jaxgmm", path=str(Path(sys.executable).parent))
    assert exe, "the jaxgmm console script is not installed"
    figure = tmp_path / "faithful.png"
    out = subprocess.run([exe, "demo", "--plot", str(figure)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for expected in ("weight", "mean eruptions", "mean waiting", "log-likelihood", "EM iterations", "converged"):
        assert expected in out.stdout
    data = figure.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
