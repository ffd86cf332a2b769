"""The public contract: the payloads other services send and the state they read.

Signal, update and query names are fixed by the spec; the models here are the JSON shapes. Every
command model forbids unknown fields and bounds its strings, so bad input cannot be expressed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from workflows.fields import (
    DEFAULT_PROCESS,
    Hours,
    Identifier,
    Money,
    Name,
    ProcessName,
    Text,
    When,
)
from workflows.opportunity_data import NewOpportunity as NewOpportunity
from workflows.opportunity_data import OpportunityFields as OpportunityFields

WORKFLOW_ID_PREFIX = "opportunity-"
WORKFLOW_TYPE = "CorporateSale"
DEFAULT_TASK_QUEUE = "corporate-sale"

# Names of signals, updates and the query (public contract).
SIGNAL_CHANGE_STAGE = "change_stage"
SIGNAL_COMPLETE_TASK = "complete_task"
SIGNAL_UPDATE_OPPORTUNITY = "update_opportunity"
UPDATE_CHANGE_STAGE = "change_stage_update"
UPDATE_COMPLETE_TASK = "complete_task_update"
UPDATE_UPDATE_OPPORTUNITY = "update_opportunity_update"
SIGNAL_REASSIGN = "reassign"
UPDATE_REASSIGN = "reassign_update"
SIGNAL_ADD_TASK = "add_task"
UPDATE_ADD_TASK = "add_task_update"
SIGNAL_SNOOZE_TASK = "snooze_task"
UPDATE_SNOOZE_TASK = "snooze_task_update"
SIGNAL_CLAIM_TASK = "claim_task"
UPDATE_CLAIM_TASK = "claim_task_update"
SIGNAL_RELEASE_TASK = "release_task"
UPDATE_RELEASE_TASK = "release_task_update"
ADHOC_OUTCOME = "done"
QUERY_STATE = "state"
# What a run says of its writes to PostgreSQL (settled, in flight): asked by the worker's journal relay.
QUERY_JOURNAL = "journal"
# Which patches a run has (docs/versioning.md): asked by `corpsale check`.
QUERY_PATCHES = "patches"
# The types of the application errors a caller gets (docs/contract.md, Errors).
COMMAND_REFUSED = "CommandRefused"  # refused for good: the message says why
HANDING_OVER = "HandingOver"  # send the same request again: the next run takes it
UNAVAILABLE = "Unavailable"  # not applied now (PostgreSQL not answering): send the same request again
INVALID_START = "InvalidStart"  # the start cannot be this opportunity's process: the run failed
# Update failures that say "not now", or leave the outcome unknown (the run that took the update
# ended before answering it), or come from Temporal for an update no workflow code saw (the
# workflow task that carried it completed without it: "UnprocessedUpdate"): the same request sent
# again is applied once, or answered as it was.
NOT_NOW = frozenset({HANDING_OVER, UNAVAILABLE, "AcceptedUpdateCompletedWorkflow", "UnprocessedUpdate"})


def workflow_id(opportunity_id: str) -> str:
    return f"{WORKFLOW_ID_PREFIX}{opportunity_id}"


# Each task of a process runs as a workflow of its own (its timers), `task-<task id>`.
TASK_WORKFLOW_TYPE = "SaleTask"
TASK_COMPLETED_SIGNAL = "task_completed"
TASK_OWNER_SIGNAL = "owner_changed"
TASK_DUE_SIGNAL = "due_changed"


def task_workflow_id(task_id: str) -> str:
    return f"task-{task_id}"


# A bulk command runs as a workflow of its own, `bulk-<id>`, sending one command per opportunity.
BULK_WORKFLOW_TYPE = "BulkCommand"
QUERY_BULK_PROGRESS = "progress"


def bulk_workflow_id(bulk_id: str) -> str:
    return f"bulk-{bulk_id}"


def bulk_request_id(bulk_id: str, opportunity_id: str) -> str:
    """The request id of a bulk run's command to one opportunity: the same on every retry; a
    digest of the opportunity's id where the id is too long for a request id (100 characters)."""
    plain = f"bulk-{bulk_id}-{opportunity_id}"
    if len(plain) <= 100:
        return plain
    return f"bulk-{bulk_id}-{hashlib.sha256(opportunity_id.encode()).hexdigest()[:32]}"


def start_summary(opportunity_id: str, title: str | None = None, customer: str | None = None) -> str:
    """The static summary a process is started with: what ops read first in the Web UI."""
    return f"{title} — {customer}" if title and customer else f"opportunity {opportunity_id}"


