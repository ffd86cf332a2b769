"""What the benchmarks share: a dev server, an embedded PostgreSQL and a worker process to
measure, the worker's memory, updates sent again when the server is slow, progress on the
terminal, a clean stop, and their sections of docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.data.db import create_pool, migrate
from bench.server_metrics import ServerCosts
from worker.database import embedded_server
from workflows.search_attributes import SEARCH_ATTRIBUTES

ROOT = Path(__file__).parent.parent
SQLITE_PRAGMAS = ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
# The dev server reads the search attributes from its store at every use (so that one registered
# a moment ago is known at once); a server in production keeps them cached. Here they are all
# registered when the server starts, so the bench's server keeps them cached as production's do:
# otherwise each start with search attributes, upsert and describe costs it three to six reads
# more, and the product, which sets them, pays for what the floor, which does not, never sees.
PRODUCTION_LIKE = ["--dynamic-config-value", "system.forceSearchAttributesCacheRefreshOnRead=false"]


class Progress:
    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self._shown = label, total, 0, 0.0

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self._shown > 0.5 or self.done == self.total:
            self._shown = now
            width = 30
            filled = width * self.done // self.total
            print(
                f"\r  {self.label:<34} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}",
                end="",
                file=sys.stderr,
                flush=True,
            )
            if self.done == self.total:
                print(file=sys.stderr)


def percentiles(samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        return {}
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1)}


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.proc, self.peak = psutil.Process(pid), 0
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            await asyncio.sleep(0.25)

    def stop(self) -> float:
        self._task.cancel()
        return round(self.peak / 2**20, 1)

    def cpu_ms(self) -> float:
        """The worker's CPU time so far."""
        try:
            cpu = self.proc.cpu_times()
        except psutil.Error:
            return 0.0
        return float(cpu.user + cpu.system) * 1000


def postgres_cpu_ms() -> float:
    """The CPU time of PostgreSQL's processes on this machine (the bench's own server): those
    running and, through the postmaster, those that have ended."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "postgres":
            continue
        try:
            cpu = proc.cpu_times()
        except psutil.Error:
            continue
        total += cpu.user + cpu.system + cpu.children_user + cpu.children_system
    return total * 1000


async def start_worker(module: str, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )


RETRIED: list[str] = []  # updates sent again: the server was slow to answer, or refused for a moment


async def execute_update(handle: WorkflowHandle[Any, Any], update: Any, arg: Any) -> None:
    """An update, sent again with the same update id (so it is applied once) when its answer
    timed out or the server refused it while the run's workflow task was failing; each retry is
    counted and reported. The worker's log has the causes."""
    update_id = str(uuid.uuid4())
    for attempt in range(60):
        try:
            await handle.execute_update(update, arg, id=update_id)
            return
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the run is being stopped: no retry
                raise asyncio.CancelledError from err
            if (
                isinstance(err, RPCError) and "Workflow Task in failed state" not in str(err)
            ) or attempt == 59:
                raise
            RETRIED.append(f"{handle.id}: {err}")
            await asyncio.sleep(1)


# What the dev server does for the client of each (by its address): see `server_costs`.
_SERVERS: dict[str, ServerCosts] = {}
_SERVER_CPUS: set[int] = set()  # `pin_server`: the CPUs the dev servers keep to


def pin_server() -> str:
    """Give the dev servers started from here on half of this machine's CPUs, and this process,
    with everything it starts (PostgreSQL, the workers), the other half. The server then has CPU
    of its own, as in production: the throughput is set by what the commands cost it, not by what
    the worker and PostgreSQL take from it. Call it before anything starts; returns what it did."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []  # Linux
    if len(cpus) < 2:
        raise SystemExit(f"--pin needs CPU affinity (Linux) and 2 CPUs or more; this process has {len(cpus)}")
    half = len(cpus) // 2
    _SERVER_CPUS.update(cpus[:half])
    _pin(os.getpid(), set(cpus[half:]))
    return f"dev server on CPUs {cpus[:half]}, the rest on {cpus[half:]}"


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` to `cpus` (threads made later inherit it), twice over."""
    for _ in range(2):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError):  # a thread that has ended
                os.sched_setaffinity(int(task.name), cpus)


