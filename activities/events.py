"""Business events out (SQL), an outbox: each event is written in the same transaction as the
change it reports, with an id that a retried or re-run step reproduces, so a retry or a killed
worker never writes one twice or loses one; each opportunity's events are numbered in order,
without gaps. Read back, an event is CloudEvents 1.0 JSON: the opportunity as its subject, its
number as the `sequence` extension, its place in the whole feed as `position`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from workflows.contract import EVENTS
from workflows.steps import EnterStage, NewTask

SOURCE = "/corporate-sale"
TYPE_PREFIX = "com.corpsale."
TYPES = tuple(EVENTS)


async def emit(
    conn: asyncpg.Connection,
    opportunity_id: str,
    event_id: str,
    kind: str,
    at: datetime | None,
    data: dict[str, Any],
) -> None:
    """Record an event in the caller's transaction, unless one with its id is there already
    (its time: `at`, else the database's now)."""
    assert kind in EVENTS, kind  # its data is what the contract's model says (tests/test_events.py)
    # One writer per opportunity at a time: its numbers stay consecutive.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", opportunity_id)
    await conn.execute(
        "INSERT INTO events (id, opportunity_id, sequence, type, time, data)"
        " SELECT $1, $2, coalesce(max(sequence), 0) + 1, $3, coalesce($4, now()), $5::jsonb FROM events"
        " WHERE opportunity_id = $2 ON CONFLICT (id) DO NOTHING",
        event_id,
        opportunity_id,
        kind,
        at,
        json.dumps(data, default=str),
    )


async def task_completed(
    conn: asyncpg.Connection,
    opportunity_id: str,
    task_id: str,
    outcome: str,
    actor: str | None,
    comment: str | None,
    at: datetime | None,
) -> None:
    completed = {"task_id": task_id, "outcome": outcome, "actor": actor, "comment": comment}
    await emit(conn, opportunity_id, f"{task_id}:completed", "task.completed", at, completed)


async def task_canceled(conn: asyncpg.Connection, opportunity_id: str, task_id: str, at: datetime) -> None:
    await emit(conn, opportunity_id, f"{task_id}:canceled", "task.canceled", at, {"task_id": task_id})


async def tasks_created(conn: asyncpg.Connection, step: EnterStage, tasks: Sequence[NewTask]) -> None:
    for t in tasks:
        created = {
            "task_id": t.task_id,
            "title": t.title,
            "owner": t.owner or step.owner,
            "due_at": t.due_at,
            "stage": step.stage,
            "visit": step.visit_no,
        }
        await emit(conn, step.opportunity_id, f"{t.task_id}:created", "task.created", step.at, created)


def visit_no(visit_id: str | None) -> int:
    return int(visit_id.rsplit(":v", 1)[1]) if visit_id and ":v" in visit_id else 0


async def read(
    conn: asyncpg.Connection, since: int = 0, opportunity_id: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """The events after position `since` (of one opportunity), oldest first, as CloudEvents."""
    rows = await conn.fetch(
        "SELECT position, id, opportunity_id, sequence, type, time, data FROM events"
        " WHERE position > $1 AND ($2::text IS NULL OR opportunity_id = $2) ORDER BY position LIMIT $3",
        since,
        opportunity_id,
        limit,
    )
    return [cloud_event(r) for r in rows]


def cloud_event(row: asyncpg.Record) -> dict[str, Any]:
    data = row["data"]
    event = CloudEvent(
        attributes={
            "id": row["id"],
            "source": SOURCE,
            "type": TYPE_PREFIX + row["type"],
            "subject": row["opportunity_id"],
            "time": row["time"],
            "datacontenttype": "application/json",
            "sequence": row["sequence"],
            "position": row["position"],
        },
        data=json.loads(data) if isinstance(data, str) else data,
    )
    written: dict[str, Any] = json.loads(JSONFormat().write(event))
    return written
