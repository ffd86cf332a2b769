"""The process's steps on the business data: opening an opportunity, its tasks (completed,
canceled, added, reassigned, put off), its data, refusals (a stage entry and the closing:
activities/data/stage_visits.py). Each write runs in its caller's transaction, which holds the opportunity's
lock (activities/data/journal.py `write`). Every write is idempotent by construction: rows have
deterministic ids and inserts say `ON CONFLICT DO NOTHING`; updates only move a row out of the
state they expect. A write that opens, completes, cancels or reassigns tasks also asks the same of
their workflows (`task_ops.stage_ops`), carried out once the write is confirmed.
"""

from __future__ import annotations

import hashlib
import json

import asyncpg

from activities.data import events, notices, task_ops
from workflows.contract import OpportunityFields
from workflows.definition import Stage
from workflows.steps import (
    AddTaskRow,
    CancelTaskRow,
    CompleteTaskRow,
    OpenOpportunity,
    OpportunityRecord,
    ReassignRow,
    RefusalRow,
    SnoozeRow,
    TaskOp,
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
        process=row["process"],
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
    """The opportunity's stage, when it closed and its process (None if there is no such
    opportunity)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT stage, closed_at, process FROM opportunities WHERE id = $1", opportunity_id
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
    """Insert a new opportunity (in the caller's transaction, which holds its lock); False when
    one with that id is there already."""
    assert cmd.new is not None
    fields = cmd.new.model_dump(exclude_none=True)
    columns = ["id", *fields, "process"]
    values = [cmd.opportunity_id, *fields.values(), cmd.process]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    default = "(SELECT name FROM sale_processes WHERE is_default)"
    placeholders = placeholders.rsplit(", ", 1)[0] + f", coalesce(${len(values)}, {default})"
    status = await conn.execute(
        f"INSERT INTO opportunities ({', '.join(columns)}) VALUES ({placeholders})"
        " ON CONFLICT (id) DO NOTHING",
        *values,
    )
    inserted = bool(status == "INSERT 0 1")
    if inserted:
        started = {
            "title": cmd.new.title,
            "customer": cmd.new.customer,
            "owner": cmd.new.owner,
            "actor": cmd.actor,
        }
        await events.emit(
            conn,
            cmd.opportunity_id,
            f"{cmd.opportunity_id}:started",
            "opportunity.started",
            None,
            started,
        )
    return inserted


async def choose_process(conn: asyncpg.Connection, opportunity_id: str, process: str | None) -> None:
    """The sales process the opportunity runs from now on, when a start names one (in the
    caller's transaction); without one it keeps its own (a new one's: the library's default)."""
    if process is not None:
        await conn.execute(
            "UPDATE opportunities SET process = $2 WHERE id = $1 AND process <> $2", opportunity_id, process
        )


async def find_manager(conn: asyncpg.Connection, person: str) -> str | None:
    """The person's manager in the people directory, if one is on record."""
    manager: str | None = await conn.fetchval("SELECT manager FROM people WHERE name = $1", person)
    return manager


async def complete_task(conn: asyncpg.Connection, row: CompleteTaskRow, opportunity_id: str) -> None:
    """A task completed (in the caller's transaction, which holds the opportunity's lock), and its
    workflow told."""
    completed = await conn.fetchval(
        "UPDATE tasks SET status = 'completed', outcome = $2, completed_by = $3, comment = $4,"
        " completed_at = $5 WHERE id = $1 AND status = 'open' RETURNING true",
        row.task_id,
        row.outcome,
        row.actor,
        row.comment,
        row.at,
    )
    if completed:
        await events.task_completed(
            conn, opportunity_id, row.task_id, row.outcome, row.actor, row.comment, row.at
        )
        finish = TaskOp(kind="finish", task_id=row.task_id, args={"outcome": row.outcome})
        await task_ops.stage_ops(conn, opportunity_id, [finish])


async def cancel_task(conn: asyncpg.Connection, row: CancelTaskRow) -> None:
    """A task workflow canceled records its task's cancellation, unless its process did (it does
    first, for runs of the journal)."""
    opportunity_id = await task_opportunity(conn, row.task_id)
    if opportunity_id is None:
        return
    async with events.transaction(conn, opportunity_id):
        canceled = await conn.fetchval(
            "UPDATE tasks SET status = 'canceled', canceled_at = $2 WHERE id = $1 AND status = 'open'"
            " RETURNING true",
            row.task_id,
            row.at,
        )
        if canceled:
            await events.task_canceled(conn, opportunity_id, row.task_id, row.at)


async def task_opportunity(conn: asyncpg.Connection, task_id: str) -> str | None:
    opportunity_id: str | None = await conn.fetchval(
        "SELECT opportunity_id FROM tasks WHERE id = $1", task_id
    )
    return opportunity_id


async def update_opportunity(conn: asyncpg.Connection, row: UpdateOpportunityRow) -> None:
    fields = OpportunityFields.model_validate(row.changes).model_dump(exclude_unset=True)
    unknown = set(fields) - set(DATA_FIELDS)
    if unknown:  # the model forbids them; this guards the SQL below all the same
        raise ValueError(f"unknown fields {sorted(unknown)}")
    if not fields:
        return
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=3))
    # Two updates in one workflow task share their time: what they change tells them apart.
    digest = hashlib.sha256(json.dumps(row.changes, sort_keys=True, default=str).encode()).hexdigest()[:16]
    await conn.execute(
        f"UPDATE opportunities SET updated_at = $2, {assignments} WHERE id = $1",
        row.opportunity_id,
        row.at,
        *fields.values(),
    )
    event_id = f"{row.opportunity_id}:updated:{row.at.isoformat()}:{digest}"
    await events.emit(
        conn, row.opportunity_id, event_id, "opportunity.updated", row.at, {"changes": row.changes}
    )


async def reassign(conn: asyncpg.Connection, row: ReassignRow) -> None:
    """The opportunity and its open tasks to the new owner, and a notification to each owner;
    run again, it changes nothing more."""
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
    moved = {
        "from": row.from_owner,
        "to": row.to_owner,
        "actor": row.actor,
        "reason": row.reason,
        "task_ids": list(row.task_ids),
    }
    event_id = f"{row.opportunity_id}:reassigned{row.number}"
    await events.emit(conn, row.opportunity_id, event_id, "opportunity.reassigned", row.at, moved)
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
    owner = [TaskOp(kind="owner", task_id=i, args={"owner": row.to_owner}) for i in row.task_ids]
    await task_ops.stage_ops(conn, row.opportunity_id, owner)


async def add_task(conn: asyncpg.Connection, row: AddTaskRow) -> None:
    """An ad-hoc task and its notification; run again, it changes nothing more."""
    t = row.task
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
    await notices.notify_assigned(conn, row.opportunity_id, row.owner, [t], row.at)
    await events.tasks_created(
        conn,
        row.opportunity_id,
        [t],
        owner=row.owner,
        stage=row.stage,
        visit=row.visit_no,
        at=row.at,
        adhoc=True,
    )
    await task_ops.stage_ops(
        conn, row.opportunity_id, task_ops.starts(row.opportunity_id, row.owner, [t], row.reminders)
    )


async def record_refusal(conn: asyncpg.Connection, row: RefusalRow) -> None:
    refused = {"command": row.command, "reason": row.reason, "request_id": row.request_id, "actor": row.actor}
    if row.digest is not None:
        refused["digest"] = row.digest
    event_id = f"{row.opportunity_id}:refused{row.number}"
    await events.emit(conn, row.opportunity_id, event_id, "command.refused", row.at, refused)


async def close_reasons(conn: asyncpg.Connection) -> list[str]:
    """The active close reasons of the lookup, in order (R9)."""
    rows = await conn.fetch("SELECT name FROM close_reasons WHERE active ORDER BY sort_order, name")
    return [r["name"] for r in rows]


async def snooze_task(conn: asyncpg.Connection, row: SnoozeRow) -> None:
    """A task put off: its new due time (the owner's agenda and calendar show it), its event, its
    owner told when someone else put it off, and its workflow's timers moved once the write is
    confirmed. Run again, it changes nothing more."""
    await conn.execute(
        "UPDATE tasks SET due_at = $2 WHERE id = $1 AND status = 'open'", row.task_id, row.due_at
    )
    snoozed = {
        "task_id": row.task_id,
        "due_at": row.due_at.isoformat(),
        "was_due_at": row.was_due_at.isoformat(),
        "actor": row.actor,
        "reason": row.reason,
    }
    row_id = f"{row.task_id}:snoozed{row.number}"
    await events.emit(conn, row.opportunity_id, row_id, "task.snoozed", row.at, snoozed)
    if row.actor != row.owner:
        why = f": {row.reason}" if row.reason else ""
        await conn.execute(
            "INSERT INTO notifications (id, recipient, opportunity_id, task_id, kind, message, created_at)"
            " VALUES ($1, $2, $3, $4, 'task_snoozed', $5, $6) ON CONFLICT (id) DO NOTHING",
            row_id,
            row.owner,
            row.opportunity_id,
            row.task_id,
            f"{row.actor} put off your task {row.title}: due {row.due_at:%Y-%m-%d %H:%M} UTC"
            f" (was {row.was_due_at:%Y-%m-%d %H:%M} UTC){why}",
            row.at,
        )
    due = TaskOp(kind="due", task_id=row.task_id, args={"due_at": row.due_at.isoformat()})
    await task_ops.stage_ops(conn, row.opportunity_id, [due])
