"""One CRM task as a child workflow: it lives while the task is open, so that ops see it in the
Temporal UI, its reminders fire on time, and a stage change cancels it. Kept lean: the parent
writes completions and cancellations; the child only keeps the task's timers.

Its workflow is started, told of its completion, new owner or new due time, and canceled by
the worker's journal relay, once the write that decided it is confirmed (so that no task workflow
hears of a decision a lost workflow task made; activities/data/journal.py): it outlives the run
that started it, so that a run can continue as new with tasks open and a won deal's follow-up
tasks keep their timers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from workflows import step_defs
    from workflows.contract import (
        TASK_COMPLETED_SIGNAL,
        TASK_DUE_SIGNAL,
        TASK_OWNER_SIGNAL,
        TASK_WORKFLOW_TYPE,
    )
    from workflows.search_attributes import TASK_OWNER_ATTR
    from workflows.state import TaskInput, TaskResult  # models live outside the sandbox
    from workflows.steps import CancelTaskRow, TaskNotice


# Not in the sandbox: a deal makes about ten of these short workflows, and the sandbox costs each
# a fresh import of its modules and every activation an entry into it (docs/benchmarks.md: a fifth
# of the worker's CPU per deal). Its code only waits, times and calls local activities through the
# workflow API; keep it that way (no I/O, no clock, no randomness, no global state).
@workflow.defn(name=TASK_WORKFLOW_TYPE, sandboxed=False)
class TaskWorkflow:
    def __init__(self) -> None:
        self._outcome: str | None = None
        self._owner = ""
        self._due = ""
        self._due_at: datetime | None = None  # put off to (`due_changed`)
        self._put_off = 0  # how often: the timers are planned again each time

    @workflow.run
    async def run(self, task: TaskInput) -> TaskResult:
        self._owner, self._due = task.owner, f"{task.due_at:%Y-%m-%d %H:%M} UTC"
        self._show()
        try:
            # The patch `task-timers` is retired (docs/versioning.md): every task keeps its timers.
            workflow.deprecate_patch("task-timers")
            await self._timers(task)
            await workflow.wait_condition(lambda: self._outcome is not None)
        except (asyncio.CancelledError, ActivityError) as err:
            # A cancellation that came while a notice was being written arrives as the local
            # activity's error: it is a cancellation all the same.
            if isinstance(err, ActivityError) and not is_cancelled_exception(err):
                raise
            # The parent waits for this (WAIT_CANCELLATION_COMPLETED): the row is canceled in
            # PostgreSQL before the child is.
            await workflow.execute_local_activity(
                step_defs.cancel_task,
                CancelTaskRow(task_id=task.task_id, at=workflow.now()),
                start_to_close_timeout=timedelta(seconds=30),
                summary=f"cancel task {task.task_id}",
            )
            raise asyncio.CancelledError from err
        return TaskResult(task_id=task.task_id, status="completed", outcome=self._outcome)

    async def _timers(self, task: TaskInput) -> None:
        """The task's notices (R20), each at its time unless the task ends first. Durable timers:
        a worker restart does not lose them; one that fired while no worker ran fires late, once.
        Put off (`due_changed`), the task's notices are planned again from its new due time, but
        for those whose time has passed."""
        timers = task.timers()
        while True:
            planned = self._put_off
            for kind, at in timers:
                delay = at - workflow.now()
                if delay > timedelta(0):
                    try:
                        await workflow.wait_condition(
                            self._ended_or_put_off(planned),
                            timeout=delay,
                            timeout_summary=f"{kind} at {at:%Y-%m-%d %H:%M:%S} UTC",
                        )
                        if self._outcome is not None:
                            return  # completed first: nothing more to tell
                        break
                    except TimeoutError:
                        pass
                if self._put_off != planned:
                    break
                open_still = await workflow.execute_local_activity(
                    step_defs.notify_task,
                    TaskNotice(task_id=task.task_id, kind=kind, at=workflow.now(), plan=planned),
                    start_to_close_timeout=timedelta(seconds=30),
                    summary=f"{kind}: {task.title}",
                )
                if not open_still:
                    return
            else:  # every notice told: the task ends, or is put off
                await workflow.wait_condition(self._ended_or_put_off(planned))
                if self._outcome is not None:
                    return
            assert self._due_at is not None
            task = task.model_copy(update={"due_at": self._due_at})
            timers = [(kind, at) for kind, at in task.timers() if at > workflow.now()]

    def _ended_or_put_off(self, planned: int) -> Callable[[], bool]:
        """Whether the task has ended, or been put off since its timers were `planned`."""
        return lambda: self._outcome is not None or self._put_off != planned

    @workflow.signal(name=TASK_COMPLETED_SIGNAL)
    def task_completed(self, outcome: str) -> None:
        """Sent by the parent once the completion is stored."""
        self._outcome = outcome

    @workflow.signal(name=TASK_OWNER_SIGNAL)
    def owner_changed(self, owner: str) -> None:
        """Sent by the process when the task goes to another owner (its row says so already)."""
        self._owner = owner
        self._show()
        # Only if the run was started with it: a namespace without the attribute would refuse it.
        if workflow.info().typed_search_attributes.get(TASK_OWNER_ATTR) is not None:
            workflow.upsert_search_attributes([TASK_OWNER_ATTR.value_set(owner)])

    @workflow.signal(name=TASK_DUE_SIGNAL)
    def due_changed(self, due_at: datetime) -> None:
        """Sent by the process when the task is put off (its row says so already)."""
        self._due_at, self._put_off = due_at, self._put_off + 1
        self._due = f"{due_at:%Y-%m-%d %H:%M} UTC"
        self._show()

    def _show(self) -> None:
        """What the Web UI shows of the task beside its title: whose it is, when it is due."""
        workflow.set_current_details(f"{self._owner}, due {self._due}")
