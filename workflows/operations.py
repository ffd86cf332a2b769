"""The operations' models: bulk runs (their selection, pages and progress) and the plan of a
move onto another definition version. Part of the public contract (workflows/contract.py
re-exports them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.fields import DEFAULT_PROCESS


class Selection(BaseModel):
    """Which open opportunities a bulk run takes (`--where`); every term must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stage: str | None = None
    owner: str | None = None
    version: int | None = Field(default=None, description="the definition version their process follows")
    process: str | None = Field(default=None, description="the sales process they run")
    quiet_days: int | None = Field(
        default=None, description="no stage entered, task done or change for so many days"
    )


class BulkSelect(BaseModel):
    bulk_id: str
    command: str  # the command's name (reassign, change_stage)
    payload: dict[str, Any]  # sent to each, with a request id of its own
    query: str  # as the operator wrote it
    selection: Selection
    actor: str


class BulkPage(BaseModel):
    bulk_id: str
    update: str
    size: int
    in_flight: int


class BulkCounts(BaseModel):
    pending: int = 0
    done: int = 0
    refused: int = 0
    skipped: int = 0
    canceled: bool = False  # a page found the run canceled (`corpsale bulk cancel`)


class BulkInput(BaseModel):
    """A bulk run: its selection is fixed by its first step, then it sends a page at a time."""

    run: BulkSelect
    update: str
    page: int = Field(default=50, ge=1, le=1000)
    in_flight: int = Field(default=10, ge=1, le=100)
    pages_per_run: int = Field(default=20, ge=1)  # then it continues as new
    total: int | None = None  # known once selected (carried to the next run)
    counts: BulkCounts = BulkCounts()


class BulkProgress(BaseModel):
    bulk_id: str
    command: str
    query: str
    state: Literal["selecting", "sending", "done", "canceled"]
    total: int | None
    counts: BulkCounts


class PlannedTask(BaseModel):
    task_id: str
    key: str
    title: str
    due_at: datetime | None = None
    approval: bool = False


class MigrationPlan(BaseModel):
    """What moving a process onto another definition version does (the `migration_plan` query
    answers it without doing it; `migrate_definition` does exactly this)."""

    opportunity_id: str
    stage: str | None
    from_version: int
    to_version: int
    from_process: str = DEFAULT_PROCESS
    to_process: str = DEFAULT_PROCESS
    refused: str | None = Field(default=None, description="Why it cannot move; then nothing changes.")
    kept: list[PlannedTask] = []
    canceled: list[PlannedTask] = []
    opened: list[PlannedTask] = []
