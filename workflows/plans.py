"""What a command writes and starts, planned from the process's state (plain Python, nothing of
Temporal): the rows of its write and the tasks it opens, numbered from the state so that a retry
plans the same. The rules (workflows/rules.py) say first whether the command may go ahead."""

from __future__ import annotations

from datetime import datetime, timedelta

from workflows import contract as c
from workflows.contract import AddTask, Reassign, SnoozeTask
from workflows.state import SaleState, TaskState
from workflows.steps import ReassignRow, SnoozeRow


def adhoc_task(state: SaleState, cmd: AddTask, now: datetime) -> TaskState:
    """An operator's own task (R18): numbered, due in a day unless it says when."""
    assert state.stage is not None
    return TaskState(
        task_id=f"{state.opportunity_id}:adhoc{state.adhoc_tasks + 1}",
        key="adhoc",
        title=cmd.title,
        stage=state.stage,
        visit=state.visit,
        owner=cmd.owner or state.owner,
        start_at=now,
        due_at=cmd.due_at or now + timedelta(days=1),
        outcomes=[c.ADHOC_OUTCOME],
        adhoc=True,
    )


def reassignment(state: SaleState, cmd: Reassign, now: datetime) -> ReassignRow:
    """A new owner (R19): the owner's open tasks go with the deal (a colleague's stay theirs, and
    a team's task the owner claimed stays theirs); the n-th reassignment numbers its notices."""
    return ReassignRow(
        opportunity_id=state.opportunity_id,
        number=state.reassignments + 1,
        from_owner=state.owner,
        to_owner=cmd.owner,
        actor=cmd.actor,
        reason=cmd.reason,
        task_ids=tuple(t.task_id for t in state.open_tasks() if t.owner == state.owner and t.team is None),
        at=now,
    )


def snoozing(state: SaleState, cmd: SnoozeTask, now: datetime) -> SnoozeRow:
    """What putting off a task writes: the n-th snooze of the task numbers its rows."""
    task = state.tasks[cmd.task_id]
    return SnoozeRow(
        opportunity_id=state.opportunity_id,
        task_id=task.task_id,
        title=task.title,
        number=task.snoozes + 1,
        owner=task.owner,
        due_at=cmd.due_at,
        was_due_at=task.due_at,
        actor=cmd.actor,
        reason=cmd.reason,
        at=now,
    )
