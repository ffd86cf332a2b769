"""A running process moved onto another definition version (SQL): its visit's tasks and history
row changed in one transaction, with their notifications and business events."""

from __future__ import annotations

import asyncpg

from activities.data import events, notices, task_ops
from workflows.steps import MigrateRow, TaskOp


async def migrate_visit(conn: asyncpg.Connection, row: MigrateRow) -> None:
    """The visit onto another definition version, all in one transaction: its tasks whose key is
    gone canceled, its new ones opened (with their notifications), the visit's version changed
    (the one it had kept), their workflows told; run again, it changes nothing more. In the caller's
    transaction, which holds the opportunity's lock."""
    visit_id = f"{row.opportunity_id}:v{row.visit_no}"
    canceled = await conn.fetch(
        "UPDATE tasks SET status = 'canceled', canceled_at = $2"
        " WHERE id = ANY($1::text[]) AND status = 'open' RETURNING id",
        list(row.cancel),
        row.at,
    )
    for task in canceled:
        await events.task_canceled(conn, row.opportunity_id, task["id"], row.at)
    await task_ops.stage_ops(
        conn, row.opportunity_id, [TaskOp(kind="cancel", task_id=t["id"]) for t in canceled]
    )
    await conn.executemany(
        "INSERT INTO tasks (id, opportunity_id, visit_id, stage, task_key, title, owner,"
        " start_at, due_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        [
            (t.task_id, row.opportunity_id, visit_id, row.stage, t.task_key, t.title,
             t.owner or row.owner, t.start_at, t.due_at)
            for t in row.tasks
        ],
    )  # fmt: skip
    await notices.notify_assigned(conn, row.opportunity_id, row.owner, row.tasks, row.at)
    await task_ops.stage_ops(
        conn, row.opportunity_id, task_ops.starts(row.opportunity_id, row.owner, row.tasks, row.reminders)
    )
    await events.tasks_created(
        conn,
        row.opportunity_id,
        row.tasks,
        owner=row.owner,
        stage=row.stage,
        visit=row.visit_no,
        at=row.at,
    )
    await conn.execute(
        "UPDATE stage_visits SET definition_version = $2, migrated_from = coalesce(migrated_from, $3),"
        " migrated_at = $4, process = coalesce($5, process) WHERE id = $1",
        visit_id,
        row.to_version,
        row.from_version,
        row.at,
        row.process,
    )
    if row.process is not None:  # onto another sales process: the deal runs it from now on
        await conn.execute(
            "UPDATE opportunities SET process = $2 WHERE id = $1", row.opportunity_id, row.process
        )
    moved = {
        "stage": row.stage,
        "from_version": row.from_version,
        "to_version": row.to_version,
        "actor": row.actor,
        "kept": list(row.kept),
        "canceled": list(row.cancel),
        "opened": [t.task_id for t in row.tasks],
        **({"to_process": row.process} if row.process is not None else {}),
    }
    event_id = f"{row.opportunity_id}:migrated{row.number}"
    await events.emit(conn, row.opportunity_id, event_id, "opportunity.migrated", row.at, moved)
