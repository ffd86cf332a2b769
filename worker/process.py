"""Leaving a process that used the Temporal client."""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Exit without interpreter finalisation, where the Temporal client's native threads can
    abort the process (temporalio/sdk-python#300): the exit handlers (the embedded PostgreSQL's
    among them) run first and the output is flushed."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
