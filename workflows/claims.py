"""A team's queue, as plain rules: a task owned by `team:NAME` is claimed by one member, which
makes it theirs, and released back to the queue (workflows/permissions.py says who may). Two
members claiming at once: the process takes one command at a time, so the first claim wins and
the second is refused, naming who has it."""

from __future__ import annotations

from datetime import datetime

from workflows.contract import ClaimTask, ReleaseTask
from workflows.fields import TEAM_PREFIX
from workflows.refusals import Refused
from workflows.state import SaleState, TaskState
from workflows.steps import ClaimRow


def team_task(state: SaleState, task_id: str, *, settled: bool) -> TaskState | None:
    """The open team task `task_id` (None while a command queued ahead may still open it)."""
    task = state.tasks.get(task_id)
    if task is None and not settled:
        return None
    if task is None:
        raise Refused(f"Unknown task {task_id!r}; the state query lists the open tasks.")
    if task.status != "open":
        raise Refused(f"Task {task_id!r} is {task.status}: only an open task is claimed or released.")
    if task.team is None:
        raise Refused(f"Task {task_id!r} is {task.owner}'s, not a team's: nothing to claim or release.")
    return task


def check_claim(state: SaleState, cmd: ClaimTask, *, settled: bool = True) -> TaskState | None:
    task = team_task(state, cmd.task_id, settled=settled)
    if task is not None and settled and task.owner != TEAM_PREFIX + (task.team or ""):
        if task.owner == cmd.actor:
            raise Refused(f"{cmd.actor} has claimed task {cmd.task_id!r} already.")
        raise Refused(
            f"Task {cmd.task_id!r} is claimed by {task.owner} already: they may release it"
            " (`corpsale release OPP TASK`)."
        )
    return task


def check_release(state: SaleState, cmd: ReleaseTask, *, settled: bool = True) -> TaskState | None:
    task = team_task(state, cmd.task_id, settled=settled)
    if task is not None and settled and task.owner == TEAM_PREFIX + (task.team or ""):
        raise Refused(
            f"Task {cmd.task_id!r} is in team {task.team}'s queue, not claimed: nothing to release."
        )
    return task


def claiming(state: SaleState, cmd: ClaimTask | ReleaseTask, now: datetime) -> ClaimRow:
    """What a claim (or a release) writes: the task's n-th claim or release numbers its rows."""
    task = state.tasks[cmd.task_id]
    assert task.team is not None
    release = isinstance(cmd, ReleaseTask)
    return ClaimRow(
        opportunity_id=state.opportunity_id,
        task_id=task.task_id,
        title=task.title,
        team=task.team,
        number=task.claims + 1,
        from_owner=task.owner,
        to_owner=TEAM_PREFIX + task.team if release else cmd.actor,
        actor=cmd.actor,
        reason=cmd.reason if isinstance(cmd, ReleaseTask) else None,
        at=now,
    )
