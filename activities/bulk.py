"""Bulk commands (SQL and sending): a bulk run's selection, fixed in PostgreSQL when it starts,
and the sending of its commands, a page at a time, through the same contract as one at a time.

Exactly once, whatever is retried: each opportunity's command carries the request id
`bulk-<bulk id>-<opportunity id>`, also as its update id, so a page sent again after a worker
was killed gets each process's first answer back instead of applying anything twice (R23);
what became of each opportunity is recorded in `bulk_items` as its answer comes.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from workflows import contract as c
from workflows.operations import BulkCounts, BulkPage, BulkSelect, Selection
from workflows.refusals import Refused

# --where: terms joined by spaces or commas
_TERM = re.compile(r"^(stage|owner|version|quiet)\s*(=|>=)\s*(.+)$")


def parse_where(text: str) -> Selection:
    """`stage=Proposal owner=alice version=4 quiet>=90` → the selection (open opportunities only;
    `quiet>=N`: no stage entered, task done or data changed for N days)."""
    found: dict[str, Any] = {}
    for term in filter(None, (t.strip() for t in re.split(r"[,\s]+(?=\w+\s*>?=)", text.strip()))):
        match = _TERM.match(term)
        if match is None:
            raise Refused(
                f"cannot read {term!r} in --where; write terms such as stage=Proposal owner=alice"
                " version=4 quiet>=90 (days), separated by spaces"
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
ORDER BY o.id
"""


def _args(selection: Selection) -> tuple[Any, ...]:
    quiet = timedelta(days=selection.quiet_days) if selection.quiet_days is not None else None
    return selection.stage, selection.owner, selection.version, quiet


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
            f"INSERT INTO bulk_items (bulk_id, opportunity_id) SELECT $5, id FROM ({_SELECT}) AS chosen",
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


async def _record(
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


GIVE_UP = 300.0  # seconds without an answer from one process before the run goes on without it
CANCELED = "SELECT canceled_at IS NOT NULL FROM bulk_runs WHERE id = $1"


@dataclass
class _Answer:
    status: str  # done, refused, skipped
    reason: str | None = None


class BulkActivities:
    """Hold the worker's pool and Temporal client."""

    def __init__(self, pool: asyncpg.Pool, client: Client) -> None:
        self._pool, self._client = pool, client

    @activity.defn(name="select_bulk")
    async def select_bulk(self, run: BulkSelect) -> int:
        async with self._pool.acquire() as conn:
            return await select(conn, run)

    @activity.defn(name="send_bulk_page")
    async def send_bulk_page(self, page: BulkPage) -> BulkCounts:
        """Send the command to the next `page.size` opportunities still pending, `page.in_flight` at
        once, recording each answer as it comes; the run's counts after. Sent again (a retry after
        a worker was lost), a command gets its first answer back."""
        async with self._pool.acquire() as conn:
            payload = json.loads(
                await conn.fetchval("SELECT payload FROM bulk_runs WHERE id = $1", page.bulk_id)
            )
            pending = [
                r["opportunity_id"]
                for r in await conn.fetch(
                    "SELECT opportunity_id FROM bulk_items WHERE bulk_id = $1 AND status = 'pending'"
                    " ORDER BY opportunity_id LIMIT $2",
                    page.bulk_id,
                    page.size,
                )
            ]
        gate = asyncio.Semaphore(page.in_flight)
        sent, canceled = 0, False

        async def one(opportunity_id: str) -> None:
            nonlocal sent, canceled
            async with gate:
                async with self._pool.acquire() as conn:
                    if await conn.fetchval(CANCELED, page.bulk_id):
                        canceled = True  # `bulk cancel`: the run ends with this page
                        return
                answer = await self._send(page, opportunity_id, payload)
                async with self._pool.acquire() as conn:
                    await _record(conn, page.bulk_id, opportunity_id, answer.status, answer.reason)
                sent += 1
                activity.heartbeat(sent)

        async with asyncio.TaskGroup() as sending:  # one fails: the others stop, the page is retried
            for opportunity_id in pending:
                sending.create_task(one(opportunity_id))
        async with self._pool.acquire() as conn:
            found = await counts(conn, page.bulk_id)
        return found.model_copy(update={"canceled": canceled})

    async def _send(self, page: BulkPage, opportunity_id: str, payload: dict[str, Any]) -> _Answer:
        request_id = c.bulk_request_id(page.bulk_id, opportunity_id)
        handle = self._client.get_workflow_handle(c.workflow_id(opportunity_id))
        body = {**payload, "request_id": request_id}
        pause, began = 0.2, time.monotonic()
        while True:
            activity.heartbeat()  # waiting on one process is not a lost page
            if time.monotonic() - began > GIVE_UP:
                return _Answer(
                    "skipped",
                    f"no answer in {GIVE_UP:.0f} s (is its process stuck? `corpsale check`); it may still"
                    f" be applied, once, under request id {request_id}",
                )
            try:
                await handle.execute_update(page.update, body, id=request_id)
                return _Answer("done")
            except WorkflowUpdateFailedError as err:
                cause = err.cause
                if not (isinstance(cause, ApplicationError) and cause.type in c.NOT_NOW):
                    return _Answer("refused", getattr(cause, "message", None) or str(err))
            except WorkflowUpdateRPCTimeoutOrCancelledError:
                pass  # no answer yet: the same update id again
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:  # ended (closed), or never started
                    return _Answer("skipped", f"its process is not running ({err.message})")
                if "Workflow Task in failed state" not in err.message:
                    raise  # Temporal away: the page is retried, each command applied once
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    def all(self) -> list[Any]:
        return [self.select_bulk, self.send_bulk_page]
