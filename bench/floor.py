"""The floor: the product's shape with nothing else, the leanest workflows that do what the
corporate sale process asks of Temporal. The opportunity is a workflow; each stage's tasks are
workflows of their own, started as children in one workflow task; each task completion is an
update to the opportunity, answered after its local activity, which tells the task's workflow to
finish without waiting for it; a local activity at each stage entry and at the close. No
database, no timers, no permissions, no search attributes, no queries.

`python -m bench.run` measures it in the same run as the product and reports the product's
throughput as a ratio of it: what the product costs beyond its shape."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.workflow import ParentClosePolicy

from bench.baseline import STAGE_TASKS, BaselineTask, noop

STEP = timedelta(seconds=10)


@workflow.defn
class FloorProcess:
    """Child ids are `<workflow id>-v<visit>-t<task index>`; the children and the step are the
    baseline's (a task waits until it is told it is done; a step does nothing)."""

    def __init__(self) -> None:
        self._stage = 0
        self._visit = 0
        self._open: dict[str, workflow.ChildWorkflowHandle[BaselineTask, None]] = {}
        self._lock = asyncio.Lock()
        self._ready = False
        self._done = False
        self._told: list[asyncio.Task[None]] = []  # the signals sent without waiting

    @workflow.run
    async def run(self) -> int:
        async with self._lock:
            await self._enter()
            self._ready = True
        await workflow.wait_condition(lambda: self._done and workflow.all_handlers_finished())
        await asyncio.gather(*self._told)  # delivered before the run completes
        return self._stage

    async def _step(self, name: str) -> None:
        await workflow.execute_local_activity(noop, name, start_to_close_timeout=STEP)

    async def _enter(self) -> None:
        if self._stage >= len(STAGE_TASKS):
            await self._step("close")
            self._done = True
            return
        await self._step("enter")
        self._visit += 1
        wid = workflow.info().workflow_id
        ids = [f"{wid}-v{self._visit}-t{i}" for i in range(STAGE_TASKS[self._stage])]
        handles = await asyncio.gather(
            *(
                workflow.start_child_workflow(
                    BaselineTask.run, id=i, parent_close_policy=ParentClosePolicy.ABANDON
                )
                for i in ids
            )
        )
        self._open = dict(zip(ids, handles, strict=True))

    def _tell(self, child: workflow.ChildWorkflowHandle[BaselineTask, None]) -> None:
        self._told.append(asyncio.create_task(child.signal(BaselineTask.finish)))  # not waited for here

    @workflow.update
    async def complete(self, task: str) -> int:
        await workflow.wait_condition(lambda: self._ready)
        async with self._lock:
            await self._step("complete")
            self._tell(self._open.pop(task))
            if not self._open:
                self._stage += 1
                await self._enter()
            return self._stage

    @workflow.update
    async def move(self, stage: int) -> int:
        await workflow.wait_condition(lambda: self._ready)
        async with self._lock:
            await self._step("move")
            for child in self._open.values():
                self._tell(child)  # the stage's tasks left open end with it
            self._open, self._stage = {}, stage
            await self._enter()
            return self._stage
