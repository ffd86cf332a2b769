"""The process's business data, as it reads and writes it: each step one local activity (one
transaction, idempotent), with the summary the Web UI shows for it. The activities are named by
`workflows.step_defs`; the data layer runs them.

Each write carries its fence (workflows/journal.py), and a step is tried for a bounded time: one
that gives up (PostgreSQL not answering) is `Unavailable`, and the command is not applied now; one
that fails for its data is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows import step_defs
    from workflows.definition import Process, ProcessDefinition, Stage
    from workflows.journal import Journal
    from workflows.refusals import AlreadyApplied, NotAllowed, Refused, Unavailable
    from workflows.steps import (
        AddTaskRow,
        Authorize,
        CloseDateNotice,
        CommandWrite,
        CompleteTaskRow,
        EnterStage,
        GateNotice,
        MigrateRow,
        OpenOpportunity,
        OpportunityRecord,
        ProcessVersion,
        ReassignRow,
        RefusalRow,
        StaleNotice,
        UpdateOpportunityRow,
        Write,
    )

# A journaled run's steps: each attempt at most 5 s, all of them at most 10 s, backing off from
# 0.2 s to 2 s; then the step gives up, and the process's lock is free again.
ATTEMPT_TIMEOUT, STEP_TIMEOUT = timedelta(seconds=5), timedelta(seconds=10)
BOUNDED = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=10,
)
RETRY_TIMER = timedelta(seconds=1)
T = TypeVar("T")
W = TypeVar("W", bound=Write)


class Store:
    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def _write(self, activity: Callable[[W], Awaitable[T]] | str, row: W, summary: str) -> T:
        """A write, with its fence (workflows/journal.py)."""
        fence = self._journal.fence(row)
        try:
            result = await self._step(activity, row.model_copy(update={"fence": fence}), summary)
        except FailureError as err:
            self._journal.failed()
            failure = _failure(err)
            if isinstance(failure, ApplicationError) and failure.type == "InvalidData":
                raise Refused(f"Invalid data: {failure.message}") from None
            if isinstance(failure, ApplicationError) and failure.type == "NotAllowed":
                raise NotAllowed(failure.message) from None  # the write's permission check
            if isinstance(failure, ApplicationError) and failure.type == "AlreadyApplied":
                raise AlreadyApplied(str(failure.details[0]) if failure.details else "") from None
            raise
        except BaseException:
            self._journal.failed()
            raise
        self._journal.settled(fence, getattr(result, "journal", None))
        return result

    async def _step(self, activity: Callable[..., Awaitable[T]] | str, arg: Any, summary: str) -> T:
        return await _step(activity, arg, summary)

    async def write(self, row: CommandWrite, summary: str) -> None:
        """A command's write, by the step its row names: activities/data/writes.py does it."""
        await self._write(row.STEP, row, summary)

    async def open(self, cmd: OpenOpportunity) -> OpportunityRecord:
        return await self._write(step_defs.open_opportunity, cmd, "create or load the opportunity")

    async def load_process(self, process: str) -> Process:
        return await self._step(step_defs.load_process, process, "load the process definition and stages")

    async def load_stages(self) -> list[Stage]:
        return await self._step(step_defs.load_stages, None, "reload the stages lookup")

    async def close_reasons(self) -> list[str]:
        return await self._step(step_defs.load_close_reasons, None, "load the close reasons")

    async def enter_stage(self, step: EnterStage) -> None:
        summary = f"enter {step.stage} (visit {step.visit_no}, {len(step.tasks)} tasks)"
        await self._write(step_defs.enter_stage, step, summary)

    async def complete_task(self, row: CompleteTaskRow, title: str) -> None:
        then = f", enter {row.enter.stage} (visit {row.enter.visit_no})" if row.enter else ""
        await self._write(step_defs.complete_task, row, f"complete {title}{then}")

    async def add_task(self, row: AddTaskRow) -> None:
        await self._write(step_defs.add_task, row, f"add task {row.task.title}")

    async def update_opportunity(self, row: UpdateOpportunityRow) -> None:
        """Data the opportunity's table will not take is the command's fault: refused (`_write`)."""
        await self._write(
            step_defs.update_opportunity, row, "update opportunity data: " + ", ".join(row.changes)
        )

    async def reassign(self, row: ReassignRow) -> None:
        summary = f"reassign to {row.to_owner} ({len(row.task_ids)} open tasks)"
        await self._write(step_defs.reassign, row, summary)

    async def approver(self, process: Process, stage: str, owner: str) -> str | None:
        """Who does the approval tasks of `stage` for `owner` (their manager), if it has any."""
        if not process.needs_approver(stage):
            return None
        return await self._step(step_defs.find_manager, owner, f"who approves for {owner}")

    async def notify_gate(self, notice: GateNotice) -> None:
        await self._write(step_defs.notify_gate, notice, f"tell the owner what {notice.stage} needs")

    async def refreshed(self, process: Process) -> Process:
        """`process` with the stages an operator added to the lookup since the run loaded it. The
        run keeps its definition; a lookup it no longer fits is ignored (and logged)."""
        stages = await self.load_stages()
        try:
            return Process(definition=process.definition, stages=tuple(stages))
        except ValidationError as err:
            workflow.logger.warning("the stages lookup no longer fits this run: %s", err)
            return process

    async def definition(self, process: str, version: int) -> ProcessDefinition:
        wanted = ProcessVersion(process=process, version=version)
        try:
            return await self._step(step_defs.load_definition, wanted, f"load definition version {version}")
        except FailureError as err:
            failure = _failure(err)
            if isinstance(failure, ApplicationError) and failure.type == "UnknownVersion":
                raise Refused(failure.message) from None
            raise

    async def migrate(self, row: MigrateRow) -> None:
        await self._write(step_defs.migrate_visit, row, f"move onto version {row.to_version}")

    async def refused(self, row: RefusalRow) -> None:
        await self._write(step_defs.record_refusal, row, f"record that {row.command[:40]} was refused")

    async def notify_stale(self, notice: StaleNotice) -> None:
        await self._write(step_defs.notify_stale, notice, f"stale-deal notice: {notice.stage}")

    async def notify_close_date(self, notice: CloseDateNotice) -> None:
        await self._write(
            step_defs.notify_close_date, notice, f"expected close date {notice.expected_close_date} passed"
        )

    async def authorize(self, check: Authorize, actor: str | None) -> str | None:
        return await self._step(step_defs.authorize, check, f"may {actor or 'someone'} {check.command}?")


