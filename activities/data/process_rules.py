"""Which sales process a deal runs when it is not named at its start (SQL; migrations/023, 024):
the library's default, and for a lead's deal the first rule it matches (its type, its budget),
else the default."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg

from activities.data.definitions import known
from activities.data.errors import Refused


async def set_default(conn: asyncpg.Connection, process: str) -> None:
    """`process` becomes the default: a start that names none runs it."""
    async with conn.transaction():
        await known(conn, process)
        await conn.execute(
            "UPDATE sale_processes SET is_default = false WHERE is_default AND name <> $1", process
        )
        await conn.execute("UPDATE sale_processes SET is_default = true WHERE name = $1", process)


async def rules(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, process, lead_type, budget_under, created_at FROM lead_process_rules ORDER BY id"
    )
    return [dict(r) for r in rows]


async def add_rule(
    conn: asyncpg.Connection, process: str, lead_type: str | None, budget_under: Decimal | None
) -> dict[str, Any]:
    if lead_type is None and budget_under is None:
        raise Refused("a rule needs a lead type (--type), a budget ceiling (--budget-under) or both")
    await known(conn, process)
    row = await conn.fetchrow(
        "INSERT INTO lead_process_rules (process, lead_type, budget_under) VALUES ($1, $2, $3) RETURNING *",
        process,
        lead_type,
        budget_under,
    )
    assert row is not None
    return dict(row)


async def remove_rule(conn: asyncpg.Connection, rule_id: int) -> None:
    if await conn.execute("DELETE FROM lead_process_rules WHERE id = $1", rule_id) == "DELETE 0":
        raise Refused(f"no rule {rule_id}; `corpsale processes rules` lists them")


PROCESS_FOR_LEAD = """
coalesce((SELECT r.process FROM lead_process_rules r
           WHERE (r.lead_type IS NULL OR r.lead_type = $1)
             AND (r.budget_under IS NULL OR $2::numeric < r.budget_under)
           ORDER BY r.id LIMIT 1),
         (SELECT name FROM sale_processes WHERE is_default))
"""


async def process_for_lead(conn: asyncpg.Connection, lead_type: str | None, budget: Decimal | None) -> str:
    """The process a lead's deal runs: the first rule it matches (a rule on the budget matches no
    lead without one), else the default."""
    process: str = await conn.fetchval(f"SELECT {PROCESS_FOR_LEAD}", lead_type, budget)
    return process
