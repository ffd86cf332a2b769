"""The baseline: bare workflows that make the same Temporal calls as the corporate sale process
(starts, child workflows, updates, signals, activities) with no business logic and no database,
so that the product's figure can be read as a ratio that holds on a noisy machine."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

# Tasks per stage on the happy path: Qualification, Presentation, Proposal, Contracting.
STAGE_TASKS = (2, 1, 3, 3)


@activity.defn
async def noop(step: str) -> None:
    """Stands for a database step."""


@workflow.defn
class BaselineTask:
    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._done)

    @workflow.signal
    def finish(self) -> None:
        self._done = True


@workflow.defn
class BaselineProcess:
    """Per stage entered: one activity and a child per task; per completion: an update, one
    activity and a signal to the child; per move: an update, one activity and the open children
    cancelled. Child ids are `<workflow id>-v<visit>-t<task index>`."""

    def __init__(self) -> None:
        self._stage = 0
        self._visit = 0
        self._children: dict[str, workflow.ChildWorkflowHandle[BaselineTask, None]] = {}
        self._lock = asyncio.Lock()
        self._done = False
        self._ready = False

    @workflow.run
    async def run(self) -> int:
        await workflow.execute_activity(noop, "open", start_to_close_timeout=timedelta(seconds=30))
        async with self._lock:
            await self._enter()
            self._ready = True
        await workflow.wait_condition(lambda: self._done)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._stage

    async def _enter(self) -> None:
        await workflow.execute_activity(noop, "enter", start_to_close_timeout=timedelta(seconds=30))
        self._visit += 1
        if self._stage >= len(STAGE_TASKS):
            self._done = True
            return
        wid = workflow.info().workflow_id
        ids = [f"{wid}-v{self._visit}-t{i}" for i in range(STAGE_TASKS[self._stage])]
        handles = await asyncio.gather(*(workflow.start_child_workflow(BaselineTask.run, id=i) for i in ids))
        self._children = dict(zip(ids, handles, strict=True))

    @workflow.update
    async def complete(self, task: str) -> int:
        await workflow.wait_condition(lambda: self._ready)
        async with self._lock:
            await workflow.execute_activity(noop, "complete", start_to_close_timeout=timedelta(seconds=30))
            await self._children.pop(task).signal(BaselineTask.finish)
            if not self._children:
                self._stage += 1
                await self._enter()
            return self._stage

    @workflow.update
    async def move(self, stage: int) -> int:
        await workflow.wait_condition(lambda: self._ready)
        async with self._lock:
            await workflow.execute_activity(noop, "move", start_to_close_timeout=timedelta(seconds=30))
            children, self._children = list(self._children.values()), {}
            for child in children:
                child.cancel()
            await asyncio.gather(*children, return_exceptions=True)
            self._stage = stage
            await self._enter()
            return self._stage
