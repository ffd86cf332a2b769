"""The business events' data, one model per kind (the CloudEvent's type is com.corpsale.<kind>):
part of the public contract (workflows/contract.py re-exports them)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _EventData(BaseModel):
    """Every time in an event's data is RFC 3339 (`2030-05-04T10:00:00+00:00`), a task is named by
    its `task_id`, and within an opportunity an event's `time` is never before that of the event
    numbered before it."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_TIME = "RFC 3339, as every time in event data."


class OpportunityStarted(_EventData):
    """A process created the opportunity."""

    title: str
    customer: str
    owner: str
    actor: str


class StageEntered(_EventData):
    stage: str
    left: str | None = Field(description="The stage the opportunity left (none on its first entry).")
    visit: int
    actor: str
    reason: str | None
    definition_version: int | None


class TaskCreated(_EventData):
    task_id: str
    title: str
    owner: str
    due_at: datetime = Field(description=_TIME)
    stage: str = Field(description="The stage whose visit opened the task.")
    visit: int
    adhoc: bool = False


class TaskCompleted(_EventData):
    task_id: str
    outcome: str
    actor: str | None
    comment: str | None


class TaskCanceled(_EventData):
    task_id: str


class TaskSnoozed(_EventData):
    task_id: str
    due_at: datetime = Field(description=f"When the task is due now; {_TIME}")
    was_due_at: datetime = Field(description=f"When it was due before; {_TIME}")
    actor: str
    reason: str | None


class TaskClaimed(_EventData):
    """A member took a task of their team's queue: it is theirs now."""

    task_id: str
    team: str
    claimed_by: str
    actor: str


class TaskReleased(_EventData):
    """A claimed task given back to its team's queue."""

    task_id: str
    team: str
    released_by: str
    actor: str
    reason: str | None


class OpportunityReassigned(_EventData):
    from_owner: str = Field(alias="from")
    to: str
    actor: str
    reason: str | None
    task_ids: list[str]


class OpportunityUpdated(_EventData):
    changes: dict[str, Any] = Field(description="The fields changed, with their new values.")


class OrderDraft(_EventData):
    id: str
    amount: Decimal | None


class OpportunityClosed(_EventData):
    stage: str
    actual_income: Decimal | None
    hours_spent: Decimal | None
    reason: str | None
    competitor: str | None
    actor: str


class CommandRefused(_EventData):
    """The process refused a command it was sent (a signal, or an update its validator let in:
    one its validator refused is answered at once and recorded nowhere). Nothing changed."""

    command: str
    reason: str
    request_id: str | None
    actor: str | None
    digest: str | None = Field(
        default=None,
        description="The command's fingerprint, to tell which it was when it had no request id: the"
        " first 16 hex digits of SHA-256 of the JSON [name, payload without request_id], keys"
        " sorted, non-ASCII as is (commands since 2026-12).",
    )


class OpportunityMigrated(_EventData):
    """The process moved onto another definition version, in its stage."""

    stage: str
    from_version: int
    to_version: int
    actor: str
    kept: list[str] = Field(description="Open tasks kept as they were.")
    canceled: list[str] = Field(description="Open tasks whose key the new version's stage does not have.")
    opened: list[str] = Field(description="Tasks of the new version's stage that the visit did not have.")
    to_process: str | None = Field(
        default=None,
        description="The sales process it moved onto, when another (its events say it from now).",
    )


class OpportunityWon(OpportunityClosed):
    order: OrderDraft | None = Field(description="The order draft made for the customer.")


EVENTS: dict[str, type[BaseModel]] = {
    "opportunity.started": OpportunityStarted,
    "stage.entered": StageEntered,
    "task.created": TaskCreated,
    "task.completed": TaskCompleted,
    "task.canceled": TaskCanceled,
    "task.snoozed": TaskSnoozed,
    "task.claimed": TaskClaimed,
    "task.released": TaskReleased,
    "opportunity.reassigned": OpportunityReassigned,
    "opportunity.updated": OpportunityUpdated,
    "opportunity.won": OpportunityWon,
    "opportunity.lost": OpportunityClosed,
    "command.refused": CommandRefused,
    "opportunity.migrated": OpportunityMigrated,
}
