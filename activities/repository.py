"""The process's steps on the business data: opening an opportunity, stage visits, tasks,
notifications, closing. Every write is idempotent by construction: rows have deterministic ids
and inserts say `ON CONFLICT DO NOTHING`; updates only move a row out of the state they expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from workflows.contract import OpportunityFields
from workflows.definition import Stage
from workflows.steps import (
    AddTaskRow,
    CancelTaskRow,
    CloseDateNotice,
    CompleteTaskRow,
    EnterStage,
    GateNotice,
    NewTask,
    OpenOpportunity,
    OpportunityRecord,
    ReassignRow,
    StaleNotice,
    TaskNotice,
    UpdateOpportunityRow,
)

DATA_FIELDS: tuple[str, ...] = tuple(OpportunityFields.model_fields)


def _record(row: asyncpg.Record, last_visit: int, visited: list[str] | None = None) -> OpportunityRecord:
    data = OpportunityFields.model_validate({f: row[f] for f in DATA_FIELDS})
    return OpportunityRecord(
        opportunity_id=row["id"],
        owner=row["owner"],
        stage=row["stage"],
        data=data.model_dump(mode="json", exclude_none=True),
        last_visit=last_visit,
        visited=visited or [],
    )


async def load_stages(conn: asyncpg.Connection) -> list[Stage]:
    rows = await conn.fetch(
        "SELECT name, sort_order, is_final, is_successful, probability FROM stages ORDER BY sort_order"
    )
    return [
        Stage(
            name=r["name"],
            order=r["sort_order"],
            final=r["is_final"],
            successful=r["is_successful"],
            probability=r["probability"],
        )
        for r in rows
    ]


async def opportunity_stage(conn: asyncpg.Connection, opportunity_id: str) -> asyncpg.Record | None:
    """The opportunity's stage and when it closed (None if there is no such opportunity)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT stage, closed_at FROM opportunities WHERE id = $1", opportunity_id
    )
    return row


async def get_opportunity(conn: asyncpg.Connection, opportunity_id: str) -> OpportunityRecord | None:
    row = await conn.fetchrow(
        "SELECT o.*, (SELECT coalesce(max(visit_no), 0) FROM stage_visits v"
        " WHERE v.opportunity_id = o.id) AS last_visit, (SELECT coalesce(array_agg(DISTINCT stage),"
        " '{}') FROM stage_visits v WHERE v.opportunity_id = o.id) AS visited FROM opportunities o"
        " WHERE o.id = $1",
        opportunity_id,
    )
    return None if row is None else _record(row, row["last_visit"], sorted(row["visited"]))


