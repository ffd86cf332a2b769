"""The steps the process takes, as it sees them: the names and shapes of the activities the worker
registers (activities/sale.py, activities/task_workflows.py, which a unit test holds to these).
The process calls them by these, so that it imports nothing of the data layer above it. (Their
payloads are plain models, in workflows/steps.py.)"""

from __future__ import annotations

from temporalio import activity

from workflows.definition import Process, ProcessDefinition, Stage
from workflows.fields import DEFAULT_PROCESS
from workflows.steps import (
    AddTaskRow,
    Authorize,
    CancelTaskRow,
    CloseDateNotice,
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
)


@activity.defn(name="open_opportunity")
async def open_opportunity(cmd: OpenOpportunity) -> OpportunityRecord:
    raise NotImplementedError


@activity.defn(name="load_process")
async def load_process(process: str = DEFAULT_PROCESS) -> Process:
    raise NotImplementedError


@activity.defn(name="load_stages")
async def load_stages() -> list[Stage]:
    raise NotImplementedError


@activity.defn(name="enter_stage")
async def enter_stage(step: EnterStage) -> None:
    raise NotImplementedError


@activity.defn(name="complete_task")
async def complete_task(row: CompleteTaskRow) -> None:
    raise NotImplementedError


@activity.defn(name="cancel_task")
async def cancel_task(row: CancelTaskRow) -> None:
    raise NotImplementedError


@activity.defn(name="update_opportunity")
async def update_opportunity(row: UpdateOpportunityRow) -> None:
    raise NotImplementedError


@activity.defn(name="load_close_reasons")
async def load_close_reasons() -> list[str]:
    raise NotImplementedError


@activity.defn(name="add_task")
async def add_task(row: AddTaskRow) -> None:
    raise NotImplementedError


@activity.defn(name="reassign")
async def reassign(row: ReassignRow) -> None:
    raise NotImplementedError


@activity.defn(name="load_definition")
async def load_definition(wanted: ProcessVersion | int) -> ProcessDefinition:
    raise NotImplementedError


@activity.defn(name="migrate_visit")
async def migrate_visit(row: MigrateRow) -> None:
    raise NotImplementedError


@activity.defn(name="record_refusal")
async def record_refusal(row: RefusalRow) -> None:
    raise NotImplementedError


@activity.defn(name="authorize")
async def authorize(check: Authorize) -> str | None:
    raise NotImplementedError


@activity.defn(name="notify_task")
async def notify_task(notice: TaskNotice) -> bool:
    raise NotImplementedError


@activity.defn(name="notify_stale")
async def notify_stale(notice: StaleNotice) -> None:
    raise NotImplementedError


@activity.defn(name="notify_close_date")
async def notify_close_date(notice: CloseDateNotice) -> None:
    raise NotImplementedError


@activity.defn(name="find_manager")
async def find_manager(person: str) -> str | None:
    raise NotImplementedError


@activity.defn(name="notify_gate")
async def notify_gate(notice: GateNotice) -> None:
    raise NotImplementedError
