#!/usr/bin/env python3
"""Set up a virtual environment and run jaxgmm's demo or its test suite.

Needs only Python 3.11+ and its standard library:

    python3 dev.py demo    # install jaxgmm[plot] into .venv, fit Old Faithful, print and plot
    python3 dev.py test    # install jaxgmm[test] into .venv, run the suite in float32 and float64

Extra arguments after ``test`` go to pytest.
"""

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


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


def test(args) -> int:
    setup("test")
    env = dict(os.environ)
    # float32 pass, then a float64 pass in its own process (x64 is never toggled mid-suite).
    env["JAX_ENABLE_X64"] = "0"
    code32 = run(BIN / "python", "-m", "pytest", *args, env=env)
    env["JAX_ENABLE_X64"] = "1"
    code64 = run(BIN / "python", "-m", "pytest", *args, env=env)
    print(f"float32 pass: {'ok' if code32 == 0 else 'FAILED'}; float64 pass: {'ok' if code64 == 0 else 'FAILED'}")
    return code32 or code64


def main() -> int:
    commands = {"demo": demo, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