async def insert_opportunity(conn: asyncpg.Connection, cmd: OpenOpportunity) -> bool:
    """Insert a new opportunity; False when one with that id is there already."""
    assert cmd.new is not None
    fields = cmd.new.model_dump(exclude_none=True)
    columns = ["id", *fields]
    values = [cmd.opportunity_id, *fields.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    status = await conn.execute(
        f"INSERT INTO opportunities ({', '.join(columns)}) VALUES ({placeholders})"
        " ON CONFLICT (id) DO NOTHING",
        *values,
    )
    return bool(status == "INSERT 0 1")


async def enter_stage(conn: asyncpg.Connection, step: EnterStage) -> None:
    visit_id = f"{step.opportunity_id}:v{step.visit_no}"
    async with conn.transaction():
        # Leaving a stage cancels its open tasks. Their children record that themselves; this
        # also covers tasks whose child never could (its parent run was terminated), and rows of
        # an attempt whose workflow task was lost. The upserts below make a re-run of this step
        # (a worker lost its workflow task) leave what the run that goes on holds.
        await conn.execute(
            "UPDATE tasks SET status = 'canceled', canceled_at = $2"
            " WHERE opportunity_id = $1 AND status = 'open' AND id <> ALL($3::text[])",
            step.opportunity_id,
            step.at,
            [t.task_id for t in step.tasks] + list(step.keep_open),
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
            " reason, definition_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id)"
            " DO UPDATE SET stage = EXCLUDED.stage, entered_at = EXCLUDED.entered_at,"
            " entered_by = EXCLUDED.entered_by, reason = EXCLUDED.reason, left_at = NULL,"
            " definition_version = EXCLUDED.definition_version",
            visit_id,
            step.opportunity_id,
            step.visit_no,
            step.stage,
            step.at,
            step.actor,
            step.reason,
            step.definition_version,
        )
        # Its own tasks open, also when a re-run of an earlier entry (the workflow task that ran
        # both was lost, and is run again in order) canceled them as stale meanwhile.
        await conn.executemany(
            "INSERT INTO tasks (id, opportunity_id, visit_id, stage, task_key, title, owner,"
            " start_at, due_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (id) DO UPDATE SET start_at = EXCLUDED.start_at, due_at = EXCLUDED.due_at,"
            " status = 'open', canceled_at = NULL WHERE tasks.status <> 'completed'",
            _task_rows(step, visit_id, step.tasks),
        )
        await _notify_assigned(conn, step.opportunity_id, step.owner, step.tasks, step.at)
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
            await _notify_stage_changed(conn, step, visit_id, left[0]["stage"])


async def _notify_stage_changed(conn: asyncpg.Connection, step: EnterStage, visit_id: str, left: str) -> None:
    """The owner hears of a stage change someone else made (their own they know of)."""
    why = f" ({step.reason})" if step.reason else ""
    await conn.execute(
        "INSERT INTO notifications (id, recipient, opportunity_id, kind, message, created_at)"
        " SELECT $1, $2, id, 'stage_changed', $3 || title || $4, $5 FROM opportunities WHERE id = $6"
        " ON CONFLICT (id) DO NOTHING",
        f"{visit_id}:stage_changed",
        step.owner,
        f"{step.actor} moved ",
        f" from {left} to {step.stage}{why}",
        step.at,
        step.opportunity_id,
    )


NOTICES = {
    "reminder": "Reminder: {title} is due {due}",
    "overdue": "Overdue: {title} was due {due}",
    "escalation": "Escalation: {owner}'s task {title} has been overdue since {due}",
}


async def notify_task(conn: asyncpg.Connection, notice: TaskNotice) -> bool:
    """A task timer's notification, if the task is still open: to its owner as it is now, and
    for an escalation to the owner's manager (to the owner when nobody is on record as it)."""
    async with conn.transaction():
        task = await conn.fetchrow(
            "SELECT t.opportunity_id, t.title, t.owner, t.due_at, t.status, p.manager FROM tasks t"
            " LEFT JOIN people p ON p.name = t.owner WHERE t.id = $1",
            notice.task_id,
        )
        if task is None or task["status"] != "open":
            return False
        message = NOTICES[notice.kind].format(
            title=task["title"], owner=task["owner"], due=f"{task['due_at']:%Y-%m-%d %H:%M} UTC"
        )
        recipient = task["owner"]
        if notice.kind == "escalation":
            if task["manager"]:
                recipient = task["manager"]
            else:
                message += f" (no manager on record for {task['owner']}: `corpsale people set`)"
        await conn.execute(
            "INSERT INTO notifications (id, recipient, opportunity_id, task_id, kind, message, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            f"{notice.task_id}:{notice.kind}",
            recipient,
            task["opportunity_id"],
            notice.task_id,
            notice.kind,
            message,
            notice.at,
        )
        return True


async def notify_stale(conn: asyncpg.Connection, notice: StaleNotice) -> None:
    """A stale-deal notice to the opportunity's owner (R20)."""
    days = (notice.at - notice.quiet_since).total_seconds() / 86400
    quiet = f"{days:.0f} days" if days >= 1 else f"{(notice.at - notice.quiet_since).total_seconds():.0f} s"
    await conn.execute(
        "INSERT INTO notifications (id, recipient, opportunity_id, kind, message, created_at)"
        " SELECT $1, owner, id, 'stale_deal', 'Stale deal: ' || title || $2, $3 FROM opportunities"
        " WHERE id = $4 ON CONFLICT (id) DO NOTHING",
        f"{notice.opportunity_id}:v{notice.visit_no}:stale{notice.number}",
        f" has had no completed task in {notice.stage} for {quiet}",
        notice.at,
        notice.opportunity_id,
    )


async def notify_close_date(conn: asyncpg.Connection, notice: CloseDateNotice) -> None:
    """The owner hears that the deal's expected close date has passed, once per date."""
    await conn.execute(
        "INSERT INTO notifications (id, recipient, opportunity_id, kind, message, created_at)"
        " SELECT $1, owner, id, 'close_date_passed', 'Expected close date passed: ' || title || $2, $3"
        " FROM opportunities WHERE id = $4 ON CONFLICT (id) DO NOTHING",
        f"{notice.opportunity_id}:close-date:{notice.expected_close_date}",
        f" was expected to close on {notice.expected_close_date}; move the date or close the deal",
        notice.at,
        notice.opportunity_id,
    )


async def find_manager(conn: asyncpg.Connection, person: str) -> str | None:
    """The person's manager in the people directory, if one is on record."""
    manager: str | None = await conn.fetchval("SELECT manager FROM people WHERE name = $1", person)
    return manager


async def notify_gate(conn: asyncpg.Connection, notice: GateNotice) -> None:
    """Every task done, the next stage's gate not met: the owner is told what to fill in, once
    per visit (the notice's id)."""
    await conn.execute(
        "INSERT INTO notifications (id, recipient, opportunity_id, kind, message, created_at)"
        " SELECT $1, owner, id, 'gate_waiting', title || $2, $3 FROM opportunities"
        " WHERE id = $4 ON CONFLICT (id) DO NOTHING",
        f"{notice.opportunity_id}:v{notice.visit_no}:gate",
        f": every task is done; to move on to {notice.stage}, fill in {', '.join(notice.missing)}",
        notice.at,
        notice.opportunity_id,
    )


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


async def _notify_assigned(
    conn: asyncpg.Connection, opportunity_id: str, owner: str, tasks: Sequence[NewTask], at: datetime
) -> None:
    """A notification per new task for its owner (R5); one per task, however often this runs."""
    await conn.executemany(
        "INSERT INTO notifications (id, recipient, opportunity_id, task_id, kind, message,"
        " created_at) VALUES ($1, $2, $3, $4, 'task_assigned', $5, $6)"
        " ON CONFLICT (id) DO NOTHING",
        [
            (
                f"{t.task_id}:assigned",
                t.owner or owner,
                opportunity_id,
                t.task_id,
                f"New task: {t.title} (due {t.due_at:%Y-%m-%d %H:%M} UTC)",
                at,
            )
            for t in tasks
        ],
    )


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
    await _notify_assigned(conn, step.opportunity_id, step.owner, closing.follow_up, step.at)


async def complete_task(conn: asyncpg.Connection, row: CompleteTaskRow) -> None:
    await conn.execute(
        "UPDATE tasks SET status = 'completed', outcome = $2, completed_by = $3, comment = $4,"
        " completed_at = $5 WHERE id = $1 AND status = 'open'",
        row.task_id,
        row.outcome,
        row.actor,
        row.comment,
        row.at,
    )


async def cancel_task(conn: asyncpg.Connection, row: CancelTaskRow) -> None:
    await conn.execute(
        "UPDATE tasks SET status = 'canceled', canceled_at = $2 WHERE id = $1 AND status = 'open'",
        row.task_id,
        row.at,
    )


async def update_opportunity(conn: asyncpg.Connection, row: UpdateOpportunityRow) -> None:
    fields = OpportunityFields.model_validate(row.changes).model_dump(exclude_unset=True)
    unknown = set(fields) - set(DATA_FIELDS)
    if unknown:  # the model forbids them; this guards the SQL below all the same
        raise ValueError(f"unknown fields {sorted(unknown)}")
    if not fields:
        return
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=3))
    await conn.execute(
        f"UPDATE opportunities SET updated_at = $2, {assignments} WHERE id = $1",
        row.opportunity_id,
        row.at,
        *fields.values(),
    )


