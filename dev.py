#!/usr/bin/env python3
"""Set up a virtual environment and run jaxgmm's demo or its test suite.

Needs only Python 3.11+ and its standard library:

    python3 dev.py demo    # install jaxgmm[plot] into .venv, fit Old Faithful, print and plot
    python3 dev.py test    # install jaxgmm[test] into .venv, run the suite in float32 and float64

``test`` runs every test file (and the doctests) in a pytest process of its
own, two at a time, first with float32 then with ``JAX_ENABLE_X64=1`` (x64
is never toggled inside a process), with ``JAX_DISABLE_MOST_OPTIMIZATIONS=1``
(cheaper compilation of the same programs). One process per file keeps compiled
programs from piling up in a single process (a long single-process run has
crashed inside XLA's CPU compiler here) and uses both cores. Arguments after
``test`` are passed to one plain pytest run per pass instead
(``python3 dev.py test -k sklearn``).
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


def _pytest_group(target: str, env: dict, report_dir: Path) -> tuple[str, int, str, dict]:
    """One pytest process for one test file (or the doctests); returns its output and counts."""
    report = report_dir / (target.replace("/", "_") + ".xml")
    cmd = [str(BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", target]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    if report.exists():
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        for key in counts:
            counts[key] = int(suite.get(key, 0))
    elif proc.returncode != 0:
        counts["errors"] = 1  # crashed before writing its report
    return target, proc.returncode, proc.stdout + proc.stderr, counts


def _test_pass(label: str, x64: bool, args) -> tuple[int, dict]:
    # The suite is compile-bound (hundreds of small programs, each run once or
    # twice): XLA's cheaper backend passes halve its time, and the programs
    # compute the same thing. Benchmarks and users get the optimised build.
    env = dict(os.environ, JAX_ENABLE_X64="1" if x64 else "0", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    if args:
        code = run(BIN / "python", "-m", "pytest", *args, env=env)
        return code, {}
    targets = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")) + ["jaxgmm"]
    totals = dict(tests=0, failures=0, errors=0, skipped=0)
    worst = 0
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(PARALLEL) as pool:
        for target, code, output, counts in pool.map(lambda t: _pytest_group(t, env, Path(tmp)), targets):
            print(f"--- {label}: {target} (exit {code})\n{output.rstrip()}\n", flush=True)
            if code not in (0, 5):  # 5: nothing collected
                worst = code or 1
            for key in totals:
                totals[key] += counts[key]
    return worst, totals


def test(args) -> int:
    setup("test")
    codes, summaries = [], []
    for label, x64 in (("float32", False), ("float64", True)):
        code, totals = _test_pass(label, x64, args)
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
    commands = {"demo": demo, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