@asynccontextmanager
async def dev_server(persistence: str) -> AsyncIterator[Client]:
    metrics = free_port()
    with tempfile.TemporaryDirectory(prefix="corpsale-bench-") as tmp:
        async with await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
            dev_server_database_filename=str(Path(tmp) / "temporal.db") if persistence == "file" else None,
            dev_server_extra_args=[
                *(SQLITE_PRAGMAS if persistence == "file" else []),
                "--metrics-port",
                str(metrics),
                *PRODUCTION_LIKE,
            ],
            search_attributes=list(SEARCH_ATTRIBUTES),
            data_converter=pydantic_data_converter,
        ) as env:
            address = env.client.service_client.config.target_host
            _SERVERS[address] = ServerCosts(metrics)
            if _SERVER_CPUS:
                _pin(_SERVERS[address].process.pid, _SERVER_CPUS)
            try:
                yield env.client
            finally:
                _SERVERS.pop(address, None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_costs(client: Client) -> ServerCosts:
    return _SERVERS[client.service_client.config.target_host]


@asynccontextmanager
async def worker_process(
    module: str, client: Client, queue: str, database_url: str
) -> AsyncIterator[RssSampler]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "DATABASE_URL": database_url,
        "CORPSALE_TASK_QUEUE": queue,
        "PYTHONPATH": str(ROOT),
    }
    proc = await start_worker(module, env, ROOT / "bench" / "results" / f"{queue}.log")
    rss = RssSampler(proc.pid)
    try:
        yield rss
    finally:
        rss.stop()
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def stop_on_signals() -> None:
    """Ctrl-C or SIGTERM cancels the run, so that its dev server, worker and PostgreSQL are
    stopped on the way out; a second signal stops at once."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        print(f"stopping ({sig.name}): the dev server, the worker and PostgreSQL", file=sys.stderr)
        loop.remove_signal_handler(sig)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)


@asynccontextmanager
async def embedded_database() -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A fresh embedded PostgreSQL with the product's schema: its URL and a pool."""
    with (
        tempfile.TemporaryDirectory(prefix="corpsale-bench-pg-") as pg,
        embedded_server(Path(pg)) as server,
    ):
        url: str = server.get_uri()
        pool = await create_pool(url)
        try:
            await migrate(pool)
            yield url, pool
        finally:
            await pool.close()


def record(marker: str, heading: str, table: str) -> None:
    """Print a run's table and put it first in its section of docs/benchmarks.md (the section,
    headed `heading`, is added at the end the first time); earlier runs stay below it."""
    from datetime import UTC, datetime

    print("\n" + table)
    doc = ROOT / "docs" / "benchmarks.md"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    head, found, earlier = doc.read_text().partition(marker)
    if not found:
        head, earlier = f"{head.rstrip()}\n\n## {heading}\n\n", ""
    module = Path(sys.argv[0]).stem
    run = f"\n### {stamp}: `python -m bench.{module} {' '.join(sys.argv[1:])}`\n\n{table}\n"
    doc.write_text(f"{head}{marker}{run}{earlier}")


async def drained(database_url: str, run_id: str) -> float:
    """Seconds until the product has nothing left to do for the run's opportunities once their
    runs have ended: writes to confirm, task workflows to start or finish (the journal relay
    does those after the write; a run that ends does not wait for them). Code from before the
    journal has no such tables, and nothing left."""
    began = time.perf_counter()
    pool = await create_pool(database_url)
    try:
        while True:
            try:
                left = await pool.fetchval(
                    "SELECT (SELECT count(*) FROM task_ops WHERE opportunity_id LIKE $1)"
                    " + (SELECT count(*) FROM journal WHERE opportunity_id LIKE $1)",
                    f"bench-{run_id}-%",
                )
            except asyncpg.UndefinedTableError:
                return 0.0
            if not left:
                waited = time.perf_counter() - began
                print(
                    f"  the worker's work left for the journal relay took {waited:.1f} s more",
                    file=sys.stderr,
                )
                return waited
            await asyncio.sleep(0.1)
    finally:
        await pool.close()


async def check_database(database_url: str, run_id: str, n: int, completions: int) -> None:
    """The figures count only if the work is really in PostgreSQL."""
    pool = await create_pool(database_url)
    try:
        like = f"bench-{run_id}-%"
        won = await pool.fetchval(
            "SELECT count(*) FROM opportunities WHERE id LIKE $1 AND stage = 'Closed won'", like
        )
        tasks = await pool.fetchval(
            "SELECT count(*) FROM tasks WHERE opportunity_id LIKE $1 AND status = 'completed'", like
        )
        if (won, tasks) != (n, completions * n):
            raise SystemExit(
                f"database check failed: {won} won, {tasks} tasks completed;"
                f" expected {n} and {completions * n}"
            )
    finally:
        await pool.close()


@dataclass(frozen=True)
class Load:
    """At most `concurrency` opportunities in flight; with `rate`, one started every 1/rate s;
    with `think`, each task is completed that many seconds after the one before (a task left open
    a while, as people leave them: its workflow is started before it is completed)."""

    concurrency: int
    rate: float | None = None
    think: float = 0.0

    def describe(self) -> str:
        load = f"{self.rate}/s" if self.rate else f"{self.concurrency} in flight"
        return f"{load}, {self.think:g} s a task" if self.think else load

    async def pause(self) -> None:
        if self.think:
            await asyncio.sleep(self.think)


async def drive(
    label: str, n: int, load: Load, one: Callable[[int, list[float]], Awaitable[None]]
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    progress = Progress(label, n)
    gate = asyncio.Semaphore(load.concurrency)

    async def bounded(i: int) -> None:
        if load.rate:
            await asyncio.sleep(max(0.0, began + i / load.rate - time.perf_counter()))
        async with gate:
            await one(i, latencies)
        progress.step()

    began = time.perf_counter()
    await asyncio.gather(*(bounded(i) for i in range(n)))
    return time.perf_counter() - began, latencies
