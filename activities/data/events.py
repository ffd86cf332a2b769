"""Business events out (SQL), an outbox: each event is written in the same transaction as the
change it reports, with an id that a retried or re-run step reproduces, so a retry or a killed
worker never writes one twice or loses one; each opportunity's events are numbered in order,
without gaps. Read back, an event is CloudEvents 1.0 JSON: the opportunity as its subject, its
number as the `sequence` extension, its place in the whole feed as `position`, the sales process
that made it as `process`.

The feed comes in the order the events' transactions committed (`tx`, then `position`), and only
up to the oldest transaction still running: a position is taken at insert, so an event with a
smaller one can commit later, and a reader that went by positions alone would pass it for good.
A transaction that writes events of an opportunity takes its lock (`lock`) before anything else,
so one opportunity's events commit in their numbers' order, and the feed keeps that order."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from activities.data import drafts
from workflows.event_data import EVENTS
from workflows.refusals import Refused
from workflows.steps import NewTask

SOURCE = "/corporate-sale"
TYPE_PREFIX = "com.corpsale."
TYPES = tuple(EVENTS)


@contextlib.asynccontextmanager
async def transaction(conn: asyncpg.Connection, opportunity_id: str) -> AsyncIterator[None]:
    """A transaction that may write events of `opportunity_id`: its lock comes first."""
    async with conn.transaction():
        await lock(conn, opportunity_id)
        yield
        await conn.execute("SELECT pg_notify('corpsale_events', '')")  # wakes the webhook relay at commit


async def lock(conn: asyncpg.Connection, opportunity_id: str) -> None:
    """One writer per opportunity at a time, until its transaction ends: its numbers stay
    consecutive. Taken before the transaction writes anything (and so has no transaction id yet):
    the next writer's id is then a later one, and the feed orders their events as numbered."""
    written = await conn.fetchval(
        "SELECT pg_current_xact_id_if_assigned() IS NOT NULL"
        " FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS locked",
        opportunity_id,
    )
    if written:
        raise AssertionError(f"lock opportunity {opportunity_id!r} before its transaction writes anything")


async def emit(
    conn: asyncpg.Connection,
    opportunity_id: str,
    event_id: str,
    kind: str,
    at: datetime | None,
    data: dict[str, Any],
) -> None:
    """Record an event in the caller's transaction (begun with `transaction`), unless one with
    its id is there already (its time: `at`, else the database's now). Within a journaled write it
    is a draft, which reaches the feed once the write is confirmed (activities/data/journal.py)."""
    assert kind in EVENTS, kind  # its data is what the contract's model says (tests/test_events.py)
    if (gathered := drafts.of(conn)) is not None:
        gathered.event(event_id, kind, at, data)
        return
    await conn.execute(
        "SELECT emit_event($1, $2, $3, $4, $5::jsonb)",
        event_id,
        opportunity_id,
        kind,
        at,
        drafts.to_json(data),
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


async def tasks_created(
    conn: asyncpg.Connection,
    opportunity_id: str,
    tasks: Sequence[NewTask],
    *,
    owner: str,
    stage: str,
    visit: int,
    at: datetime,
    adhoc: bool = False,
) -> None:
    """A `task.created` event per task (a task without an owner of its own is `owner`'s)."""
    for t in tasks:
        created = {"task_id": t.task_id, "title": t.title, "owner": t.owner or owner, "due_at": t.due_at,
                   "stage": stage, "visit": visit, **({"adhoc": True} if adhoc else {})}  # fmt: skip
        await emit(conn, opportunity_id, f"{t.task_id}:created", "task.created", at, created)


def visit_no(visit_id: str | None) -> int:
    return int(visit_id.rsplit(":v", 1)[1]) if visit_id and ":v" in visit_id else 0


async def read(
    conn: asyncpg.Connection, since: int = 0, opportunity_id: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """The events after the one at position `since` (0: from the first), of one opportunity or
    all, in the order they committed, as CloudEvents; the last one's position is where to go on."""
    if since and not await conn.fetchval("SELECT true FROM events WHERE position = $1", since):
        raise Refused(f"no event at position {since}: go on from the position of an event you read")
    rows = await conn.fetch(
        "SELECT position, id, opportunity_id, sequence, type, time, data, process FROM events"
        " WHERE (tx, position) >"
        " (SELECT coalesce(max(tx), '0'::xid8), $1::bigint FROM events WHERE position = $1)"
        " AND tx < pg_snapshot_xmin(pg_current_snapshot())"
        " AND ($2::text IS NULL OR opportunity_id = $2) ORDER BY tx, position LIMIT $3",
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
            "process": row["process"],
        },
        data=json.loads(data) if isinstance(data, str) else data,
    )
    written: dict[str, Any] = json.loads(JSONFormat().write(event))
    return written