async def _step(activity: Callable[..., Awaitable[T]] | str, arg: Any, summary: str) -> T:
    args = () if arg is None else (arg,)
    try:
        return await workflow.execute_local_activity(
            activity,
            *args,
            start_to_close_timeout=ATTEMPT_TIMEOUT,
            schedule_to_close_timeout=STEP_TIMEOUT,
            retry_policy=BOUNDED,
            # A wait of a second or more between attempts is a timer: the workflow task completes
            # meanwhile, and queries are answered (they wait for a workflow task in flight).
            local_retry_threshold=RETRY_TIMER,
            summary=summary,
        )
    except FailureError as err:
        failure = _failure(err)
        if isinstance(failure, ApplicationError) and failure.type == "Superseded":
            # A later attempt of this workflow task has written: this one is lost. Failing the
            # workflow task (not the workflow) lets the server's attempt go on.
            raise RuntimeError(f"this workflow task has been superseded: {failure.message}") from None
        if not (isinstance(failure, ApplicationError) and failure.non_retryable):
            # It gave up (attempts or time spent): the database is away, not the command wrong.
            why = failure.message if isinstance(failure, ApplicationError) else str(failure)
            raise Unavailable(
                f"Not applied now: PostgreSQL did not answer ({summary}: {why or type(failure).__name__});"
                " send the command again with the same request id."
            ) from None
        raise


def _failure(err: FailureError) -> BaseException | None:
    """What made a local activity fail. It raises the last attempt's failure itself, or, timed
    out, an ActivityError around the time-out when live and the time-out itself on replay
    (temporalio 1.35): each is read the same way, so a run and its replay decide alike."""
    return err.cause if isinstance(err, ActivityError) else err
