"""Opportunities as the CLI shows them: a list, and one opportunity with its tasks, stage
history and order."""

from __future__ import annotations

from typing import Any

import asyncpg


async def list_opportunities(
    conn: asyncpg.Connection,
    *,
    stage: str | None = None,
    owner: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, title, customer, owner, stage, probability, expected_amount, created_at,"
        " closed_at FROM opportunities"
        " WHERE ($1::text IS NULL OR stage = $1) AND ($2::text IS NULL OR owner = $2)"
        " ORDER BY created_at DESC, id LIMIT $3",
        stage,
        owner,
        limit,
    )
    return [dict(r) for r in rows]


async def opportunity_detail(conn: asyncpg.Connection, opportunity_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM opportunities WHERE id = $1", opportunity_id)
    if row is None:
        return None
    tasks = await conn.fetch(
        "SELECT id, kind, stage, title, owner, status, outcome, start_at, due_at, completed_at,"
        " completed_by, canceled_at FROM tasks WHERE opportunity_id = $1"
        " ORDER BY start_at, id",
        opportunity_id,
    )
    order = await conn.fetchrow(
        "SELECT id, customer, title, amount, status, created_at FROM orders WHERE opportunity_id = $1",
        opportunity_id,
    )
    visits = await conn.fetch(
        "SELECT visit_no, stage, entered_at, entered_by, reason, left_at, process, definition_version"
        " FROM stage_visits WHERE opportunity_id = $1 ORDER BY visit_no",
        opportunity_id,
    )
    return {
        **dict(row),
        "tasks": [dict(t) for t in tasks],
        "history": [dict(v) for v in visits],
        "order": dict(order) if order else None,
    }
