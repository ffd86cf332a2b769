"""What a process's writes ask of its task workflows (SQL): start one, finish it, cancel it, give it
a new owner. A journaled write stages its operations under its journal number (activities/data/journal.py);
once the write is confirmed they become ready, and the worker's journal relay carries them out, each
opportunity's in order, then deletes them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg
from opentelemetry import propagate

from activities.data import drafts
from workflows.definition import Reminders
from workflows.state import TaskInput
from workflows.steps import NewTask, TaskOp

OPS_CHANNEL = "corpsale_task_ops"  # notified when task operations become ready (also in migrations/018)
TRACE = "_trace"  # in an operation's arguments: the trace context of the step that asked for it


async def stage_ops(conn: asyncpg.Connection, opportunity_id: str, ops: list[TaskOp]) -> None:
    """Task workflow operations of the write under way (its journal number is the transaction's):
    carried out once it is confirmed. Without a journaled write (a run from before the journal),
    nothing: such a run starts and tells its task workflows itself."""
    if not ops:
        return
    trace: dict[str, str] = {}
    propagate.inject(trace)  # the step's trace (with tracing on): its task workflows join it
    if (gathered := drafts.of(conn)) is not None:  # written with the write's journal entry
        for op in ops:
            gathered.op(op.kind, op.task_id, {**op.args, TRACE: trace})
        return
    await conn.executemany(
        "INSERT INTO task_ops (opportunity_id, number, kind, task_id, args)"
        " SELECT $1, nullif(current_setting('corpsale.journal_number', true), '')::bigint, $2, $3, $4::jsonb"
        " WHERE coalesce(current_setting('corpsale.journal_opportunity', true), '') <> ''",
        [
            (opportunity_id, op.kind, op.task_id, json.dumps({**op.args, TRACE: trace}, default=str))
            for op in ops
        ],
    )


async def ready_ops(
    conn: asyncpg.Connection,
    task_queue: str,
    opportunities: int,
    busy: list[str],
    carried: Sequence[tuple[str, int, int]] = (),
) -> list[asyncpg.Record]:
    """The ready operations of up to `opportunities` of this task queue's processes, those that
    have waited longest first, but for those `busy` (under way): each opportunity's in order.
    Those `carried` out since the last look (opportunity, number, ordinal) are deleted in the same
    statement: one round trip a look, not one more for each opportunity done (`opportunities=0`:
    only that)."""
    opps, numbers, ordinals = ([c[i] for c in carried] for i in range(3))
    rows: list[asyncpg.Record] = await conn.fetch(
        "WITH gone AS (DELETE FROM task_ops d USING unnest($4::text[], $5::bigint[], $6::bigint[])"
        "  AS c(opp, n, ordinal) WHERE d.opportunity_id = c.opp AND d.number = c.n AND d.ordinal = c.ordinal"
        "  RETURNING d.opportunity_id, d.number, d.ordinal)"
        " SELECT o.opportunity_id, o.number, o.ordinal, o.kind, o.task_id, o.args FROM task_ops o"
        " JOIN (SELECT t.opportunity_id, min(t.ready_at) AS since FROM task_ops t"
        "  JOIN projections p ON p.opportunity_id = t.opportunity_id"
        "  WHERE t.ready AND p.task_queue = $1 AND t.opportunity_id <> ALL($3::text[])"
        "  AND (t.opportunity_id, t.number, t.ordinal) NOT IN (SELECT * FROM gone)"
        "  GROUP BY t.opportunity_id ORDER BY since NULLS FIRST LIMIT $2) f"
        " ON f.opportunity_id = o.opportunity_id"
        " WHERE o.ready AND (o.opportunity_id, o.number, o.ordinal) NOT IN (SELECT * FROM gone)"
        " ORDER BY f.since NULLS FIRST, o.opportunity_id, o.number, o.ordinal",
        task_queue,
        opportunities,
        busy,
        opps,
        numbers,
        ordinals,
    )
    return rows


def json_args(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


def starts(
    opportunity_id: str, owner: str, tasks: Sequence[NewTask], reminders: Reminders | None
) -> list[TaskOp]:
    """The workflows of new tasks (their timers, what ops see), each its owner's (else `owner`)."""
    return [
        TaskOp(
            kind="start",
            task_id=t.task_id,
            args=TaskInput(
                task_id=t.task_id,
                opportunity_id=opportunity_id,
                title=t.title,
                owner=t.owner or owner,
                start_at=t.start_at,
                due_at=t.due_at,
                reminders=reminders,
            ).model_dump(mode="json"),
        )
        for t in tasks
    ]
