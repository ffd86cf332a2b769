"""Processes of the operating system: the dev server the stack runs as a child (is it alive, who
is its parent, waiting for it to go), and leaving a process that used the Temporal client."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Exit without interpreter finalisation, where the Temporal client's native threads can
    abort the process (temporalio/sdk-python#300): the exit handlers (the embedded PostgreSQL's
    among them) run first and the output is flushed."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def process_command_line(pid: int) -> str | None:
    """The command line of a live process, or None."""
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
    except OSError:
        pass
    return ps_field(pid, "command")  # no /proc: macOS and the like


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        pass
    ppid = ps_field(pid, "ppid")
    return int(ppid) if ppid.isdigit() else None


def ps_field(pid: int, field: str) -> str:
    """One field of `ps` about a process; "" when unknown."""
    try:
        ps = subprocess.run(["ps", "-p", str(pid), "-o", f"{field}="], capture_output=True, text=True)
    except OSError:
        return ""
    return ps.stdout.strip()


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_command_line(pid) is None:
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let the shutdown finish (it is bounded by timeouts) whatever the keyboard says."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
