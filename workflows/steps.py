"""What the process hands to each of its steps (the activities) and gets back. Times come from
the workflow (`workflow.now()`), so a retried activity writes exactly what its first attempt
would have written. Plain models, below both the process and the data layer.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from workflows.contract import NewOpportunity, StateView
from workflows.definition import Reminders
from workflows.fields import DEFAULT_PROCESS
from workflows.permissions import Asked
from workflows.state import TaskInput


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestMark(_Model):
    """The request a command's first write applies (R23): PostgreSQL keeps it, so that a retry is
    known however long after (a write that finds it applies nothing: `AlreadyApplied`)."""

    request_id: str
    fingerprint: str


class Fence(_Model):
    """Where one write of a process stands in its opportunity's journal (activities/data/journal.py):
    its number and the chain of the writes up to it, when in the run it was decided (the run's
    number, the history length of the workflow task then, and when that attempt of it began: a
    later attempt decides later), and what the run had settled before that workflow task began
    (in history for good)."""

    process: str  # the process's first run id: one per process, kept across its runs
    run_id: str
    run_no: int
    history_length: int
    attempt_at: datetime | None = None  # when the attempt of that workflow task began
    number: int | None = None  # None: the process's opening, which the journal numbers
    chain: str
    prev_chain: str = ""  # the chain of the write before it, as the run has it
    durable: int = 0
    durable_chain: str = ""
    request: RequestMark | None = None  # the first write of a command with a request id


class JournalStart(_Model):
    """Where a process's journal begins: its opening's number and chain, its first run's number."""

    number: int
    chain: str
    run_no: int


class JournalView(_Model):
    """What a run says of its writes (the `journal` query): those of the commands that ended (in
    history for good: a query is answered on a completed workflow task), and up to which write it
    holds or has in flight, for a command under way; and the workflow task it answers from (its
    history length and when its attempt began: a write decided there or later is not a lost
    attempt's, even one made after the run answered)."""

    process: str
    writes: int
    chain: str
    holding: int
    run_no: int
    history_length: int
    attempt_at: datetime | None = None


class ProcessResult(StateView):
    """What a run that ends answers: the opportunity's state, and in runs that journal their
    writes what the `journal` query would (the worker's journal relay reads it from the run's
    close event instead of asking a closed run, which would replay its whole history)."""

    journal: JournalView | None = None


class TaskOp(_Model):
    """What a write asks of one task workflow, carried out once the write is confirmed."""

    kind: Literal["start", "finish", "cancel", "owner", "due"]
    task_id: str
    args: dict[str, Any] = {}


class Authorize(_Model):
    """One command to check (R24): its signature, if any, and whether its actor may."""

    workflow_id: str
    command: str  # the signal name, also for the command's update (what a signature covers)
    payload: dict[str, Any]  # as sent: the signature covers it as sent
    asked: Asked
    at: datetime


class Write(_Model):
    """A write of the process: with a fence, journaled (runs from before the journal send none).
    A command's first write may carry the command's permission check (`check`,
    docs/journal.md), made in the write's transaction before anything is written: a refusal
    writes nothing."""

    fence: Fence | None = None
    check: Authorize | None = None
    # Fields added since runs were recorded: the journal's digest leaves them out while they are
    # at their default (workflows/journal.py), so those runs replay to the chains they wrote.
    LATER: ClassVar[tuple[str, ...]] = ()


class CommandWrite(Write):
    """A command's write that names its step (`STEP`, its local activity's name): the data layer
    registers what it does under that name (activities/data/writes.py), and the process sends it with
    `Store.write`. A new command's write is one of these."""

    STEP: ClassVar[str]
    opportunity_id: str


class OpenOpportunity(Write):
    opportunity_id: str
    actor: str
    new: NewOpportunity | None = None
    process: str | None = None  # the sales process to run; None: the deal's own, else the default

    LATER = ("process",)


class ProcessVersion(_Model):
    """A version of a sales process's definition, to load (an int alone: the corporate sale's, as
    runs from before there were other processes asked)."""

    process: str
    version: int


class OpportunityRecord(_Model):
    opportunity_id: str
    owner: str
    stage: str | None
    data: dict[str, Any]
    last_visit: int = 0  # visits of earlier processes of this opportunity: numbering goes on
    visited: list[str] = []  # the stages those visits were in
    journal: JournalStart | None = None  # where the process's journal begins (a journaled opening)
    process: str = DEFAULT_PROCESS  # the sales process the deal runs


class NewTask(_Model):
    task_id: str
    task_key: str
    title: str
    start_at: datetime
    due_at: datetime
    owner: str | None = None  # an approval task's approver; the deal's owner when None


