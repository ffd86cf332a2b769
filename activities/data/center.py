"""What a person sees of the process, read from PostgreSQL: their notification center (R5, R20),
their calendar of tasks, and the people table that says who escalations go to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from activities.data.errors import Refused


class CenterRefused(Refused):
    """An edit that is not allowed; the text says why."""


# People -------------------------------------------------------------------------------------


async def list_people(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT p.name, p.role, p.manager, p.email,"
        " (SELECT count(*) FROM tasks t WHERE t.owner = p.name AND t.status = 'open') AS open_tasks"
        " FROM people p ORDER BY p.name"
    )
    return [dict(r) for r in rows]


async def set_person(
    conn: asyncpg.Connection,
    name: str,
    *,
    manager: str | None,
    email: str | None,
    clear_manager: bool = False,
    role: str | None = None,
) -> None:
    """Add a person or change their manager, email or role; refuse a manager chain that loops
    back."""
    if not name.strip() or (manager is not None and not manager.strip()):
        raise CenterRefused("a person's name (and their manager's) cannot be empty")
    if manager == name:
        raise CenterRefused(f"{name!r} cannot be their own manager")
    async with conn.transaction():
        await conn.execute("LOCK TABLE people IN SHARE ROW EXCLUSIVE MODE")
        if manager is not None:
            chain = await conn.fetchval(
                "WITH RECURSIVE up(name, depth) AS (SELECT $1::text, 0 UNION ALL"
                " SELECT p.manager, up.depth + 1 FROM people p JOIN up ON p.name = up.name"
                " WHERE p.manager IS NOT NULL AND up.depth < 100)"
                " SELECT bool_or(name = $2) FROM up",
                manager,
                name,
            )
            if chain:
                raise CenterRefused(f"{manager!r} reports to {name!r} already: a manager chain cannot loop")
        await conn.execute(
            "INSERT INTO people (name, manager, email, role) VALUES ($1, $2, $3, coalesce($5, 'member'))"
            " ON CONFLICT (name) DO UPDATE"
            " SET manager = CASE WHEN $4 THEN NULL ELSE coalesce(EXCLUDED.manager, people.manager) END,"
            " email = coalesce(EXCLUDED.email, people.email), role = coalesce($5, people.role)",
            name,
            manager,
            email,
            clear_manager,
            role,
        )


async def remove_person(conn: asyncpg.Connection, name: str) -> None:
    async with conn.transaction():
        reports = [r["name"] for r in await conn.fetch("SELECT name FROM people WHERE manager = $1", name)]
        if reports:
            raise CenterRefused(f"{name!r} manages {', '.join(reports)}: give them another manager first")
        if await conn.execute("DELETE FROM people WHERE name = $1", name) == "DELETE 0":
            raise CenterRefused(f"no person {name!r}")


# The notification center --------------------------------------------------------------------


async def inbox(
    conn: asyncpg.Connection, recipient: str, *, unread: bool, limit: int
) -> list[dict[str, Any]]:
    """A recipient's notifications: unread first, newest first."""
    rows = await conn.fetch(
        "SELECT id, kind, message, opportunity_id, task_id, created_at, read_at FROM notifications"
        " WHERE recipient = $1 AND (NOT $2 OR read_at IS NULL)"
        " ORDER BY read_at IS NOT NULL, created_at DESC, id LIMIT $3",
        recipient,
        unread,
        limit,
    )
    return [dict(r) for r in rows]


async def mark_read(conn: asyncpg.Connection, recipient: str, ids: list[str] | None, at: datetime) -> int:
    """Mark these notifications of `recipient` read (None: all of them); returns how many were
    unread. Ids of someone else's notifications are refused, naming them."""
    async with conn.transaction():
        if ids is not None:
            found = {
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM notifications WHERE recipient = $1 AND id = ANY($2::text[])",
                    recipient,
                    ids,
                )
            }
            unknown = [i for i in ids if i not in found]
            if unknown:
                raise CenterRefused(f"{recipient} has no notification {', '.join(map(repr, unknown))}")
        status = await conn.execute(
            "UPDATE notifications SET read_at = $3 WHERE recipient = $1 AND read_at IS NULL"
            " AND ($2::text[] IS NULL OR id = ANY($2::text[]))",
            recipient,
            ids,
            at,
        )
        return int(status.split()[-1])


# The calendar -------------------------------------------------------------------------------


async def agenda(
    conn: asyncpg.Connection,
    owner: str,
    start: datetime,
    end: datetime,
    *,
    include_closed: bool = False,
    now: datetime,
) -> list[dict[str, Any]]:
    """A person's tasks that overlap [start, end): open ones (and with `include_closed`, completed
    and canceled ones too), by due time; and, whatever the range, the open tasks overdue at `now`
    (they are still to do), marked `overdue`. The unclaimed tasks of the person's teams are among
    them (`team`: the queue a task is in; `owner` `team:NAME` until a member claims it)."""
    rows = await conn.fetch(
        "SELECT t.id, t.title, t.stage, t.kind, t.status, t.start_at, t.due_at, t.completed_at,"
        " t.canceled_at, t.opportunity_id, o.title AS opportunity, o.customer, t.owner, t.team,"
        " (t.status = 'open' AND t.due_at < $5) AS overdue"
        " FROM tasks t JOIN opportunities o ON o.id = t.opportunity_id"
        " WHERE (t.owner = $1"
        "  OR t.owner IN (SELECT 'team:' || m.team FROM team_members m WHERE m.person = $1))"
        " AND ((t.start_at < $3 AND t.due_at >= $2) OR (t.status = 'open' AND t.due_at < $5))"
        " AND ($4 OR t.status = 'open')"
        " ORDER BY t.due_at, t.id",
        owner,
        start,
        end,
        include_closed,
        now,
    )
    return [dict(r) for r in rows]
