"""The task workflows of a process, reached by workflow id through Temporal's client: started,
told of their completion, canceled. A process does this in one local activity per command, so
that nothing of its children is still on the way when it hands over to its next run (a child
workflow's start, signal or cancellation is only carried out while the run that sent it runs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.models import TaskOps, TaskStart
from workflows.contract import TASK_COMPLETED_SIGNAL, TASK_WORKFLOW_TYPE, task_workflow_id

log = logging.getLogger(__name__)

# A task workflow that is gone already (ended, or terminated by ops) has nothing left to stop.
_GONE = {RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION}


class TaskWorkflowActivities:
    """Holds the worker's Temporal client; tests can hand it another."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn
    async def link_tasks(self, links: TaskOps) -> None:
        """Start, finish and cancel task workflows; run again, it changes nothing more."""
        queue = activity.info().task_queue
        await asyncio.gather(
            *(self._start(s, queue) for s in links.start),
            *(self._finish(task_id, outcome) for task_id, outcome in links.finish.items()),
            *(self._cancel(task_id) for task_id in links.cancel),
        )

    async def _start(self, start: TaskStart, queue: str) -> None:
        try:
            await self._client.start_workflow(
                TASK_WORKFLOW_TYPE,
                start.task,
                id=task_workflow_id(start.task.task_id),
                task_queue=queue,
                # Once per task: a retry finds it running (or ended) and leaves it be.
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=start.summary,
            )
        except WorkflowAlreadyStartedError:
            pass

    async def _finish(self, task_id: str, outcome: str) -> None:
        handle = self._client.get_workflow_handle(task_workflow_id(task_id))
        await _unless_gone(task_id, lambda: handle.signal(TASK_COMPLETED_SIGNAL, outcome))

    async def _cancel(self, task_id: str) -> None:
        handle = self._client.get_workflow_handle(task_workflow_id(task_id))
        await _unless_gone(task_id, handle.cancel)

    def all(self) -> list[Callable[..., Any]]:
        return [self.link_tasks]


async def _unless_gone(task_id: str, call: Callable[[], Any]) -> None:
    try:
        await call()
    except RPCError as err:
        if err.status not in _GONE:
            raise
        log.info("task workflow of %s has ended already: %s", task_id, err.message)