class Closing(_Model):
    successful: bool
    actual_income: Decimal | None = None
    hours_spent: Decimal | None = None
    reason: str | None = None
    competitor: str | None = None
    follow_up: tuple[NewTask, ...] = ()  # won: the definition's follow-up tasks (R13)


class EnterStage(Write):
    """One stage entry: leave the previous visit, open the new one with its tasks."""

    opportunity_id: str
    visit_no: int
    stage: str
    owner: str
    actor: str
    reason: str | None
    at: datetime
    tasks: tuple[NewTask, ...]
    closing: Closing | None = None
    keep_open: tuple[str, ...] = ()  # open ad-hoc tasks, which the stage change leaves open
    definition_version: int | None = None  # the process definition version the run follows (R16)
    reminders: Reminders | None = None  # the definition's task timers, for the tasks' workflows


class CompleteTaskRow(Write):
    task_id: str
    opportunity_id: str | None = None  # None: looked up by the task (runs from before the journal)
    outcome: str
    actor: str
    comment: str | None
    at: datetime
    enter: EnterStage | None = None  # the stage entry the completion makes, in the same write

    LATER = ("enter",)


class CancelTaskRow(_Model):
    task_id: str
    at: datetime


class AddTaskRow(Write):
    opportunity_id: str
    visit_no: int
    stage: str
    owner: str
    task: NewTask
    at: datetime
    reminders: Reminders | None = None


class ReassignRow(Write):
    opportunity_id: str
    number: int  # the opportunity's n-th reassignment: its notifications' ids
    from_owner: str
    to_owner: str
    actor: str
    reason: str | None
    task_ids: tuple[str, ...]  # the open tasks that move
    at: datetime


class SnoozeRow(CommandWrite):
    """A task put off."""

    STEP: ClassVar[str] = "snooze_task"

    task_id: str
    title: str
    number: int  # the task's n-th snooze: its notification's and its event's ids
    owner: str  # the task's owner: told when someone else put it off
    due_at: datetime
    was_due_at: datetime
    actor: str
    reason: str | None
    at: datetime


class ClaimRow(CommandWrite):
    """A task of a team's queue taken by a member (`to_owner`), or given back (`to_owner` the team,
    `team:NAME`): the task's owner moves, its workflow hears of it, the team is told."""

    STEP: ClassVar[str] = "claim_task"

    task_id: str
    title: str
    team: str
    number: int  # the task's n-th claim or release: its notifications' and its event's ids
    from_owner: str
    to_owner: str
    actor: str
    reason: str | None = None
    at: datetime


class RefusalRow(Write):
    opportunity_id: str
    number: int  # the opportunity's n-th refusal: its event's id
    command: str
    reason: str
    request_id: str | None
    actor: str | None
    at: datetime
    digest: str | None = None  # the command's fingerprint (workflows/state.py)


class MigrateRow(Write):
    opportunity_id: str
    number: int  # the opportunity's n-th move onto another version: its event's id
    visit_no: int
    stage: str
    owner: str
    actor: str
    from_version: int
    to_version: int
    kept: tuple[str, ...]
    cancel: tuple[str, ...]
    tasks: tuple[NewTask, ...]
    at: datetime
    reminders: Reminders | None = None
    process: str | None = None  # onto another sales process: its name

    LATER = ("process",)


class UpdateOpportunityRow(Write):
    opportunity_id: str
    changes: dict[str, Any]
    at: datetime


class TaskNotice(_Model):
    """A timer of an open task fired (R20): remind its owner, tell them it is overdue, or
    escalate to their manager. The recipient is read when it fires: a reassignment moves it."""

    task_id: str
    kind: Literal["reminder", "overdue", "escalation"]
    at: datetime
    plan: int = 0  # the task's notices planned again after it was put off the n-th time: their own ids


class GateNotice(Write):
    """Every task of a visit is done, but the next stage's entry requirements are not met: the
    owner is told what to fill in, once per visit."""

    opportunity_id: str
    visit_no: int
    stage: str
    missing: tuple[str, ...]
    at: datetime


class CloseDateNotice(Write):
    """An open deal's expected close date has passed: its owner is told, once per date."""

    opportunity_id: str
    expected_close_date: str
    at: datetime


class StaleNotice(Write):
    """A stage visit has gone the stage's limit without a completed task (R20)."""

    opportunity_id: str
    visit_no: int
    number: int  # the run's n-th stale-deal notice: its id
    stage: str
    quiet_since: datetime
    at: datetime


class TaskStart(_Model):
    task: TaskInput
    summary: str  # what the Web UI shows of the task: its title and owner
