"""Which key the workers of a task queue encrypt with (SQL; migrations/021): announced by each
worker as it starts, read by the CLI before it sends a command (starter/common.py
`check_encryption`)."""

from __future__ import annotations

import asyncpg


async def announce(conn: asyncpg.Connection | asyncpg.Pool, task_queue: str, key_id: str | None) -> None:
    await conn.execute(
        "INSERT INTO worker_keys (task_queue, key_id) VALUES ($1, $2) ON CONFLICT (task_queue)"
        " DO UPDATE SET key_id = EXCLUDED.key_id, announced_at = now()",
        task_queue,
        key_id,
    )


async def announced(conn: asyncpg.Connection, task_queue: str) -> tuple[str | None] | None:
    """The key id the queue's workers announced, as a 1-tuple (its value None: they encrypt
    nothing); None when no worker has started on the queue."""
    row = await conn.fetchrow("SELECT key_id FROM worker_keys WHERE task_queue = $1", task_queue)
    return None if row is None else (row["key_id"],)
