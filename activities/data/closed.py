"""What a closed opportunity still takes (R9): the income and hours of a won deal, recorded after
it closed by itself (its contracting tasks completed without them). Its process has ended, so
this is written here, by the owner, their manager or an admin."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict

from activities.data.access import may_do
from activities.data.errors import Refused
from workflows.fields import Hours, Money
from workflows.permissions import Action, Asked


class WonFigures(BaseModel):
    """What a won deal records: its actual income and the hours spent on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actual_income: Money | None = None
    hours_spent: Hours | None = None


class ClosedRefused(Refused):
    """The opportunity does not take it; the text says why."""


async def record_won(
    conn: asyncpg.Connection,
    opportunity_id: str,
    *,
    income: Decimal | None,
    hours: Decimal | None,
    actor: str,
) -> dict[str, Any]:
    """Record (or correct) a won deal's actual income and hours; the order draft takes the income."""
    if income is None and hours is None:
        raise ClosedRefused("give --income, --hours or both")
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT o.owner, o.stage, o.closed_at, s.is_successful FROM opportunities o"
            " LEFT JOIN stages s ON s.name = o.stage WHERE o.id = $1 FOR UPDATE OF o",
            opportunity_id,
        )
        if row is None:
            raise ClosedRefused(f"no opportunity {opportunity_id!r}")
        if row["closed_at"] is None or not row["is_successful"]:
            state = "is open" if row["closed_at"] is None else f"was closed in {row['stage']!r}"
            raise ClosedRefused(
                f"opportunity {opportunity_id!r} {state}: income and hours are recorded for a won"
                " deal (while it is open: with the move or completion that closes it as won)"
            )
        refusal = await may_do(conn, Asked(action=Action.CLOSE, actor=actor, owner=row["owner"]))
        if refusal is not None:
            raise ClosedRefused(refusal)
        updated = await conn.fetchrow(
            "UPDATE opportunities SET actual_income = coalesce($2, actual_income),"
            " hours_spent = coalesce($3, hours_spent), updated_at = now() WHERE id = $1"
            " RETURNING id, stage, actual_income, hours_spent",
            opportunity_id,
            income,
            hours,
        )
        if income is not None:
            await conn.execute(
                "UPDATE orders SET amount = $2 WHERE opportunity_id = $1 AND status = 'draft'",
                opportunity_id,
                income,
            )
        return dict(updated)
