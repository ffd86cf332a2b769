"""A worker for the bench's bare workflows, the baseline and the floor: `python -m
bench.baseline_worker` (TEMPORAL_ADDRESS and CORPSALE_TASK_QUEUE from the environment, as for the
product's worker)."""

from __future__ import annotations

import asyncio
import signal

from temporalio.worker import Worker

from bench.baseline import BaselineProcess, BaselineTask, noop
from bench.floor import FloorProcess
from worker.config import Settings, connect_temporal
from worker.main import workflow_runner
from worker.process import exit_now


async def main() -> None:
    settings = Settings()
    client = await connect_temporal()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[BaselineProcess, BaselineTask, FloorProcess],
        activities=[noop],
        workflow_runner=workflow_runner(settings.workflow_sandbox),  # the product's, as it runs
        max_cached_workflows=settings.max_cached_workflows,
        max_concurrent_activities=settings.max_concurrent_activities,
    ):
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
    exit_now(0)
