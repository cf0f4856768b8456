"""The teaching notebooks run top to bottom, fresh, and the committed ones hold what notebooks/build.py writes.

Each notebook asserts the claims its prose makes, so running it is the test.
The notebooks enable float64 inside their own kernel (a separate process), so
they run once, in the float32 pass of ``python3 dev.py test``.
"""

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import X64

pytest.importorskip("nbclient", reason="the notebook runner is in the test extra: pip install -e .[test]")
pytest.importorskip("ipykernel", reason="the notebook kernel is in the test extra: pip install -e .[test]")
import nbformat  # noqa: E402  (after the skips: nbformat comes with nbclient)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOKS / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

once = pytest.mark.skipif(X64, reason="the notebooks run once, in the float32 pass (they set float64 in their own kernel)")


def _sources(nb):
    return [(cell.cell_type, cell.source, cell.get("metadata", {}).get("readme_figure")) for cell in nb.cells]


# The kernel client runs in a child process: jupyter_client leaves asyncio/zmq
# threads behind, and with them in the test process XLA's compiler crashed in
# later tests (seen as segfaults in test_sklearn_estimator).
RUN_FRESH = textwrap.dedent(
    """
    import importlib.util, json, sys
    from pathlib import Path
    import nbformat
    spec = importlib.util.spec_from_file_location("notebook_build", Path(sys.argv[1]) / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    nb = build.notebook(build.NOTEBOOKS[sys.argv[2]])
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    build.execute(nb, timeout=300)  # raises CellExecutionError, naming the cell, on any failed assert
    print(json.dumps(dict(kernel_python=nb.cells[-1].outputs[0]["text"].strip(),
                          figures=len(build.readme_figures(nb)))))
    """
)


@once
@pytest.mark.slow
@pytest.mark.parametrize("name", list(build.NOTEBOOKS))
def test_notebook_runs_fresh(name):
    out = subprocess.run([sys.executable, "-c", RUN_FRESH, str(NOTEBOOKS), name], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(report["kernel_python"]).resolve() == Path(sys.executable).resolve()  # this environment's interpreter
    assert report["figures"]  # the notebook's figure came out


@pytest.mark.parametrize("name", list(build.NOTEBOOKS))
def test_committed_notebook_is_built_and_executed(name):
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert _sources(committed) == _sources(build.notebook(build.NOTEBOOKS[name])), (
        f"{name} differs from notebooks/build.py: run `python notebooks/build.py --execute`"
    )
    code = [cell for cell in committed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), f"{name} is committed without outputs"
    assert not any(out.get("output_type") == "error" for cell in code for out in cell.outputs)
    for figure, png in build.readme_figures(committed).items():
        assert (NOTEBOOKS / "figures" / figure).read_bytes() == png, f"notebooks/figures/{figure} is stale"
