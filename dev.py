#!/usr/bin/env python3
"""Set-up and start with nothing installed but Python 3.11 or newer.

    python3 dev.py               the whole stack (`corpsale dev`): Temporal + Web UI, PostgreSQL, the worker
    python3 dev.py test [ARGS]   the test suite (`pytest ARGS`)

Each first creates .venv if missing, and installs the project into it when pyproject.toml changed
since the last install. Only the standard library is used here.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
# Everything: the embedded stack, the report's charts, tracing and the test tools (production
# installs none of them: `pip install .`).
EXTRAS = "dev,report,otel,test"
STAMP = VENV / ".pyproject-sha256"  # the hash of the pyproject.toml last installed


def say(message: str) -> None:
    print(f"dev.py: {message}", flush=True)


def set_up() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (any python3 may run this file)
        sys.exit(f"dev.py: Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        say("creating .venv")
        venv.create(VENV, with_pip=True, clear=VENV.exists())  # clear: a .venv left broken
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    say("installing dependencies (first run takes a minute)")
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if subprocess.run([*pip, "-e", f".[{EXTRAS}]"], cwd=ROOT, check=False).returncode != 0:
        sys.exit("dev.py: installing the dependencies failed (pip's message is above)")
    STAMP.write_text(digest + "\n")


def main(args: list[str]) -> None:
    set_up()
    os.chdir(ROOT)  # the stack keeps its data in .corpsale/ here; pytest finds its settings here
    if args[:1] == ["test"]:
        command = [str(BIN / "python"), "-m", "pytest", *args[1:]]
    else:
        command = [str(BIN / "corpsale"), "dev", *args]
    # Replace this process: Ctrl-C, signals and the exit code are the command's own.
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
