"""Follow-up tasks of a won opportunity (R13). The process has ended when they are open, so they
are completed here rather than through it (the CLI then ends the task's own workflow, which
keeps its reminders); the outcomes they take come from the definition version the opportunity's
process followed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from activities.data import definitions, events
from activities.data.errors import Refused
from workflows.definition import TaskTemplate


class FollowUpRefused(Refused):
    """A completion the task does not take; the text says why."""


async def complete(
    conn: asyncpg.Connection,
    opportunity_id: str,
    task_id: str,
    *,
    actor: str,
    outcome: str | None = None,
    comment: str | None = None,
) -> dict[str, Any]:
    """Complete an open follow-up task; completing it again with the same outcome changes
    nothing (a retried command), so the row is written once."""
    async with events.transaction(conn, opportunity_id):
        row = await conn.fetchrow(
            "SELECT t.status, t.outcome, t.task_key, t.kind, v.definition_version, v.process FROM tasks t"
            " LEFT JOIN stage_visits v ON v.id = t.visit_id"
            " WHERE t.id = $1 AND t.opportunity_id = $2 FOR UPDATE OF t",
            task_id,
            opportunity_id,
        )
        if row is None or row["kind"] != "follow-up":
            raise FollowUpRefused(f"opportunity {opportunity_id!r} has no follow-up task {task_id!r}")
        outcomes = ["done"]
        if row["definition_version"] is not None:
            try:
                definition = await definitions.version(conn, row["definition_version"], row["process"])
            except LookupError:  # a run from before the process library: its version is not in it
                follow_up: tuple[TaskTemplate, ...] = ()
            else:
                follow_up = definition.follow_up
            template = next((t for t in follow_up if t.key == row["task_key"]), None)
            if template is not None:
                outcomes = [o.name for o in template.outcomes]
        chosen = outcome or outcomes[0]
        if chosen not in outcomes:
            raise FollowUpRefused(
                f"task {task_id!r} has no outcome {chosen!r}; it has: {', '.join(outcomes)}"
            )
        if row["status"] == "completed" and row["outcome"] == chosen:
            return {"task_id": task_id, "status": "completed", "outcome": chosen, "changed": False}
        if row["status"] != "open":
            raise FollowUpRefused(f"task {task_id!r} is {row['status']} already (outcome {row['outcome']!r})")
        now = datetime.now(UTC)
        await conn.execute(
            "UPDATE tasks SET status = 'completed', outcome = $2, completed_by = $3, comment = $4,"
            " completed_at = $5 WHERE id = $1",
            task_id,
            chosen,
            actor,
            comment,
            now,
        )
        await events.task_completed(conn, opportunity_id, task_id, chosen, actor, comment, now)
        return {"task_id": task_id, "status": "completed", "outcome": chosen, "changed": True}