async def reassign(conn: asyncpg.Connection, row: ReassignRow) -> None:
    """The opportunity and its open tasks to the new owner, and a notification to each owner;
    run again, it changes nothing more."""
    async with conn.transaction():
        title = await conn.fetchval(
            "UPDATE opportunities SET owner = $2, updated_at = $3 WHERE id = $1 RETURNING title",
            row.opportunity_id,
            row.to_owner,
            row.at,
        )
        await conn.execute(
            "UPDATE tasks SET owner = $2 WHERE id = ANY($1::text[]) AND status = 'open'",
            list(row.task_ids),
            row.to_owner,
        )
        why = f" ({row.reason})" if row.reason else ""
        tasks = f"{len(row.task_ids)} open task{'s' if len(row.task_ids) != 1 else ''}"
        await conn.executemany(
            "INSERT INTO notifications (id, recipient, opportunity_id, kind, message, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            [
                (
                    f"{row.opportunity_id}:reassigned{row.number}:from",
                    row.from_owner,
                    row.opportunity_id,
                    "reassigned_away",
                    f"{row.actor} gave {title} and its {tasks} to {row.to_owner}{why}",
                    row.at,
                ),
                (
                    f"{row.opportunity_id}:reassigned{row.number}:to",
                    row.to_owner,
                    row.opportunity_id,
                    "reassigned_to_you",
                    f"{row.actor} gave you {title} and its {tasks}, from {row.from_owner}{why}",
                    row.at,
                ),
            ],
        )


async def add_task(conn: asyncpg.Connection, row: AddTaskRow) -> None:
    """An ad-hoc task and its notification; run again, it changes nothing more."""
    t = row.task
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO tasks (id, opportunity_id, visit_id, stage, task_key, title, owner,"
            " start_at, due_at, kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'adhoc')"
            # Open, also when a re-run of an earlier stage entry canceled it as stale meanwhile.
            " ON CONFLICT (id) DO UPDATE SET status = 'open', canceled_at = NULL"
            " WHERE tasks.status = 'canceled'",
            t.task_id,
            row.opportunity_id,
            f"{row.opportunity_id}:v{row.visit_no}",
            row.stage,
            t.task_key,
            t.title,
            row.owner,
            t.start_at,
            t.due_at,
        )
        await _notify_assigned(conn, row.opportunity_id, row.owner, [t], row.at)


async def close_reasons(conn: asyncpg.Connection) -> list[str]:
    """The active close reasons of the lookup, in order (R9)."""
    rows = await conn.fetch("SELECT name FROM close_reasons WHERE active ORDER BY sort_order, name")
    return [r["name"] for r in rows]
