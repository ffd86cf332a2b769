"""Sales analytics (R17), computed in PostgreSQL over the views of migration 006.

Filters: an owner, a customer and a sales process narrow every figure; the period [start, end) selects
- closings in it, for the win rate, income, hours, cycle time and loss reasons;
- stage visits that began in it, for the time in each stage (finished visits; each visit counts,
  so a stage visited twice by one opportunity counts twice);
- opportunities created in it, for the stage-to-stage conversion;
while the open pipeline is always as it is now. `by_process` splits the closings and the open
pipeline by the sales process the deals run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Filters:
    start: datetime | None = None
    end: datetime | None = None
    owner: str | None = None
    customer: str | None = None
    process: str | None = None

    def args(self) -> tuple[Any, ...]:
        return (self.start, self.end, self.owner, self.customer, self.process)


def _who(owner: int = 3, customer: int = 4, process: int = 5) -> str:
    """The owner, customer and process filters on `f` (opportunity_facts), from these parameters."""
    o, c, p = f"${owner}", f"${customer}", f"${process}"
    return (
        f"({o}::text IS NULL OR f.owner = {o}) AND ({c}::text IS NULL OR f.customer = {c})"
        f" AND ({p}::text IS NULL OR f.process = {p})"
    )


# The queries take $1 start, $2 end, $3 owner, $4 customer, $5 process (the pipeline: $1 owner,
# $2 customer, $3 process).
_WHO = _who()


def _within(column: str) -> str:
    return f"($1::timestamptz IS NULL OR {column} >= $1) AND ($2::timestamptz IS NULL OR {column} < $2)"


_CLOSINGS = f"""
SELECT count(*) AS closed,
       count(*) FILTER (WHERE f.won) AS won,
       count(*) FILTER (WHERE f.lost) AS lost,
       coalesce(sum(f.actual_income) FILTER (WHERE f.won), 0) AS income_won,
       coalesce(sum(f.hours_spent) FILTER (WHERE f.won), 0) AS hours_spent,
       (sum(f.actual_income) FILTER (WHERE f.won AND f.hours_spent > 0 AND f.actual_income IS NOT NULL)
         / sum(f.hours_spent) FILTER (WHERE f.won AND f.hours_spent > 0 AND f.actual_income IS NOT NULL)
       )::numeric(16, 2) AS income_per_hour,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM f.closed_at - f.started_at)::float8)
         AS cycle_median_seconds,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM f.closed_at - f.started_at)::float8)
         AS cycle_p90_seconds
FROM opportunity_facts f
WHERE f.closed AND {_WHO} AND {_within("f.closed_at")}
"""

_TIME_IN_STAGE = f"""
SELECT v.stage, v.stage_order, count(*) AS visits,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY v.seconds) AS median_seconds,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY v.seconds) AS p90_seconds
FROM visit_facts v JOIN opportunity_facts f ON f.id = v.opportunity_id
WHERE NOT v.is_final AND v.left_at IS NOT NULL AND {_WHO} AND {_within("v.entered_at")}
GROUP BY v.stage, v.stage_order
ORDER BY v.stage_order
"""

# An opportunity advanced from a stage when a later visit went to a stage further on (a won
# closing counts, a lost one does not).
_CONVERSION = f"""
SELECT v.stage, v.stage_order, count(DISTINCT v.opportunity_id) AS entered,
       count(DISTINCT v.opportunity_id) FILTER (WHERE EXISTS (
           SELECT 1 FROM visit_facts later
           WHERE later.opportunity_id = v.opportunity_id AND later.visit_no > v.visit_no
             AND later.stage_order > v.stage_order AND NOT later.lost)) AS advanced
FROM visit_facts v JOIN opportunity_facts f ON f.id = v.opportunity_id
WHERE NOT v.is_final AND {_WHO} AND {_within("f.created_at")}
GROUP BY v.stage, v.stage_order
ORDER BY v.stage_order
"""

_LOSSES = f"""
SELECT coalesce(f.close_reason, '(no reason)') AS reason, count(*) AS lost
FROM opportunity_facts f
WHERE f.lost AND {_WHO} AND {_within("f.closed_at")}
GROUP BY 1
ORDER BY 2 DESC, 1
"""

_PIPELINE = f"""
SELECT s.name AS stage, s.sort_order AS stage_order, count(f.id) AS opportunities,
       coalesce(sum(f.expected_amount), 0) AS amount,
       coalesce(sum(f.expected_amount * f.probability / 100.0), 0)::numeric(16, 2) AS weighted_amount
FROM stages s
LEFT JOIN opportunity_facts f ON f.stage = s.name AND NOT f.closed AND {_who(1, 2, 3)}
WHERE NOT s.is_final
GROUP BY s.name, s.sort_order
ORDER BY s.sort_order
"""


_BY_PROCESS = f"""
SELECT p.name AS process,
       count(f.id) FILTER (WHERE f.closed AND {_within("f.closed_at")}) AS closed,
       count(f.id) FILTER (WHERE f.won AND {_within("f.closed_at")}) AS won,
       count(f.id) FILTER (WHERE f.lost AND {_within("f.closed_at")}) AS lost,
       coalesce(sum(f.actual_income) FILTER (WHERE f.won AND {_within("f.closed_at")}), 0) AS income_won,
       count(f.id) FILTER (WHERE NOT f.closed AND f.stage IS NOT NULL) AS open,
       coalesce(sum(f.expected_amount) FILTER (WHERE NOT f.closed AND f.stage IS NOT NULL), 0)
         AS pipeline_amount
FROM sale_processes p
LEFT JOIN opportunity_facts f ON f.process = p.name AND {_WHO}
WHERE $5::text IS NULL OR p.name = $5
GROUP BY p.name
ORDER BY p.name
"""


async def report(conn: asyncpg.Connection, filters: Filters) -> dict[str, Any]:
    args = filters.args()
    closings = dict(await conn.fetchrow(_CLOSINGS, *args) or {})
    won, closed = closings["won"], closings["closed"]
    # Income per hour: over the won deals that recorded both their income and their hours.
    summary = {**closings, "win_rate": won / closed if closed else None}
    conversion = [dict(r) for r in await conn.fetch(_CONVERSION, *args)]
    for row in conversion:
        row["conversion"] = row["advanced"] / row["entered"] if row["entered"] else None
    pipeline = [
        dict(r) for r in await conn.fetch(_PIPELINE, filters.owner, filters.customer, filters.process)
    ]
    by_process = [dict(r) for r in await conn.fetch(_BY_PROCESS, *args)]
    for row in by_process:
        row["win_rate"] = row["won"] / row["closed"] if row["closed"] else None
    return {
        "filters": {
            "from": filters.start,
            "to": filters.end,
            "owner": filters.owner,
            "customer": filters.customer,
            "process": filters.process,
        },
        "closings": summary,
        "time_in_stage": [dict(r) for r in await conn.fetch(_TIME_IN_STAGE, *args)],
        "conversion": conversion,
        "loss_reasons": [dict(r) for r in await conn.fetch(_LOSSES, *args)],
        "pipeline": pipeline,
        "by_process": by_process,
        "pipeline_total": {
            "opportunities": sum(r["opportunities"] for r in pipeline),
            "amount": sum((r["amount"] for r in pipeline), Decimal(0)),
            "weighted_amount": sum((r["weighted_amount"] for r in pipeline), Decimal(0)),
        },
    }