# A won opportunity's follow-up tasks (R13) are `<opportunity>:followup:<task key>`.
FOLLOW_UP_MARK = ":followup:"


def follow_up_task_id(opportunity_id: str, key: str) -> str:
    return f"{opportunity_id}{FOLLOW_UP_MARK}{key}"


class Signature(BaseModel):
    """A registered service vouches for the command and its actor (R24): an HMAC-SHA256, with the
    service's key, of the command as sent (docs/contract.md, "Signed commands")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: Identifier
    signed_at: When
    mac: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Command(BaseModel):
    """Fields every command shares. A repeated `request_id` is applied once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Identifier | None = None
    signature: Signature | None = None


class ChangeStage(Command):
    """Move the opportunity to a stage (forward, back, or to a final stage)."""

    stage: Name
    actor: Name
    reason: Text | None = None
    restart: bool = Field(default=False, description="Re-enter the current stage with fresh tasks.")
    actual_income: Money | None = Field(default=None, description="For a successful final stage.")
    hours_spent: Hours | None = None
    competitor: Name | None = Field(default=None, description="Who won, for a lost stage.")
    override: bool = Field(
        default=False,
        description="Enter the stage although its entry requirements are not met (the owner's"
        " manager or an admin, with a reason); recorded with the visit.",
    )


class Reassign(Command):
    """Give the opportunity to another owner (R19): its open tasks and every later task and
    notification go to the new owner; both owners are told."""

    owner: Name
    actor: Name
    reason: Text | None = None


class AddTask(Command):
    """An operator's own task on the opportunity (R18). Stage changes do not cancel it and it
    never holds up the move to the next stage; closing the opportunity cancels it if open."""

    title: Name
    actor: Name
    owner: Name | None = Field(default=None, description="Default: the opportunity's owner.")
    due_at: When | None = Field(default=None, description="Default: one day after it is added.")


class SnoozeTask(Command):
    """Put off an open task: it is due at `due_at` from now on, and its reminders move with it
    (R20). The task's owner, the deal's owner, the manager of either, or an admin may."""

    task_id: Identifier
    due_at: When
    actor: Name
    reason: Text | None = None


class ClaimTask(Command):
    """Take an open task of a team's queue: it becomes the actor's, the other members are told,
    and only the actor (or an admin) may complete it. A member of the team may; one claim wins."""

    task_id: Identifier
    actor: Name


class ReleaseTask(Command):
    """Give a claimed task back to its team's queue. The member who claimed it, or an admin, may."""

    task_id: Identifier
    actor: Name
    reason: Text | None = None


class CompleteTask(Command):
    """Complete an open task with an outcome (the task's default outcome when omitted)."""

    task_id: Identifier
    outcome: Name | None = None
    actor: Name
    comment: Text | None = None
    actual_income: Money | None = Field(
        default=None, description="When this completion closes the opportunity as won: the income."
    )
    hours_spent: Hours | None = Field(
        default=None, description="When this completion closes the opportunity as won: the hours spent."
    )


class UpdateOpportunity(OpportunityFields):
    """A partial opportunity: the fields given replace the stored ones."""

    request_id: Identifier | None = None
    actor: Name | None = None
    signature: Signature | None = None

    @model_validator(mode="after")
    def _required_stay_set(self) -> Self:
        cleared = [
            f for f in ("title", "customer") if f in self.model_fields_set and getattr(self, f) is None
        ]
        if cleared:
            raise ValueError(f"{', '.join(cleared)} cannot be cleared")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"request_id", "actor", "signature"}, mode="json")


class StartProcess(BaseModel):
    """Workflow input. `new` creates the opportunity (R1); without it the opportunity exists (R2)."""

    model_config = ConfigDict(extra="forbid")

    opportunity_id: Identifier
    actor: Name
    new: NewOpportunity | None = None
    process: ProcessName | None = Field(
        default=None,
        description="The sales process to run (`corpsale processes`); none: the opportunity's own"
        " (a new one's: the library's default, corporate-sale unless changed).",
    )
    continue_as_new_after_events: int | None = Field(
        default=None, ge=50, le=10_000, description="Hand over to a new run after this many history events."
    )
    continue_as_new_after_updates: int | None = Field(
        default=None, ge=10, le=1_000, description="Hand over to a new run after this many updates."
    )


TaskStatus = Literal["open", "completed", "canceled"]


