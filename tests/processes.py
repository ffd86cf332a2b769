"""Processes the tests start of their own: a shell as a user types in it, a worker (or another
kind of worker), a worker that dies at the worst moment."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from tests.helpers import CliResult


async def shell(
    script: str, env: dict[str, str], *, cwd: str | None = None, timeout: float = 600
) -> CliResult:
    """Run `script` in bash as a user types it; its output and errors come back together."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await asyncio.wait_for(proc.communicate(), timeout))[0].decode()
    assert proc.returncode is not None
    return CliResult(proc.returncode, out, "")


@asynccontextmanager
async def worker_process(
    env: dict[str, str], *args: str, module: str = "worker.main"
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A worker of its own (`module` with `args`: another kind of worker), killed at the end."""
    # TEST_WORKER_LOGS=folder keeps each worker's log there (to see what a failing test's did).
    folder = os.environ.get("TEST_WORKER_LOGS")
    log: Any = asyncio.subprocess.DEVNULL
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        log = Path(folder, f"worker-{uuid.uuid4().hex[:8]}.log").open("w")  # noqa: ASYNC230
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def killing_worker(
    env: dict[str, str], step: str, condition: str
) -> AbstractAsyncContextManager[asyncio.subprocess.Process]:
    """A worker that dies (exit code 9) the moment `step` has committed for a row where
    `condition` holds (tests/killing_worker.py): a kill that provably lands with a step done and
    its workflow task not."""
    return worker_process(env, step, condition, module="tests.killing_worker")
