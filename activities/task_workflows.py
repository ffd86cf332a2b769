"""The task workflows of a process, reached by workflow id through Temporal's client: started,
told of their completion, new owner or new due time, canceled. Each call is idempotent: a task
workflow started already, or gone, is left be. A process asks for these through its writes, and
the worker's journal relay carries them out once confirmed (worker/journal_relay.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from workflows.contract import (
    TASK_COMPLETED_SIGNAL,
    TASK_DUE_SIGNAL,
    TASK_OWNER_SIGNAL,
    TASK_WORKFLOW_TYPE,
    task_workflow_id,
    workflow_id,
)
from workflows.search_attributes import OPPORTUNITY_ID_ATTR, TASK_OWNER_ATTR, start_with
from workflows.steps import TaskStart

log = logging.getLogger(__name__)

# A task workflow that is gone already (ended, or terminated by ops) has nothing left to stop.
_GONE = {RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION}


class TaskWorkflows:
    """The task workflows, through the client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def start(self, start: TaskStart, queue: str, *, completed: str | None = None) -> None:
        """Start the task's workflow; `completed`: the task is completed already (with that
        outcome), and its workflow is started with the completion, to end at once (one call)."""
        attributes = TypedSearchAttributes(
            [
                SearchAttributePair(TASK_OWNER_ATTR, start.task.owner),
                SearchAttributePair(OPPORTUNITY_ID_ATTR, start.task.opportunity_id),
            ]
        )
        try:
            await start_with(attributes, lambda a: self._start_workflow(start, queue, a, completed))
        except WorkflowAlreadyStartedError:
            pass

    async def _start_workflow(
        self, start: TaskStart, queue: str, attributes: TypedSearchAttributes, completed: str | None
    ) -> None:
        opportunity = start.task.opportunity_id
        link = f"/namespaces/{self._client.namespace}/workflows/{workflow_id(opportunity)}"
        await self._client.start_workflow(
            TASK_WORKFLOW_TYPE,
            start.task,
            id=task_workflow_id(start.task.task_id),
            task_queue=queue,
            # Once per task: a retry finds it running (or ended) and leaves it be.
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=start.summary,
            # The Web UI shows it as a link to the task's opportunity.
            static_details=f"Task of opportunity [{opportunity}]({link})",
            search_attributes=attributes,
            # Signal-with-start: to a workflow running already, only the completion.
            start_signal=TASK_COMPLETED_SIGNAL if completed is not None else None,
            start_signal_args=[completed] if completed is not None else [],
        )

    async def reassign(self, task_id: str, owner: str) -> None:
        handle = self._client.get_workflow_handle(task_workflow_id(task_id))
        await _unless_gone(task_id, lambda: handle.signal(TASK_OWNER_SIGNAL, owner))

    async def put_off(self, task_id: str, due_at: str) -> None:
        handle = self._client.get_workflow_handle(task_workflow_id(task_id))
        await _unless_gone(task_id, lambda: handle.signal(TASK_DUE_SIGNAL, due_at))

    async def finish(self, task_id: str, outcome: str) -> None:
        handle = self._client.get_workflow_handle(task_workflow_id(task_id))
        await _unless_gone(task_id, lambda: handle.signal(TASK_COMPLETED_SIGNAL, outcome))

    async def cancel(self, task_id: str) -> None:
        handle = self._client.get_workflow_handle(task_workflow_id(task_id))
        await _unless_gone(task_id, handle.cancel)


async def _unless_gone(task_id: str, call: Callable[[], Any]) -> None:
    try:
        await call()
    except RPCError as err:
        if err.status not in _GONE:
            raise
        log.info("task workflow of %s has ended already: %s", task_id, err.message)
