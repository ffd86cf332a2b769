"""The worker: runs the opportunity and task workflows and the activities on one task queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TypeVar

import asyncpg
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Interceptor, UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from activities.bulk import BulkActivities
from activities.data import worker_keys
from activities.data.db import create_pool, migrate
from activities.sale import SaleActivities
from worker import telemetry
from worker.config import Settings, connect_temporal, current, invalid
from worker.database import embedded_database_url, redact
from worker.journal_relay import JournalRelay
from worker.lead_relay import LeadRelay
from worker.process import exit_now
from worker.webhook_relay import Policy, WebhookRelay
from workflows.bulk import BulkWorkflow
from workflows.opportunity import CorporateSaleWorkflow
from workflows.task import TaskWorkflow

log = logging.getLogger("corpsale.worker")
T = TypeVar("T")

# A server the worker cannot reach yet (PostgreSQL or Temporal still starting, a restart): it tries
# again after 1 s, then 2, 4, ... at most 30 s apart, until it is there or the worker is stopped.
RETRY_FIRST, RETRY_MAX = 1.0, 30.0
CONNECT_TIMEOUT = 10.0  # seconds one attempt to connect may take (the migrations may take longer)
# What says "not there (yet)"; anything else (a wrong password, a malformed address) is an error.
DATABASE_DOWN = (
    OSError,  # refused, unreachable, timed out
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InvalidCatalogNameError,  # the database is not created yet
)

WORKFLOWS = [CorporateSaleWorkflow, TaskWorkflow, BulkWorkflow]

# The sandbox (CORPSALE_WORKFLOW_SANDBOX; the test suite's worker runs in it) passes these
# deterministic modules of data models and activities through, imported once for all workflows
# instead of once per workflow: that would rebuild every pydantic model per cached workflow (about
# 120 KiB a workflow, see docs/benchmarks.md). The workflow modules themselves are sandboxed (but
# the task workflow's, which always runs outside it: workflows/task.py).
SANDBOX = SandboxRestrictions.default.with_passthrough_modules(
    "pydantic",
    "pydantic_core",
    "workflows.contract",
    "workflows.definition",
    "workflows.state",
    "workflows.permissions",
    "workflows.rules",
    "workflows.steps",
    "workflows.step_defs",
    "workflows.search_attributes",
    "activities",
)


def workflow_runner(sandboxed: bool) -> WorkflowRunner:
    """The SDK's sandbox where `sandboxed` (development and tests: it refuses a clock, randomness,
    I/O or a restricted import in workflow code, which the replay tests cannot see before a
    history records it); else workflows run as plain Python, as the task workflow always does."""
    return SandboxedWorkflowRunner(restrictions=SANDBOX) if sandboxed else UnsandboxedWorkflowRunner()


def build_worker(
    client: Client,
    pool: asyncpg.Pool,
    *,
    task_queue: str,
    settings: Settings | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    settings = settings or current()
    return Worker(
        client,
        task_queue=task_queue,
        interceptors=interceptors,
        workflows=WORKFLOWS,
        activities=[
            *SaleActivities(pool).all(),
            *BulkActivities(pool, client).all(),
        ],
        workflow_runner=workflow_runner(settings.workflow_sandbox),
        max_cached_workflows=settings.max_cached_workflows,
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


@contextlib.asynccontextmanager
async def serving(
    client: Client, pool: asyncpg.Pool, *, task_queue: str, settings: Settings | None = None
) -> AsyncIterator[Worker]:
    """The worker with its journal relay, which a process's writes need to be confirmed (their
    events to go out, their task workflows to start)."""
    settings = settings or current()
    stop = asyncio.Event()
    relay = JournalRelay(pool, client, task_queue, confirm_after=settings.journal_confirm_after)
    async with build_worker(client, pool, task_queue=task_queue, settings=settings) as worker:
        relaying = asyncio.create_task(relay.run(stop))
        try:
            yield worker
        finally:
            stop.set()
            await relaying


class WorkerError(Exception):
    """Why the worker cannot run: logged as one line, exit code 1."""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


async def _unless_stopped(attempt: Awaitable[T], stop: asyncio.Event) -> tuple[T] | None:
    """`(result,)` of `attempt`, or None when `stop` is set first (the attempt is then canceled)."""
    attempting = asyncio.ensure_future(attempt)
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({attempting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if attempting.done():
        stopped.cancel()
        return (attempting.result(),)
    attempting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await attempting
    return None


async def _reach(
    what: str, connect: Callable[[], Awaitable[T]], down: Callable[[BaseException], bool], stop: asyncio.Event
) -> T | None:
    """`connect()` once it succeeds, trying again while `down` says the server is not there (one log
    line per attempt, 1 s, 2 s ... up to 30 s apart); None when `stop` is set first."""

    async def pause(seconds: float) -> None:
        if await _unless_stopped(asyncio.sleep(seconds), stop) is None:
            raise _Stopped

    def say(attempt: RetryCallState) -> None:
        err = attempt.outcome.exception() if attempt.outcome else None
        reason = _one_line(err) if err else "no answer"
        log.warning("cannot reach %s (%s); retrying in %.0f s", what, reason, attempt.upcoming_sleep)

    attempts = AsyncRetrying(
        retry=retry_if_exception(lambda err: not isinstance(err, WorkerError) and down(err)),
        wait=wait_exponential(multiplier=RETRY_FIRST, max=RETRY_MAX),
        sleep=pause,
        before_sleep=say,
        reraise=True,
    )
    if stop.is_set():
        return None
    try:
        async for attempt in attempts:
            with attempt:
                reached = await _unless_stopped(connect(), stop)
                return None if reached is None else reached[0]
    except _Stopped:
        return None
    except WorkerError:
        raise
    except Exception as err:  # not "not there": a wrong password, a malformed address
        raise WorkerError(f"cannot use {what}: {_one_line(err)}") from None
    raise AssertionError("an attempt either connects or raises")


class _Stopped(Exception):
    """The worker was asked to stop while it waited to try again."""


def _temporal_down(err: BaseException) -> bool:
    if isinstance(err, RPCError):
        return err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)
    return isinstance(err, RuntimeError | TimeoutError)  # RuntimeError: "Failed client connect"


async def _connect_temporal(settings: Settings, stop: asyncio.Event) -> Client | None:
    runtime = telemetry.runtime(settings.metrics_address)  # once: it binds the metrics port
    interceptors = telemetry.tracing_interceptors()
    address = settings.temporal_target
    return await _reach(
        f"Temporal at {address}",
        lambda: asyncio.wait_for(
            connect_temporal(runtime=runtime, interceptors=interceptors), CONNECT_TIMEOUT
        ),
        _temporal_down,
        stop,
    )


async def _database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    pgdata = (settings.data_dir / "postgres").resolve()
    try:
        return await asyncio.to_thread(embedded_database_url, settings.data_dir)
    except Exception as err:  # the embedded server and the OS raise many kinds; the text says it
        raise WorkerError(
            f"cannot start the embedded PostgreSQL in {pgdata}: {_one_line(err)} (its log: {pgdata / 'log'};"
            " or set DATABASE_URL)"
        ) from None


async def _open_database(url: str, settings: Settings) -> asyncpg.Pool:
    """The pool, once the migrations are applied."""
    pool = await create_pool(url, max_size=settings.db_pool_size, connect_timeout=CONNECT_TIMEOUT)
    try:
        await migrate(pool)
    except BaseException as err:
        await pool.close()
        if isinstance(err, Exception) and not isinstance(err, DATABASE_DOWN):  # down: the next attempt
            raise WorkerError(f"the database migrations failed on {redact(url)}: {_one_line(err)}") from None
        raise
    return pool


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    client: Client | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run the worker until `stop` is set. `client`: an already connected client (default: connect
    from the environment); `on_ready`: called once the worker polls its task queue. It waits for
    Temporal and the database to be there; WorkerError says why it cannot run."""
    if client is None:
        client = await _connect_temporal(settings, stop)
        if client is None:
            return
    url = await _database_url(settings)
    pool = await _reach(
        f"the database at {redact(url)}",
        lambda: _open_database(url, settings),
        lambda err: isinstance(err, DATABASE_DOWN),
        stop,
    )
    if pool is None:
        return
    try:
        await worker_keys.announce(pool, settings.task_queue, settings.key_id())
        worker = build_worker(client, pool, task_queue=settings.task_queue, settings=settings)
        relays: list[LeadRelay | WebhookRelay | JournalRelay] = [
            JournalRelay(pool, client, settings.task_queue, confirm_after=settings.journal_confirm_after)
        ]
        if settings.lead_relay:
            relays.append(LeadRelay(pool, client, settings.task_queue, interval=settings.lead_relay_interval))
        if settings.webhook_relay:
            relays.append(WebhookRelay(pool, _webhook_policy(settings)))
        async with worker:
            log.info("worker polling task queue %r", settings.task_queue)
            relaying = [asyncio.create_task(relay.run(stop)) for relay in relays]
            if on_ready is not None:
                on_ready()
            await stop.wait()
            log.info("worker stopping")
            await asyncio.gather(*relaying)
    finally:
        await pool.close()


def _webhook_policy(settings: Settings) -> Policy:
    return Policy(
        timeout=settings.webhook_timeout,
        attempts=settings.webhook_attempts,
        backoff=settings.webhook_backoff,
        backoff_cap=settings.webhook_backoff_cap,
    )


def main() -> None:
    try:
        settings = current()
    except ValidationError as err:
        print(f"corpsale worker: invalid setting in the environment: {invalid(err)}", file=sys.stderr)
        exit_now(1)
    telemetry.configure_logging(settings.log_format)
    problem = telemetry.tracing_problem()
    if problem is not None:
        print(f"corpsale worker: {problem}", file=sys.stderr)
        exit_now(1)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop)

    try:
        asyncio.run(_main())
    except WorkerError as err:
        log.error("%s", err)
        exit_now(1)
    exit_now(0)


if __name__ == "__main__":
    main()
