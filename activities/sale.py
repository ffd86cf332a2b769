"""The activities of the corporate sale process: one business step each, one transaction each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.data import (
    access,
    definitions,
    events,
    journal,
    notices,
    repository,
    stage_visits,
    versions,
    writes,
)
from workflows.definition import Process, ProcessDefinition, Stage
from workflows.fields import DEFAULT_PROCESS
from workflows.steps import (
    AddTaskRow,
    Authorize,
    CancelTaskRow,
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
    TaskNotice,
    UpdateOpportunityRow,
    Write,
)

T = TypeVar("T")


class _NotAllowed(Exception):
    """A write's permission check refused its command (the text says why)."""


# What says the data, not the database, is wrong (a value out of range, text it cannot hold).
DATA_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    OverflowError,
    UnicodeEncodeError,
)


def _queue() -> str:
    """The task queue of the process that runs this step: its worker's journal relay confirms it."""
    return activity.info().task_queue


async def _unless_superseded(write: Awaitable[T]) -> T:
    try:
        return await write
    except journal.Superseded as err:  # a lost attempt's step: its workflow task will not complete
        raise ApplicationError(str(err), type="Superseded", non_retryable=True) from None
    except journal.AlreadyApplied as err:  # a retry of a request applied long ago
        raise ApplicationError(
            "the request was applied before",
            err.fingerprint,
            type="AlreadyApplied",
            non_retryable=True,
            category=ApplicationErrorCategory.BENIGN,
        ) from None


