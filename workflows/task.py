"""One CRM task as a child workflow: it lives while the task is open, so that ops see it in the
Temporal UI and a stage change cancels it. Kept lean: the parent writes completions; the child
only records its own cancellation before it ends.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.models import CancelTaskRow
    from activities.sale import SaleActivities


class TaskInput(BaseModel):
    task_id: str
    opportunity_id: str
    title: str
    owner: str
    due_at: datetime


class TaskResult(BaseModel):
    task_id: str
    status: str
    outcome: str | None = None


@workflow.defn(name="SaleTask")
class TaskWorkflow:
    def __init__(self) -> None:
        self._outcome: str | None = None

    @workflow.run
    async def run(self, task: TaskInput) -> TaskResult:
        try:
            await workflow.wait_condition(lambda: self._outcome is not None)
        except asyncio.CancelledError:
            # The parent waits for this (WAIT_CANCELLATION_COMPLETED): the row is canceled in
            # PostgreSQL before the child is.
            await workflow.execute_activity_method(
                SaleActivities.cancel_task,
                CancelTaskRow(task_id=task.task_id, at=workflow.now()),
                start_to_close_timeout=timedelta(seconds=30),
                summary=f"cancel task {task.task_id}",
            )
            raise
        return TaskResult(task_id=task.task_id, status="completed", outcome=self._outcome)

    @workflow.signal(name="task_completed")
    def task_completed(self, outcome: str) -> None:
        """Sent by the parent once the completion is stored."""
        self._outcome = outcome