class TaskView(BaseModel):
    task_id: str
    title: str
    stage: str
    owner: str
    start_at: datetime
    due_at: datetime
    status: TaskStatus = "open"
    outcome: str | None = None
    outcomes: list[str] = []
    adhoc: bool = Field(default=False, description="Added by an operator (R18), not by the process.")
    approval: bool = Field(
        default=False, description="An approval: its owner is the approver, the only one who may complete it."
    )
    team: str | None = Field(
        default=None,
        description="The team whose queue the task is in: owned by `team:NAME` until a member claims it,"
        " then by that member, who alone (or an admin) may complete it.",
    )


class Rejection(BaseModel):
    at: datetime
    command: str
    reason: str
    payload: Any = None


class StateView(BaseModel):
    """What the `state` query and every update answer."""

    opportunity_id: str
    stage: str
    closed: bool
    entering: bool = Field(
        default=False,
        description="The stage's tasks are being created by the process's next run (a"
        " continue-as-new at this stage boundary); query again for them.",
    )
    owner: str
    visit: int
    open_tasks: list[TaskView]
    tasks_done: int
    tasks_total: int
    data: dict[str, Any]
    rejected: list[Rejection]
    definition_version: int
    process: str = Field(default=DEFAULT_PROCESS, description="The sales process the deal runs.")
    stage_goal: str | None = Field(default=None, description="What the current stage is for.")
    stage_guidance: list[str] = Field(default=[], description="What is recommended at the current stage.")
    to_fill: list[str] = Field(
        default=[], description="The current stage's key opportunity fields that are still empty."
    )
    waiting_to_enter: str | None = Field(
        default=None,
        description="Every task is done, but the next stage's entry requirements are not met: the"
        " deal moves on to this stage by itself once `missing` is filled in.",
    )
    missing: list[str] = Field(default=[], description="What the deal lacks to enter `waiting_to_enter`.")


class CommandSpec(NamedTuple):
    """One command of the contract: the signal it is sent as (its name), the update it is sent
    as, its payload's model, the `corpsale` command that sends it, and what it does, in a line."""

    name: str
    update: str
    model: type[BaseModel]
    cli: str
    help: str


# The commands, in one table: the workflow's handlers, SaleClient, the CLI and the schemas are
# built from it.
COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        SIGNAL_CHANGE_STAGE, UPDATE_CHANGE_STAGE, ChangeStage, "move", "move the opportunity to a stage"
    ),
    CommandSpec(SIGNAL_COMPLETE_TASK, UPDATE_COMPLETE_TASK, CompleteTask, "complete", "complete a task"),
    CommandSpec(
        SIGNAL_UPDATE_OPPORTUNITY,
        UPDATE_UPDATE_OPPORTUNITY,
        UpdateOpportunity,
        "update",
        "update opportunity data fields",
    ),
    CommandSpec(
        SIGNAL_REASSIGN,
        UPDATE_REASSIGN,
        Reassign,
        "reassign",
        "give the opportunity and its open tasks to another owner",
    ),
    CommandSpec(
        SIGNAL_ADD_TASK,
        UPDATE_ADD_TASK,
        AddTask,
        "add-task",
        "add a task of your own; stage changes leave it open",
    ),
    CommandSpec(
        SIGNAL_SNOOZE_TASK,
        UPDATE_SNOOZE_TASK,
        SnoozeTask,
        "snooze",
        "put off an open task: a new due time, its reminders moved with it",
    ),
    CommandSpec(
        SIGNAL_CLAIM_TASK,
        UPDATE_CLAIM_TASK,
        ClaimTask,
        "claim",
        "take a task of your team's queue: it becomes yours to complete",
    ),
    CommandSpec(
        SIGNAL_RELEASE_TASK,
        UPDATE_RELEASE_TASK,
        ReleaseTask,
        "release",
        "give a task you claimed back to its team's queue",
    ),
)
# Moving a running process onto another definition version: an update only (its answer says
# what became of the tasks; a signal of that name is refused).
MIGRATE = "migrate_definition"
UPDATE_MIGRATE = "migrate_definition_update"
QUERY_MIGRATION_PLAN = "migration_plan"


class MigrateDefinition(Command):
    """Move the process onto definition `version` (of `process`, another sales process, or of its
    own): it stays in its stage; its open tasks whose key the stage keeps stay open as they are,
    those whose key is gone are canceled, and the stage's new keys open as tasks due from now. All
    or nothing; refused when the stage is not in that version (or the deal is closed)."""

    version: int = Field(ge=1)
    actor: Name
    process: ProcessName | None = Field(
        default=None, description="The sales process of `version`; none: the deal's own."
    )


UPDATE_ONLY: dict[str, type[BaseModel]] = {MIGRATE: MigrateDefinition}
COMMAND_OF_UPDATE = {spec.update: spec.name for spec in COMMANDS} | {UPDATE_MIGRATE: MIGRATE}
