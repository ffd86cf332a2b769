"""The whole state of one opportunity's process: one serialisable object, carried across
continue-as-new, from which the `state` query is derived.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, Self

from pydantic import BaseModel, PrivateAttr, model_validator

from workflows.contract import (
    ChangeStage,
    Rejection,
    StartProcess,
    StateView,
    TaskView,
)
from workflows.definition import Process, Reminders, StageTasks
from workflows.fields import DEFAULT_PROCESS

# The state is carried to the next run as its input (continue-as-new), which must stay far below
# Temporal's 2 MB for a payload (the SDK warns from 512 KiB): each list is bounded by count and by
# its size as UTF-8 JSON, oldest out first. With the contract's own bounds on the rest (the
# opportunity's data, the definition, tasks: rules.py, definition.py) the whole stays under 512 KiB,
# whatever senders put in it (tests/unit/test_state_bounds.py).
MAX_REJECTED, REJECTED_BYTES = 100, 32 * 1024
MAX_REQUEST_IDS, LEDGER_BYTES = 2_000, 96 * 1024
WAITING_BYTES = 48 * 1024  # signals carried to the next run, and those that wait for PostgreSQL
MAX_PAYLOAD_CHARS = 2_000
MAX_REFUSAL_CHARS = 500


# What records the commands a run took, kept when a command is rolled back.
_LEDGER = frozenset({"requests", "request_ids", "rejected", "deferred", "retry", "refusals"})


def size(value: Any) -> int:
    """`value`'s size as UTF-8 JSON, as a payload carries it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def fingerprint(command: str, payload: Any) -> str:
    """What makes two deliveries the same command: its name and its payload without the request
    id (a retry sends the same JSON). Short: it is kept, with the id, for the last 2,000 requests."""
    body = {k: v for k, v in payload.items() if k != "request_id"} if isinstance(payload, dict) else payload
    try:
        text = json.dumps([command, body], sort_keys=True, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = f"{command}:{body!r}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class Answer(BaseModel):
    """How the process answered one request: applied (no refusal) or refused, and why. A retry of
    the request gets the same answer; the fingerprint tells a retry from another command that
    reuses the id."""

    fingerprint: str = ""  # "" for ids kept before fingerprints were: any payload matches
    refusal: str | None = None
    recorded: bool = False  # the refusal is in `rejected` (a signal delivered it)


def printable(text: str, limit: int) -> str:
    """`text` as PostgreSQL can hold it, at most `limit` characters: a NUL or a lone surrogate a
    sender put in it shown escaped (\\u0000, \\ud800)."""
    text = text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def storable(value: Any) -> Any:
    """`value` if it is small JSON, else its repr, cut short: whatever a sender put in a payload
    (bytes, a huge document), the state stays serialisable and small."""
    if json_safe(value) and len(json.dumps(value)) <= MAX_PAYLOAD_CHARS:
        return value
    shown = repr(value)
    return shown if len(shown) <= MAX_PAYLOAD_CHARS else shown[:MAX_PAYLOAD_CHARS] + "…"


class TaskState(TaskView):
    """A task as the process keeps it: what `state` shows, plus where it comes from."""

    key: str
    visit: int
    snoozes: int = 0  # numbers its snoozes' rows (notifications, events)
    claims: int = 0  # numbers its claims' and releases' rows (a team's task)


class DeferredCommand(BaseModel):
    """A signal that arrived while the run was handing over to its next run."""

    name: str
    args: list[Any] = []


def _answer_size(request_id: str, answer: Answer) -> int:
    return size(request_id) + size(answer.fingerprint) + size(answer.refusal or "") + 48


class SaleState(BaseModel):
    opportunity_id: str
    owner: str = ""
    stage: str | None = None
    visit: int = 0
    closed: bool = False
    data: dict[str, Any] = {}
    process: Process | None = None
    tasks: dict[str, TaskState] = {}
    rejected: list[Rejection] = []
    requests: dict[str, Answer] = {}  # the answers to the last 2,000 request ids, oldest first
    request_ids: list[str] = []  # a state of an earlier version: folded into `requests`
    reassignments: int = 0  # numbers each reassignment's rows
    # R20: since when the visit has gone without a completed task, and the stale-deal notices.
    quiet_since: datetime | None = None
    stale_noticed: datetime | None = None  # the quiet_since a notice went out for
    stale_notices: int = 0
    adhoc_tasks: int = 0  # numbers ad-hoc tasks: `<opportunity>:adhoc<n>`
    refusals: int = 0  # numbers the refusals' events: `<opportunity>:refused<n>`
    migrations: int = 0  # numbers the moves onto another definition version: `<opportunity>:migrated<n>`
    # Set at a stage boundary when the run continues as new: the next run enters this stage.
    pending_entry: ChangeStage | None = None
    deferred: list[DeferredCommand] = []
    visited: list[str] = []  # the stages the opportunity has been in (gates ask for some)
    close_date_noticed: str | None = None  # the expected close date the owner was told has passed
    # Every task of the visit done, the next stage's gate not met: the move that waits for it.
    waiting: ChangeStage | None = None
    # The process's journal (activities/data/journal.py): the writes the run settled, their chain, and
    # the run's number in the process (a run continued as new is the next).
    writes: int = 0
    chain: str = ""
    run_no: int = 0
    # Signals that came while PostgreSQL was not answering, in order: applied once it answers.
    retry: list[DeferredCommand] = []
    _ledger_bytes: int | None = PrivateAttr(default=None)  # the size of `requests`, kept as it changes

    def stale_deadline(self) -> datetime | None:
        """When the current visit becomes stale (R20): its stage's limit after the last completion
        or the entry, unless a notice went out for this quiet spell or the stage has no limit."""
        limit = self.process.stale_after(self.stage) if self.process and self.stage else None
        if limit is None or self.quiet_since is None or self.stale_noticed == self.quiet_since:
            return None
        return self.quiet_since + limit

    def close_date_deadline(self) -> datetime | None:
        """When the open deal's expected close date has passed (the next day begins, UTC), unless
        its owner has been told of that date already."""
        day = self.data.get("expected_close_date")
        if self.closed or not day or day == self.close_date_noticed:
            return None
        return datetime.combine(date.fromisoformat(day), time(), UTC) + timedelta(days=1)

    def progress(self) -> tuple[int, int]:
        """The current visit's process tasks: how many are completed, of how many."""
        visit = self.visit_tasks()
        return sum(t.status == "completed" for t in visit), len(visit)

    def visit_tasks(self) -> list[TaskState]:
        """The process's tasks of the current stage visit (not ad-hoc ones)."""
        return [t for t in self.tasks.values() if t.visit == self.visit and not t.adhoc]

    def open_tasks(self) -> list[TaskState]:
        return [t for t in self.tasks.values() if t.status == "open"]

    @model_validator(mode="after")
    def _fold_request_ids(self) -> Self:
        for request_id in self.request_ids:
            self.requests.setdefault(request_id, Answer())
        self.request_ids = []
        return self

    def seen(self, request_id: str | None) -> bool:
        return request_id is not None and request_id in self.requests

    def answer(self, request_id: str | None) -> Answer | None:
        return None if request_id is None else self.requests.get(request_id)

    def remember(self, request_id: str | None, fingerprint: str = "", refusal: str | None = None) -> None:
        """Keep the answer to a request (the first one stays: a retry changes nothing); the oldest
        go once there are MAX_REQUEST_IDS or LEDGER_BYTES of them (an applied request is still known
        then: PostgreSQL keeps it)."""
        if request_id is None or request_id in self.requests:
            return
        if refusal is not None and len(refusal) > MAX_REFUSAL_CHARS:
            refusal = refusal[:MAX_REFUSAL_CHARS] + "…"
        answer = Answer(fingerprint=fingerprint, refusal=refusal)
        self._ledger_bytes = self._ledger_size() + _answer_size(request_id, answer)
        self.requests[request_id] = answer
        while len(self.requests) > MAX_REQUEST_IDS or self._ledger_bytes > LEDGER_BYTES:
            oldest = next(iter(self.requests))
            self._ledger_bytes -= _answer_size(oldest, self.requests.pop(oldest))

    def _ledger_size(self) -> int:
        if self._ledger_bytes is None:  # a state read from the run's input: counted once
            self._ledger_bytes = sum(_answer_size(i, a) for i, a in self.requests.items())
        return self._ledger_bytes

    def can_carry(self, args: Any) -> bool:
        """Whether one more signal fits with those carried or waiting (WAITING_BYTES)."""
        if not json_safe(args):
            return False
        waiting = sum(size(d.model_dump(mode="json")) for d in (*self.deferred, *self.retry))
        return waiting + size(args) + 300 <= WAITING_BYTES  # and its name

    def checkpoint(self) -> SaleState:
        """What `roll_back` returns to: the state as a command found it."""
        return self.model_copy(
            update={
                "tasks": {i: t.model_copy() for i, t in self.tasks.items()},
                "data": dict(self.data),
                "visited": list(self.visited),
            }
        )

    def roll_back(self, to: SaleState) -> None:
        """Back to `to`, a checkpoint, but for what records commands (the ledger, the refusals,
        the signals waiting): a command that gave up or was refused half-way changed nothing
        else. (What it wrote is undone by the journal: its writes' numbers are taken again.)"""
        for name in type(self).model_fields:
            if name not in _LEDGER:
                setattr(self, name, getattr(to, name))

    def for_next_run(self) -> SaleState:
        """The state a continued run starts from: what is finished of earlier visits is in
        PostgreSQL, so only open tasks and the current visit's are carried (it stays small)."""
        keep = {i: t for i, t in self.tasks.items() if t.status == "open" or t.visit == self.visit}
        return self.model_copy(update={"tasks": keep})

    def reject(self, at: datetime, command: str, reason: str, payload: Any) -> None:
        """Record a refusal in `rejected`: the last MAX_REJECTED, at most REJECTED_BYTES of them."""
        payload = storable(payload)
        self.rejected.append(
            Rejection(at=at, command=command[:200], reason=reason[:MAX_REFUSAL_CHARS], payload=payload)
        )
        del self.rejected[:-MAX_REJECTED]
        sizes = [size(r.model_dump(mode="json")) for r in self.rejected]
        while len(sizes) > 1 and sum(sizes) > REJECTED_BYTES:
            del self.rejected[0], sizes[0]

    def stage_part(self) -> StageTasks | None:
        """The definition's part for the current stage (its tasks and guidance), while open."""
        if self.process is None or self.stage is None or self.closed:
            return None
        return self.process.stage_tasks(self.stage)

    def to_fill(self) -> list[str]:
        """The current stage's key fields that are still empty (the definition's `key_fields`)."""
        part = self.stage_part()
        return [f for f in part.key_fields if self.data.get(f) in (None, "")] if part else []

    def missing_to_enter(self, stage: str) -> list[str]:
        """What the deal lacks to enter `stage` (its gate): the required fields still empty, and
        a visit to each required stage it has not been in."""
        part = self.process.stage_tasks(stage) if self.process else None
        gate = part.requires if part else None
        if gate is None:
            return []
        empty = [f for f in gate.fields if self.data.get(f) in (None, "")]
        return empty + [f"a visit to {s}" for s in gate.visited if s not in self.visited]

    def view(self) -> StateView:
        done, total = self.progress()
        part = self.stage_part()
        return StateView(
            opportunity_id=self.opportunity_id,
            stage=self.pending_entry.stage if self.pending_entry else self.stage or "",
            entering=self.pending_entry is not None,
            closed=self.closed,
            owner=self.owner,
            visit=self.visit,
            open_tasks=[TaskView.model_validate(t, from_attributes=True) for t in self.open_tasks()],
            tasks_done=done,
            tasks_total=total,
            data=self.data,
            rejected=self.rejected,
            definition_version=self.process.definition.version if self.process else 0,
            process=self.process.definition.process if self.process else DEFAULT_PROCESS,
            stage_goal=part.goal if part else None,
            stage_guidance=list(part.guidance) if part else [],
            to_fill=self.to_fill(),
            waiting_to_enter=self.waiting.stage if self.waiting else None,
            missing=self.missing_to_enter(self.waiting.stage) if self.waiting else [],
        )


class ProcessInput(StartProcess):
    """The workflow's input: the public start payload, plus the state a continued run carries."""

    resume: SaleState | None = None

    def first_state(self) -> SaleState:
        """The state the run starts from: its previous run's, or a new process's."""
        if self.resume is not None:
            return self.resume
        return SaleState(opportunity_id=self.opportunity_id, owner=self.new.owner if self.new else "")


class TaskInput(BaseModel):
    """The input of one task child workflow."""

    task_id: str
    opportunity_id: str
    title: str
    owner: str
    start_at: datetime | None = None
    due_at: datetime
    reminders: Reminders | None = None  # the definition's task timers (R20)

    def timers(self) -> list[tuple[Literal["reminder", "overdue", "escalation"], datetime]]:
        """When this task's notices are due, in order. A reminder that would come before the
        task starts is left out: the task's assignment notice has just said the same."""
        r = self.reminders
        if r is None:
            return []
        timers: list[tuple[Literal["reminder", "overdue", "escalation"], datetime]] = []
        if r.before_due is not None and (self.start_at is None or self.due_at - r.before_due > self.start_at):
            timers.append(("reminder", self.due_at - r.before_due))
        if r.overdue:
            timers.append(("overdue", self.due_at))
        if r.escalate_after is not None:
            timers.append(("escalation", self.due_at + r.escalate_after))
        return timers


class TaskResult(BaseModel):
    """What a task child workflow returns."""

    task_id: str
    status: str
    outcome: str | None = None
