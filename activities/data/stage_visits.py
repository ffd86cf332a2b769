"""A stage entry on the business data: the visit before is left (its open tasks canceled, with
their workflows), the new one entered with its tasks, their notifications and the workflows to
start; entering a final stage closes the opportunity (won: the follow-up tasks). In the caller's
transaction, which holds the opportunity's lock (activities/data/journal.py `write`); idempotent by
construction, as activities/data/repository.py says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from activities.data import events, notices, task_ops
from workflows.steps import EnterStage, NewTask, TaskOp


async def enter_stage(conn: asyncpg.Connection, step: EnterStage) -> None:
    """Leave the visit before and enter this one (in the caller's transaction, which holds the
    opportunity's lock)."""
    visit_id = f"{step.opportunity_id}:v{step.visit_no}"
    # Leaving a stage cancels its open tasks (also those of a process that was terminated), and
    # their workflows. In runs from before the journal the upserts below make a re-run of this
    # step (a worker lost its workflow task) leave what the run that goes on holds; a journaled
    # write that finds a lost attempt's entries undoes them first (activities/data/journal.py).
    canceled = await conn.fetch(
        "UPDATE tasks SET status = 'canceled', canceled_at = $2"
        " WHERE opportunity_id = $1 AND status = 'open' AND id <> ALL($3::text[]) RETURNING id, visit_id",
        step.opportunity_id,
        step.at,
        [t.task_id for t in step.tasks] + list(step.keep_open),
    )
    for task in canceled:  # of earlier visits: a re-run of an earlier entry cancels no later one
        if events.visit_no(task["visit_id"]) < step.visit_no:
            await events.task_canceled(conn, step.opportunity_id, task["id"], step.at)
    await task_ops.stage_ops(
        conn, step.opportunity_id, [TaskOp(kind="cancel", task_id=t["id"]) for t in canceled]
    )
    left = await conn.fetch(
        "UPDATE stage_visits SET left_at = $2"
        " WHERE opportunity_id = $1 AND visit_no < $3 AND left_at IS NULL RETURNING stage",
        step.opportunity_id,
        step.at,
        step.visit_no,
    )
    await conn.execute(
        "INSERT INTO stage_visits (id, opportunity_id, visit_no, stage, entered_at, entered_by,"
        " reason, definition_version, process) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
        " (SELECT process FROM opportunities WHERE id = $2)) ON CONFLICT (id)"
        " DO UPDATE SET stage = EXCLUDED.stage, entered_at = EXCLUDED.entered_at,"
        " entered_by = EXCLUDED.entered_by, reason = EXCLUDED.reason, left_at = NULL,"
        " definition_version = EXCLUDED.definition_version, process = EXCLUDED.process",
        visit_id,
        step.opportunity_id,
        step.visit_no,
        step.stage,
        step.at,
        step.actor,
        step.reason,
        step.definition_version,
    )
    entered = {
        "stage": step.stage,
        "left": left[0]["stage"] if left else None,
        "visit": step.visit_no,
        "actor": step.actor,
        "reason": step.reason,
        "definition_version": step.definition_version,
    }
    await events.emit(conn, step.opportunity_id, f"{visit_id}:entered", "stage.entered", step.at, entered)
    # Its own tasks open, also when a re-run of an earlier entry (the workflow task that ran
    # both was lost, and is run again in order) canceled them as stale meanwhile.
    await conn.executemany(
        "INSERT INTO tasks (id, opportunity_id, visit_id, stage, task_key, title, owner,"
        " start_at, due_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (id) DO UPDATE SET start_at = EXCLUDED.start_at, due_at = EXCLUDED.due_at,"
        " status = 'open', canceled_at = NULL WHERE tasks.status <> 'completed'",
        _task_rows(step, visit_id, step.tasks),
    )
    await notices.notify_assigned(conn, step.opportunity_id, step.owner, step.tasks, step.at)
    await _created(conn, step, step.tasks)
    await task_ops.stage_ops(
        conn,
        step.opportunity_id,
        task_ops.starts(step.opportunity_id, step.owner, step.tasks, step.reminders),
    )
    await conn.execute(
        "UPDATE opportunities SET stage = $2, updated_at = $3,"
        " probability = (SELECT probability FROM stages WHERE name = $2)"
        " WHERE id = $1",
        step.opportunity_id,
        step.stage,
        step.at,
    )
    if step.closing is not None:
        await _close(conn, step, visit_id)
    elif left and step.actor != step.owner:
        await notices.notify_stage_changed(conn, step, visit_id, left[0]["stage"])


def _task_rows(step: EnterStage, visit_id: str, tasks: Sequence[NewTask]) -> list[tuple[Any, ...]]:
    """Rows for `INSERT INTO tasks (id, opportunity_id, visit_id, stage, task_key, title, owner,
    start_at, due_at)`."""
    return [
        (
            t.task_id,
            step.opportunity_id,
            visit_id,
            step.stage,
            t.task_key,
            t.title,
            t.owner or step.owner,
            t.start_at,
            t.due_at,
        )
        for t in tasks
    ]


async def _close(conn: asyncpg.Connection, step: EnterStage, visit_id: str) -> None:
    c = step.closing
    assert c is not None
    await conn.execute(
        "UPDATE opportunities SET closed_at = $2, actual_income = $3, hours_spent = $4,"
        " close_reason = $5, competitor = $6 WHERE id = $1 AND closed_at IS NULL",
        step.opportunity_id,
        step.at,
        c.actual_income,
        c.hours_spent,
        c.reason,
        c.competitor,
    )
    await conn.execute(
        "UPDATE stage_visits SET left_at = $2 WHERE id = $1 AND left_at IS NULL",
        visit_id,
        step.at,
    )
    kind, verb = ("closed_won", "won") if c.successful else ("closed_lost", "lost")
    await conn.execute(
        "INSERT INTO notifications (id, recipient, opportunity_id, kind, message, created_at)"
        " SELECT $1, owner, id, $2, $3 || title || ' (' || customer || ')', $4"
        " FROM opportunities WHERE id = $5 ON CONFLICT (id) DO NOTHING",
        f"{visit_id}:{kind}",
        kind,
        f"Opportunity {verb} ({step.stage}): ",
        step.at,
        step.opportunity_id,
    )
    if c.successful:
        await _won(conn, step, visit_id)
    closed: dict[str, Any] = {
        "stage": step.stage,
        "actual_income": c.actual_income,
        "hours_spent": c.hours_spent,
        "reason": c.reason,
        "competitor": c.competitor,
        "actor": step.actor,
    }
    if c.successful:  # the order draft goes with it
        order = await conn.fetchrow(
            "SELECT id, amount FROM orders WHERE id = $1", f"{step.opportunity_id}:order"
        )
        closed["order"] = dict(order) if order else None
    kind = "opportunity.won" if c.successful else "opportunity.lost"
    await events.emit(conn, step.opportunity_id, f"{step.opportunity_id}:closed", kind, step.at, closed)


async def _won(conn: asyncpg.Connection, step: EnterStage, visit_id: str) -> None:
    """R13: the order draft for the customer and the definition's follow-up tasks."""
    closing = step.closing
    assert closing is not None
    await conn.execute(
        "INSERT INTO orders (id, opportunity_id, customer, title, amount, created_at)"
        " SELECT id || ':order', id, customer, title, coalesce($2, expected_amount), $3"
        " FROM opportunities WHERE id = $1 ON CONFLICT (id) DO NOTHING",
        step.opportunity_id,
        closing.actual_income,
        step.at,
    )
    await conn.executemany(
        "INSERT INTO tasks (id, opportunity_id, visit_id, stage, task_key, title, owner, start_at,"
        " due_at, kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'follow-up') ON CONFLICT (id) DO NOTHING",
        _task_rows(step, visit_id, closing.follow_up),
    )
    await notices.notify_assigned(conn, step.opportunity_id, step.owner, closing.follow_up, step.at)
    await _created(conn, step, closing.follow_up)
    follow_up = task_ops.starts(step.opportunity_id, step.owner, closing.follow_up, step.reminders)
    await task_ops.stage_ops(conn, step.opportunity_id, follow_up)


async def _created(conn: asyncpg.Connection, step: EnterStage, tasks: Sequence[NewTask]) -> None:
    await events.tasks_created(
        conn, step.opportunity_id, tasks, owner=step.owner, stage=step.stage, visit=step.visit_no, at=step.at
    )
