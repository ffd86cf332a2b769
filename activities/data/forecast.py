"""The forecast and the quotas (SQL): per period (month or quarter) and owner, the open amount by
forecast category of the deals expected to close then, their probability-weighted amount, what
was won, and attainment against the owner's quota for the period."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any, Literal

import asyncpg

from activities.data.errors import Refused

Period = Literal["month", "quarter"]
FORMATS = {"month": "YYYY-MM", "quarter": 'YYYY-"Q"Q'}
QUOTA_PERIOD = r"^[0-9]{4}-(Q[1-4]|(0[1-9]|1[0-2]))$"


class BadQuota(Refused, ValueError):
    """A quota that cannot be recorded: the message says what a period looks like."""


async def forecast(
    conn: asyncpg.Connection,
    by: Period,
    start: date,
    end: date,
    owner: str | None = None,
    process: str | None = None,
    by_process: bool = False,
) -> list[dict[str, Any]]:
    """One row per period and owner from `start` to `end` (the expected close date of open deals,
    the close of won ones, the quotas of the periods between); with `process`, only the deals of
    that sales process; `by_process`, one row per process of each (its `process`). The quota is
    the owner's whole: a process's attainment is its part of it."""
    fmt = FORMATS[by]
    split = "o.process" if by_process else "''"  # one row per process, or one for all
    rows = await conn.fetch(
        f"""
        WITH periods AS (
            SELECT DISTINCT to_char(d, '{fmt}') AS period
            FROM generate_series($1::date, $2::date, interval '1 month') AS d
            UNION SELECT to_char($2::date, '{fmt}')
        ), open_deals AS (
            SELECT to_char(o.expected_close_date, '{fmt}') AS period, o.owner, {split} AS process,
                   sum(coalesce(o.expected_amount, 0)) FILTER (
                       WHERE coalesce(o.forecast_category, 'pipeline') = 'pipeline') AS pipeline,
                   sum(coalesce(o.expected_amount, 0)) FILTER (WHERE o.forecast_category = 'best case')
                       AS best_case,
                   sum(coalesce(o.expected_amount, 0)) FILTER (WHERE o.forecast_category = 'commit')
                       AS commit,
                   sum(coalesce(o.expected_amount, 0) * coalesce(o.probability, 0) / 100) AS weighted
            FROM opportunities o
            WHERE o.closed_at IS NULL AND o.expected_close_date BETWEEN $1 AND $2
              AND ($3::text IS NULL OR o.owner = $3) AND ($4::text IS NULL OR o.process = $4)
            GROUP BY 1, 2, 3
        ), won AS (
            SELECT to_char(o.closed_at AT TIME ZONE 'UTC', '{fmt}') AS period, o.owner, {split} AS process,
                   sum(coalesce(o.actual_income, o.expected_amount, 0)) AS won
            FROM opportunities o JOIN stages s ON s.name = o.stage AND s.is_final AND s.is_successful
            WHERE (o.closed_at AT TIME ZONE 'UTC')::date BETWEEN $1 AND $2
              AND ($3::text IS NULL OR o.owner = $3) AND ($4::text IS NULL OR o.process = $4)
            GROUP BY 1, 2, 3
        ), keys AS (
            SELECT period, owner, process FROM open_deals
            UNION SELECT period, owner, process FROM won
            UNION SELECT q.period, q.person, '' FROM quotas q JOIN periods p USING (period)
                  WHERE ($3::text IS NULL OR q.person = $3) AND NOT EXISTS (
                      SELECT 1 FROM open_deals d WHERE (d.period, d.owner) = (q.period, q.person)
                      UNION ALL SELECT 1 FROM won w WHERE (w.period, w.owner) = (q.period, q.person))
        )
        SELECT k.period, k.owner, nullif(k.process, '') AS process,
               coalesce(d.pipeline, 0) AS pipeline, coalesce(d.best_case, 0) AS best_case,
               coalesce(d.commit, 0) AS commit, round(coalesce(d.weighted, 0), 2) AS weighted,
               coalesce(w.won, 0) AS won, q.amount AS quota,
               CASE WHEN q.amount > 0 THEN round(coalesce(w.won, 0) / q.amount * 100, 1) END
                   AS attainment
        FROM keys k
        LEFT JOIN open_deals d USING (period, owner, process)
        LEFT JOIN won w USING (period, owner, process)
        LEFT JOIN quotas q ON q.person = k.owner AND q.period = k.period
        ORDER BY k.period, k.owner, k.process
        """,
        start,
        end,
        owner,
        process,
    )
    found = [dict(r) for r in rows]
    if not by_process:
        for row in found:
            del row["process"]
    return found


async def set_quota(conn: asyncpg.Connection, person: str, period: str, amount: Decimal, by: str) -> None:
    if not re.match(QUOTA_PERIOD, period):
        raise BadQuota(f"period {period!r} is neither a quarter nor a month: write 2027-Q1 or 2027-03")
    if not amount.is_finite() or not 0 <= amount < 10**12:
        raise BadQuota(f"a quota is an amount from 0 to 999999999999.99, not {amount}")
    await conn.execute(
        "INSERT INTO quotas (person, period, amount, set_by) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (person, period) DO UPDATE SET amount = EXCLUDED.amount, set_by = EXCLUDED.set_by,"
        " updated_at = now()",
        person,
        period,
        amount,
        by,
    )


async def list_quotas(conn: asyncpg.Connection, person: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT person, period, amount, set_by, updated_at FROM quotas"
        " WHERE $1::text IS NULL OR person = $1 ORDER BY period, person",
        person,
    )
    return [dict(r) for r in rows]