class SaleActivities:
    """Holds the worker's one asyncpg pool; tests can hand it another."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn
    async def open_opportunity(self, cmd: OpenOpportunity) -> OpportunityRecord:
        """Create the opportunity (R1) or read the existing one (R2): the process's opening."""
        async with self._pool.acquire() as conn:
            if cmd.fence is None:  # a run from before the journal
                async with events.transaction(conn, cmd.opportunity_id):
                    return await self._open(conn, cmd)
            record, start = await _unless_superseded(
                journal.open_process(
                    conn,
                    cmd.opportunity_id,
                    cmd.fence,
                    lambda: self._open(conn, cmd),
                    OpportunityRecord.model_validate,
                    task_queue=_queue(),
                )
            )
            return record.model_copy(update={"journal": start})

    @staticmethod
    async def _open(conn: asyncpg.Connection, cmd: OpenOpportunity) -> OpportunityRecord:
        if cmd.process is not None:
            try:
                await definitions.known(conn, cmd.process)
            except definitions.UnknownProcess as err:
                raise ApplicationError(
                    f"{err}: start the deal with one of them",
                    type="UnknownProcess",
                    non_retryable=True,
                    category=ApplicationErrorCategory.BENIGN,
                ) from None
        if cmd.new is not None:
            await repository.insert_opportunity(conn, cmd)
        await repository.choose_process(conn, cmd.opportunity_id, cmd.process)
        try:
            record = await repository.get_opportunity(conn, cmd.opportunity_id)
        except ValidationError as err:
            raise ApplicationError(
                f"Opportunity {cmd.opportunity_id!r} has stored data the process cannot take"
                f" ({err.error_count()} problems: {err.errors()[0]['msg']}); correct it first.",
                type="InvalidStoredData",
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            ) from err
        if record is None:
            raise ApplicationError(
                f"No opportunity {cmd.opportunity_id!r}: start it with new opportunity data"
                " (title, customer, owner) to create it.",
                type="OpportunityNotFound",
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            )
        if cmd.new is not None and record.stage is None:
            return record
        if cmd.new is not None and (record.data.get("title"), record.data.get("customer"), record.owner) != (
            cmd.new.title,
            cmd.new.customer,
            cmd.new.owner,
        ):
            raise ApplicationError(
                f"Opportunity {cmd.opportunity_id!r} exists already with other data: start its"
                " process as an existing opportunity, or choose another id.",
                type="OpportunityExists",
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            )
        return record

    @activity.defn
    async def load_process(self, process: str = DEFAULT_PROCESS) -> Process:
        """The latest published definition of `process` (R16), checked against the stages lookup
        as it is now. The run keeps it to its end."""
        async with self._pool.acquire() as conn:
            definition = await definitions.latest(conn, process)
            stages = await repository.load_stages(conn)
        try:
            return Process(definition=definition, stages=tuple(stages))
        except ValueError as err:
            raise ApplicationError(
                f"The process definition does not fit the stages lookup: {err}",
                type="InvalidProcess",
            ) from err

    @activity.defn
    async def load_stages(self) -> list[Stage]:
        """The Opportunity stages lookup as it is now (operators change it while processes run)."""
        async with self._pool.acquire() as conn:
            return await repository.load_stages(conn)

    async def _write(
        self, opportunity_id: str, row: Write, step: str, apply: Callable[[asyncpg.Connection], Any]
    ) -> None:
        """One write of a process: journaled when it carries a fence (activities/data/journal.py). The
        command's permission check, when the write carries it, comes first in its transaction: a
        refusal writes nothing. Data the database will not take fails it once, for good (retrying
        cannot help): the process refuses the command. (Runs from before the journal retry it, but
        for data updates.)"""
        fence, check = row.fence, row.check

        async def checked(conn: asyncpg.Connection) -> Any:
            if check is not None:
                refusal = await access.authorize(conn, check)
                if refusal is not None:
                    raise _NotAllowed(refusal)  # the transaction is rolled back
            return await apply(conn)

        try:
            async with self._pool.acquire() as conn:
                checked_write = journal.write(
                    conn, opportunity_id, fence, step, lambda: checked(conn), task_queue=_queue()
                )
                await _unless_superseded(checked_write)
        except _NotAllowed as err:
            raise ApplicationError(
                str(err), type="NotAllowed", non_retryable=True, category=ApplicationErrorCategory.BENIGN
            ) from None
        except DATA_ERRORS as err:
            if fence is None and step != "update_opportunity":
                raise
            raise ApplicationError(
                f"the database refused the data: {err}",
                type="InvalidData",
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,  # an answer to the command: no traceback
            ) from err

    @activity.defn
    async def enter_stage(self, step: EnterStage) -> None:
        await self._write(
            step.opportunity_id, step, "enter_stage", lambda c: stage_visits.enter_stage(c, step)
        )

    @activity.defn
    async def complete_task(self, row: CompleteTaskRow) -> None:
        opportunity_id = row.opportunity_id
        if opportunity_id is None:  # a run from before the journal names only the task
            async with self._pool.acquire() as conn:
                opportunity_id = await repository.task_opportunity(conn, row.task_id)
            if opportunity_id is None:
                return
        known: str = opportunity_id

        async def apply(conn: asyncpg.Connection) -> None:
            await repository.complete_task(conn, row, known)
            if row.enter is not None:  # the move the completion makes, in its transaction
                await stage_visits.enter_stage(conn, row.enter)

        await self._write(known, row, "complete_task", apply)

    @activity.defn
    async def cancel_task(self, row: CancelTaskRow) -> None:
        async with self._pool.acquire() as conn:
            await repository.cancel_task(conn, row)

    @activity.defn
    async def update_opportunity(self, row: UpdateOpportunityRow) -> None:
        await self._write(
            row.opportunity_id,
            row,
            "update_opportunity",
            lambda c: repository.update_opportunity(c, row),
        )

    @activity.defn
    async def load_close_reasons(self) -> list[str]:
        async with self._pool.acquire() as conn:
            return await repository.close_reasons(conn)

    @activity.defn
    async def add_task(self, row: AddTaskRow) -> None:
        await self._write(row.opportunity_id, row, "add_task", lambda c: repository.add_task(c, row))

    @activity.defn
    async def reassign(self, row: ReassignRow) -> None:
        await self._write(row.opportunity_id, row, "reassign", lambda c: repository.reassign(c, row))

    @activity.defn
    async def load_definition(self, wanted: ProcessVersion | int) -> ProcessDefinition:
        if isinstance(wanted, int):
            wanted = ProcessVersion(process=DEFAULT_PROCESS, version=wanted)
        async with self._pool.acquire() as conn:
            try:
                return await definitions.version(conn, wanted.version, wanted.process)
            except LookupError as err:
                raise ApplicationError(
                    f"{err} (`corpsale definition versions --process {wanted.process}`).",
                    type="UnknownVersion",
                    non_retryable=True,
                ) from None

    @activity.defn
    async def migrate_visit(self, row: MigrateRow) -> None:
        await self._write(row.opportunity_id, row, "migrate_visit", lambda c: versions.migrate_visit(c, row))

    @activity.defn
    async def record_refusal(self, row: RefusalRow) -> None:
        await self._write(
            row.opportunity_id, row, "record_refusal", lambda c: repository.record_refusal(c, row)
        )

    @activity.defn
    async def authorize(self, check: Authorize) -> str | None:
        """None if the command may go ahead (R24), else why not."""
        async with self._pool.acquire() as conn:  # reads only: no transaction of its own
            return await access.authorize(conn, check)

    @activity.defn
    async def notify_task(self, notice: TaskNotice) -> bool:
        """Returns whether the task was still open (a notice for a finished one is not sent)."""
        async with self._pool.acquire() as conn:
            return await notices.notify_task(conn, notice)

    @activity.defn
    async def notify_stale(self, notice: StaleNotice) -> None:
        await self._write(
            notice.opportunity_id, notice, "notify_stale", lambda c: notices.notify_stale(c, notice)
        )

    @activity.defn
    async def notify_close_date(self, notice: CloseDateNotice) -> None:
        await self._write(
            notice.opportunity_id,
            notice,
            "notify_close_date",
            lambda c: notices.notify_close_date(c, notice),
        )

    @activity.defn
    async def find_manager(self, person: str) -> str | None:
        async with self._pool.acquire() as conn:
            return await repository.find_manager(conn, person)

    @activity.defn
    async def notify_gate(self, notice: GateNotice) -> None:
        await self._write(
            notice.opportunity_id, notice, "notify_gate", lambda c: notices.notify_gate(c, notice)
        )

    def _command_write(
        self, model: type[CommandWrite], apply: Callable[[asyncpg.Connection, Any], Awaitable[None]]
    ) -> Callable[..., Any]:
        """The local activity of a command's write (activities/data/writes.py), named by its step."""

        async def write(row: CommandWrite) -> None:
            await self._write(row.opportunity_id, row, model.STEP, lambda c: apply(c, row))

        write.__annotations__ = {"row": model, "return": None}  # what the payload decodes to
        write.__name__ = write.__qualname__ = model.STEP
        return activity.defn(name=model.STEP)(write)

    def all(self) -> list[Callable[..., Any]]:
        return [
            *(self._command_write(m, apply) for m, apply in writes.WRITES.items()),
            self.open_opportunity,
            self.load_process,
            self.load_stages,
            self.enter_stage,
            self.complete_task,
            self.cancel_task,
            self.update_opportunity,
            self.reassign,
            self.add_task,
            self.load_close_reasons,
            self.authorize,
            self.record_refusal,
            self.load_definition,
            self.migrate_visit,
            self.notify_task,
            self.notify_stale,
            self.notify_gate,
            self.find_manager,
            self.notify_close_date,
        ]
