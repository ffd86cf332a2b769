"""A bulk run in PostgreSQL (SQL): its selection (`--where`), fixed in `bulk_items` when the run
starts, what became of each opportunity, its counts, its cancellation."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import asyncpg

from workflows.operations import BulkCounts, BulkSelect, Selection
from workflows.refusals import Refused

# --where: terms joined by spaces or commas
_TERM = re.compile(r"^(stage|owner|process|version|quiet)\s*(=|>=)\s*(.+)$")


def parse_where(text: str) -> Selection:
    """`stage=Proposal owner=alice process=corporate-sale version=4 quiet>=90` → the selection (open
    opportunities only; `quiet>=N`: no stage entered, task done or data changed for N days)."""
    found: dict[str, Any] = {}
    for term in filter(None, (t.strip() for t in re.split(r"[,\s]+(?=\w+\s*>?=)", text.strip()))):
        match = _TERM.match(term)
        if match is None:
            raise Refused(
                f"cannot read {term!r} in --where; write terms such as stage=Proposal owner=alice"
                " process=corporate-sale version=4 quiet>=90 (days), separated by spaces"
            )
        name, op, value = match.group(1), match.group(2), match.group(3).strip().strip("'\"")
        if (name == "quiet") != (op == ">="):
            raise Refused(f"write {'quiet>=DAYS' if name == 'quiet' else name + '=VALUE'}, not {term!r}")
        if name in found:
            raise Refused(f"{name} is named twice in --where")
        if name in ("version", "quiet"):
            if not value.isdigit() or not 0 <= int(value) <= 100_000:
                raise Refused(f"{name} takes a whole number, not {value!r}")
            found[name] = int(value)
        else:
            found[name] = value
    return Selection(
        stage=found.get("stage"),
        owner=found.get("owner"),
        version=found.get("version"),
        quiet_days=found.get("quiet"),
        process=found.get("process"),
    )


_SELECT = """
SELECT o.id FROM opportunities o
WHERE o.closed_at IS NULL AND o.stage IS NOT NULL
  AND ($1::text IS NULL OR lower(o.stage) = lower($1))
  AND ($2::text IS NULL OR o.owner = $2)
  AND ($3::int IS NULL OR $3 = (SELECT v.definition_version FROM stage_visits v
                                WHERE v.opportunity_id = o.id ORDER BY v.visit_no DESC LIMIT 1))
  AND ($4::interval IS NULL OR greatest(o.updated_at, o.created_at,
        (SELECT max(t.completed_at) FROM tasks t WHERE t.opportunity_id = o.id)) < now() - $4::interval)
  AND ($5::text IS NULL OR o.process = $5)
ORDER BY o.id
"""


def _args(selection: Selection) -> tuple[Any, ...]:
    quiet = timedelta(days=selection.quiet_days) if selection.quiet_days is not None else None
    return selection.stage, selection.owner, selection.version, quiet, selection.process


async def preview(conn: asyncpg.Connection, selection: Selection) -> list[str]:
    return [r["id"] for r in await conn.fetch(_SELECT, *_args(selection))]


async def select(conn: asyncpg.Connection, run: BulkSelect) -> int:
    """Fix the run's selection, once: a second call finds it there and returns its size."""
    async with conn.transaction():
        total = await conn.fetchval("SELECT total FROM bulk_runs WHERE id = $1 FOR UPDATE", run.bulk_id)
        if total is not None:
            return int(total)
        await conn.execute(
            "INSERT INTO bulk_runs (id, command, payload, query, created_by, total)"
            " VALUES ($1, $2, $3, $4, $5, 0)",
            run.bulk_id,
            run.command,
            json.dumps(run.payload),
            run.query,
            run.actor,
        )
        status = await conn.execute(
            f"INSERT INTO bulk_items (bulk_id, opportunity_id) SELECT $6, id FROM ({_SELECT}) AS chosen",
            *_args(run.selection),
            run.bulk_id,
        )
        total = int(status.split()[-1])
        await conn.execute("UPDATE bulk_runs SET total = $2 WHERE id = $1", run.bulk_id, total)
        return total


async def counts(conn: asyncpg.Connection, bulk_id: str) -> BulkCounts:
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM bulk_items WHERE bulk_id = $1 GROUP BY status", bulk_id
    )
    found = {r["status"]: int(r["n"]) for r in rows}
    return BulkCounts(**{k: found.get(k, 0) for k in ("pending", "done", "refused", "skipped")})


async def run_of(conn: asyncpg.Connection, bulk_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM bulk_runs WHERE id = $1", bulk_id)
    if row is None:
        return None
    items = await conn.fetch(
        "SELECT opportunity_id, status, reason FROM bulk_items"
        " WHERE bulk_id = $1 AND status IN ('refused', 'skipped') ORDER BY status, opportunity_id",
        bulk_id,
    )
    return {**dict(row), "payload": json.loads(row["payload"]), "not_done": [dict(i) for i in items]}


async def cancel(conn: asyncpg.Connection, bulk_id: str) -> None:
    await conn.execute(
        "UPDATE bulk_runs SET canceled_at = now() WHERE id = $1 AND canceled_at IS NULL", bulk_id
    )


async def record(
    conn: asyncpg.Connection, bulk_id: str, opportunity_id: str, status: str, reason: str | None
) -> None:
    await conn.execute(
        "UPDATE bulk_items SET status = $3, reason = $4, at = now()"
        " WHERE bulk_id = $1 AND opportunity_id = $2 AND status = 'pending'",
        bulk_id,
        opportunity_id,
        status,
        reason,
    )


async def canceled(conn: asyncpg.Connection, bulk_id: str) -> bool:
    return bool(await conn.fetchval("SELECT canceled_at IS NOT NULL FROM bulk_runs WHERE id = $1", bulk_id))


async def payload(conn: asyncpg.Connection, bulk_id: str) -> dict[str, Any]:
    """The command's payload the run sends to each opportunity."""
    found: dict[str, Any] = json.loads(
        await conn.fetchval("SELECT payload FROM bulk_runs WHERE id = $1", bulk_id)
    )
    return found


async def pending(conn: asyncpg.Connection, bulk_id: str, limit: int) -> list[str]:
    """The next `limit` opportunities the run has not sent its command to, in id order."""
    rows = await conn.fetch(
        "SELECT opportunity_id FROM bulk_items WHERE bulk_id = $1 AND status = 'pending'"
        " ORDER BY opportunity_id LIMIT $2",
        bulk_id,
        limit,
    )
    return [r["opportunity_id"] for r in rows]
