"""The asyncpg pool and the schema migrations."""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

from activities.data import definitions

log = logging.getLogger(__name__)

# One arbitrary constant: the advisory lock that serialises migrations across processes.
_MIGRATION_LOCK = 7_240_311


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection given back to the pool as it is, without asyncpg's reset query (a round trip
    at every release, a twentieth of the worker's CPU): nothing here leaves session state on a
    pooled connection. Settings are set for the transaction (`set_config(..., true)`, `SET
    LOCAL`), advisory locks held for it, and what is held for the session, the journal relay's
    leadership and the relays' LISTENs, is let go explicitly, or the connection is closed."""

    def get_reset_query(self) -> str:
        return ""


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 60.0
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, timeout=connect_timeout, connection_class=PooledConnection
    )
    assert pool is not None
    return pool


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the plain SQL migrations that are not applied yet, and publish the bundled process
    definition into an empty process library; returns what it applied."""
    files = sorted(
        (f for f in resources.files(__package__).joinpath("migrations").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for f in files:
            if f.name in done:
                continue
            await conn.execute(f.read_text("utf-8"))
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", f.name)
            applied.append(f.name)
        applied += [f"process definition {bundled}" for bundled in await definitions.publish_bundled(conn)]
    if applied:
        log.info("applied %s", ", ".join(applied))
    return applied
