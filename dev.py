#!/usr/bin/env python3
"""Set up a virtual environment and run jaxgmm's demo or its test suite.

Needs only Python 3.11+ and its standard library:

    python3 dev.py demo    # install jaxgmm[plot] into .venv, fit Old Faithful, print and plot
    python3 dev.py test    # install jaxgmm[test] into .venv, run the suite in float32 and float64
    python3 dev.py docs    # install jaxgmm[docs] into .venv, build the site into docs/_build/html

``test`` runs every test file (and the doctests) in a pytest process of its
own, two at a time, first with float32 then with ``JAX_ENABLE_X64=1`` (x64
is never toggled inside a process), with the compile shortcuts of
:data:`SHORTCUT_XLA_FLAGS`; the tests marked ``users_compile`` run in one more
process per pass, compiled as users' programs are. One process per file keeps
compiled programs from piling up in a single process (a long single-process
run has crashed inside XLA's CPU compiler here) and uses both cores.
Arguments after ``test`` are passed to one plain pytest run per pass instead
(``python3 dev.py test -k sklearn``), with the shortcuts.
"""

import os
import subprocess
import sys
import tempfile
import venv
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PARALLEL = 2
DOCS_HTML = ROOT / "docs" / "_build" / "html"

# The suite is compile-bound (hundreds of small programs, each run once or
# twice), so it compiles the same programs more cheaply: XLA's cheaper backend
# passes (JAX_DISABLE_MOST_OPTIMIZATIONS), XLA:CPU's older loop emitters
# instead of its fusion emitters, and one code-generation thread per process
# (the files run two at a time). Together they halved the suite's time; the
# programs run slower, which tests do not notice. The benchmark strips them.
SHORTCUT_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
USERS_COMPILE = "users_compile"  # pytest marker: tests that also check the programs as users compile them


def run(*cmd, env=None) -> int:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)


def setup(extras: str) -> None:
    """Create .venv if needed and install jaxgmm (editable) with ``extras``."""
    if sys.version_info < (3, 11):
        sys.exit(f"jaxgmm needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [BIN / "python", "-m", "pip", "--disable-pip-version-check", "-q"]
    if run(*pip, "install", "-e", f".[{extras}]") != 0:
        sys.exit("installing jaxgmm failed (see pip's message above)")


def demo(args) -> int:
    setup("plot")
    return run(BIN / "jaxgmm", "demo", *args)


def docs(args) -> int:
    """Build the documentation site; every Sphinx warning is an error (reported all at once)."""
    setup("docs")
    return run(BIN / "sphinx-build", "-W", "--keep-going", "-b", "html", *args, "docs", DOCS_HTML)


def compile_shortcuts() -> dict:
    """Environment for the suite's cheaper compiles; XLA_FLAGS only where this jaxlib knows the flags
    (XLA aborts on an unknown one)."""
    env = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    flags = f"{os.environ.get('XLA_FLAGS', '')} {SHORTCUT_XLA_FLAGS}".strip()
    probe = subprocess.run([str(BIN / "python"), "-c", "import jax; jax.jit(lambda x: x + 1)(1.0)"],
                           env=dict(os.environ, XLA_FLAGS=flags), capture_output=True, text=True)
    if probe.returncode == 0:
        env.update(XLA_FLAGS=flags, JAXGMM_SUITE_XLA_FLAGS=SHORTCUT_XLA_FLAGS)  # the latter: for the benchmark
    else:
        print(f"this jaxlib refuses {SHORTCUT_XLA_FLAGS}; the suite compiles without them", flush=True)
    return env


def _pytest_group(label: str, pytest_args: list, env: dict, report_dir: Path) -> tuple[str, int, str, dict]:
    """One pytest process (a test file, the doctests or a marked set); returns its output and counts."""
    report = report_dir / (label.replace("/", "_").replace(" ", "_") + ".xml")
    cmd = [str(BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *pytest_args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    if report.exists():
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        for key in counts:
            counts[key] = int(suite.get(key, 0))
    elif proc.returncode != 0:
        counts["errors"] = 1  # crashed before writing its report
    return label, proc.returncode, proc.stdout + proc.stderr, counts


def _test_pass(label: str, x64: bool, shortcuts: dict, args) -> tuple[int, dict]:
    users_env = {k: v for k, v in os.environ.items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
    users_env["JAX_ENABLE_X64"] = "1" if x64 else "0"
    env = dict(users_env, **shortcuts)
    if args:
        code = run(BIN / "python", "-m", "pytest", *args, env=env)
        return code, {}
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")) + ["jaxgmm"]
    groups = [(f"tests marked {USERS_COMPILE}, compiled as for users", ["-m", USERS_COMPILE, "tests"], users_env)]
    groups += [(f, ["-m", f"not {USERS_COMPILE}", f], env) for f in files]
    totals = dict(tests=0, failures=0, errors=0, skipped=0)
    worst = 0
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(PARALLEL) as pool:
        for name, code, output, counts in pool.map(lambda g: _pytest_group(*g, Path(tmp)), groups):
            print(f"--- {label}: {name} (exit {code})\n{output.rstrip()}\n", flush=True)
            if code not in (0, 5):  # 5: nothing collected
                worst = code or 1
            for key in totals:
                totals[key] += counts[key]
    return worst, totals


def test(args) -> int:
    setup("test")
    shortcuts = compile_shortcuts()
    codes, summaries = [], []
    for label, x64 in (("float32", False), ("float64", True)):
        code, totals = _test_pass(label, x64, shortcuts, args)
        codes.append(code)
        if totals:
            failed = totals["failures"] + totals["errors"]
            passed = totals["tests"] - failed - totals["skipped"]
            summaries.append((label, passed, failed, totals["skipped"]))
    for label, passed, failed, skipped in summaries:
        print(f"{label} pass: {passed} passed, {failed} failed, {skipped} skipped")
    if summaries:
        passed, failed, skipped = (sum(s[i] for s in summaries) for i in (1, 2, 3))
        print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
    return next((c for c in codes if c), 0)


def main() -> int:
    commands = {"demo": demo, "test": test, "docs": docs}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
