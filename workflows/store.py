"""The process's business data, as it reads and writes it: each step one local activity (one
transaction, idempotent), retried as long as it takes (PostgreSQL may be down), with the summary
the Web UI shows for it. Each write carries its fence in the opportunity's journal, in runs that
have one (workflows/journal.py). The activities are named by `workflows.steps`; the data layer
runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import steps
    from workflows.definition import Process, ProcessDefinition, Stage
    from workflows.journal import Journal
    from workflows.rules import Refused
    from workflows.steps import (
        AddTaskRow,
        Authorize,
        CloseDateNotice,
        CompleteTaskRow,
        EnterStage,
        GateNotice,
        MigrateRow,
        OpenOpportunity,
        OpportunityRecord,
        ReassignRow,
        RefusalRow,
        StaleNotice,
        UpdateOpportunityRow,
        Write,
    )

ACTIVITY_TIMEOUT = timedelta(seconds=30)
T = TypeVar("T")
W = TypeVar("W", bound=Write)


class Store:
    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def _write(self, activity: Callable[[W], Awaitable[T]], row: W, summary: str) -> T:
        """A write, with its fence where the run journals its writes."""
        if not self._journal.on:
            return await _step(activity, row, summary)
        fence = self._journal.fence(row)
        try:
            result = await _step(activity, row.model_copy(update={"fence": fence}), summary)
        except BaseException:
            self._journal.failed()
            raise
        self._journal.settled(fence, getattr(result, "journal", None))
        return result

    async def open(self, cmd: OpenOpportunity) -> OpportunityRecord:
        return await self._write(steps.open_opportunity, cmd, "create or load the opportunity")

    async def load_process(self) -> Process:
        return await _step(steps.load_process, None, "load the process definition and stages")

    async def load_stages(self) -> list[Stage]:
        return await _step(steps.load_stages, None, "reload the stages lookup")

    async def close_reasons(self) -> list[str]:
        return await _step(steps.load_close_reasons, None, "load the close reasons")

    async def enter_stage(self, step: EnterStage) -> None:
        summary = f"enter {step.stage} (visit {step.visit_no}, {len(step.tasks)} tasks)"
        await self._write(steps.enter_stage, step, summary)

    async def complete_task(self, row: CompleteTaskRow, title: str) -> None:
        await self._write(steps.complete_task, row, f"complete {title}")

    async def add_task(self, row: AddTaskRow) -> None:
        await self._write(steps.add_task, row, f"add task {row.task.title}")

    async def update_opportunity(self, row: UpdateOpportunityRow) -> None:
        """Data the opportunity's table will not take is the command's fault: refused."""
        try:
            await self._write(
                steps.update_opportunity, row, "update opportunity data: " + ", ".join(row.changes)
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "InvalidData":
                raise Refused(f"Invalid data: {cause.message}") from None
            raise

    async def reassign(self, row: ReassignRow) -> None:
        await self._write(steps.reassign, row, f"reassign to {row.to_owner} ({len(row.task_ids)} open tasks)")

    async def approver(self, process: Process, stage: str, owner: str) -> str | None:
        """Who does the approval tasks of `stage` for `owner` (their manager), if it has any."""
        if not process.needs_approver(stage):
            return None
        return await _step(steps.find_manager, owner, f"who approves for {owner}")

    async def notify_gate(self, notice: GateNotice) -> None:
        await self._write(steps.notify_gate, notice, f"tell the owner what {notice.stage} needs")

    async def refreshed(self, process: Process) -> Process:
        """`process` with the stages an operator added to the lookup since the run loaded it. The
        run keeps its definition; a lookup it no longer fits is ignored (and logged)."""
        stages = await self.load_stages()
        try:
            return Process(definition=process.definition, stages=tuple(stages))
        except ValidationError as err:
            workflow.logger.warning("the stages lookup no longer fits this run: %s", err)
            return process

    async def definition(self, version: int) -> ProcessDefinition:
        try:
            return await _step(steps.load_definition, version, f"load definition version {version}")
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "UnknownVersion":
                raise Refused(cause.message) from None
            raise

    async def migrate(self, row: MigrateRow) -> None:
        await self._write(steps.migrate_visit, row, f"move onto version {row.to_version}")

    async def refused(self, row: RefusalRow) -> None:
        await self._write(steps.record_refusal, row, f"record that {row.command[:40]} was refused")

    async def notify_stale(self, notice: StaleNotice) -> None:
        await self._write(steps.notify_stale, notice, f"stale-deal notice: {notice.stage}")

    async def notify_close_date(self, notice: CloseDateNotice) -> None:
        await self._write(
            steps.notify_close_date, notice, f"expected close date {notice.expected_close_date} passed"
        )

    async def authorize(self, check: Authorize, actor: str | None) -> str | None:
        return await _step(steps.authorize, check, f"may {actor or 'someone'} {check.command}?")


async def _step(activity: Callable[..., Awaitable[T]], arg: Any, summary: str) -> T:
    args = () if arg is None else (arg,)
    try:
        return await workflow.execute_local_activity(
            activity, *args, start_to_close_timeout=ACTIVITY_TIMEOUT, summary=summary
        )
    except ActivityError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == "Superseded":
            # A later attempt of this workflow task has written: this one is lost. Failing the
            # workflow task (not the workflow) lets the server's attempt go on.
            raise RuntimeError(f"this workflow task has been superseded: {cause.message}") from None
        raise
