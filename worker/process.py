"""Processes of the operating system: the dev server the stack runs as a child (is it alive, who
is its parent, waiting for it to go), and leaving a process that used the Temporal client."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import NoReturn

import psutil


def exit_now(code: int) -> NoReturn:
    """Exit without interpreter finalisation, where the Temporal client's native threads can
    abort the process (temporalio/sdk-python#300): the exit handlers (the embedded PostgreSQL's
    among them) run first and the output is flushed."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def process_command_line(pid: int) -> str | None:
    """The command line of a live process ("" when it may not be read), or None."""
    if pid <= 0:
        return None
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.NoSuchProcess:  # a zombie too: it has ended
        return None
    except psutil.AccessDenied:
        return ""


def parent_pid(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).ppid())
    except psutil.Error:
        return None


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether the process has ended within `timeout` seconds (a child of ours is reaped)."""
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let the shutdown finish (it is bounded by timeouts) whatever the keyboard says."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
