"""The worker: runs the opportunity and task workflows and the activities on one task queue."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import timedelta

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.db import create_pool, migrate
from activities.sale import SaleActivities
from worker import telemetry
from worker.config import Settings, connect_temporal
from worker.database import database_url
from worker.lead_relay import LeadRelay
from worker.process import exit_now
from workflows.opportunity import CorporateSaleWorkflow
from workflows.task import TaskWorkflow

log = logging.getLogger("corpsale.worker")

WORKFLOWS = [CorporateSaleWorkflow, TaskWorkflow]

# Deterministic modules of data models and activities, imported once for all workflows instead of
# once per workflow in the sandbox: that would rebuild every pydantic model per cached workflow
# (about 120 KiB a workflow, see docs/benchmarks.md). The workflow modules themselves stay sandboxed.
SANDBOX = SandboxRestrictions.default.with_passthrough_modules(
    "pydantic", "pydantic_core", "workflows.contract", "workflows.definition", "workflows.state", "activities"
)


def build_worker(
    client: Client, pool: asyncpg.Pool, *, task_queue: str, settings: Settings | None = None
) -> Worker:
    settings = settings or Settings()
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=SaleActivities(pool).all(),
        workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX),
        max_cached_workflows=settings.max_cached_workflows,
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    client: Client | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run the worker until `stop` is set. `client`: an already connected client (default: connect
    from the environment); `on_ready`: called once the worker polls its task queue."""
    if client is None:
        client = await connect_temporal(
            runtime=telemetry.runtime(settings.metrics_address), interceptors=telemetry.tracing_interceptors()
        )
    pool = await create_pool(database_url(settings), max_size=settings.db_pool_size)
    try:
        await migrate(pool)
        worker = build_worker(client, pool, task_queue=settings.task_queue, settings=settings)
        relay = LeadRelay(pool, client, settings.task_queue, interval=settings.lead_relay_interval)
        async with worker:
            log.info("worker polling task queue %r", settings.task_queue)
            relaying = asyncio.create_task(relay.run(stop)) if settings.lead_relay else None
            if on_ready is not None:
                on_ready()
            await stop.wait()
            log.info("worker stopping")
            if relaying is not None:
                await relaying
    finally:
        await pool.close()


def main() -> None:
    settings = Settings()
    telemetry.configure_logging(settings.log_format)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop)

    asyncio.run(_main())
    exit_now(0)


if __name__ == "__main__":
    main()
