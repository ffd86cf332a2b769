"""The journal of a process's writes (SQL): PostgreSQL holds only what the run decided (R28).

A process writes through local activities, which commit before the workflow task that ran them
reaches the run's history. If that task is lost (a worker killed, a task timed out, the server
aborting it), the next attempt may take the same commands in another order, or with others, and
decide otherwise. So every write of a process carries a fence (workflows/steps.py `Fence`): its
number in the opportunity's journal, the chain of the writes before it, and when in the run it
was decided (the run's number and its history length then). A write

- that finds its own entry (same number, same chain) is a retry: it changes nothing more;
- that finds entries from its number on, of an attempt decided no later than itself, undoes them
  (journal_undo_from: every row back as it was, their drafts and operations dropped): they are
  what a lost attempt wrote;
- that finds an entry decided later than itself is what is left of a lost attempt: refused.

Nothing leaves PostgreSQL before it is confirmed: events are drafts, task workflow operations
wait. An entry is confirmed once its decision is known to be in the run's history: a write tells
which entries were settled before its workflow task began (`durable`), and the worker's journal
relay asks an idle run which writes it settled (`resolve`). Confirmed, an entry's events reach the
feed, numbered on without gaps, and its operations are carried out.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel

from activities.data import drafts, events
from activities.data.task_ops import json_args
from workflows.steps import Fence, JournalStart, JournalView, RequestMark

log = logging.getLogger("corpsale.journal")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Superseded(Exception):
    """A write of an attempt that a later attempt has replaced: its workflow task is lost."""


_BEFORE_ALL = datetime.min.replace(tzinfo=UTC)


def _epoch(row: asyncpg.Record) -> tuple[int, int, datetime]:
    """When an entry was decided: the run, the history length of its workflow task, and when that
    attempt of the task began (two attempts may see the same length)."""
    return row["run_no"], row["history_length"], row["attempt_at"] or _BEFORE_ALL


async def write(
    conn: asyncpg.Connection,
    opportunity_id: str,
    fence: Fence | None,
    step: str,
    apply: Callable[[], Awaitable[T]],
    *,
    task_queue: str = "",
) -> T | None:
    """One write of a process, in one transaction that holds the opportunity's lock. Without a
    fence (a run from before the journal) it is applied as it comes. With one, as the module says
    (`journal_begin` and `journal_record` in migrations/018 and 019: with BEGIN and COMMIT, four
    round trips besides the change itself, whose events and task operations come with the record);
    None when it was applied already."""
    if fence is None:
        async with events.transaction(conn, opportunity_id):
            return await apply()
    assert fence.number is not None, "an opening is written by `open`"
    request = fence.request
    async with conn.transaction():  # journal_begin takes the opportunity's lock first
        begun = await conn.fetchrow(
            "SELECT * FROM journal_begin($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            opportunity_id,
            fence.process,
            fence.number,
            fence.chain,
            fence.prev_chain,
            fence.run_id,
            fence.run_no,
            fence.history_length,
            fence.attempt_at,
            fence.durable,
            fence.durable_chain,
            request.request_id if request else None,
        )
        assert begun is not None
        for note in begun["notes"]:
            log.error("%s: %s", opportunity_id, note)
        _said_undone(opportunity_id, begun["undone"], fence.number)
        match begun["outcome"]:
            case "written":
                return None
            case "superseded":
                raise Superseded(begun["detail"])
            case "applied":
                raise AlreadyApplied(begun["detail"])
        with drafts.gathering(conn) as drafted:
            result = await apply()
        await _record(
            conn,
            opportunity_id,
            fence,
            step,
            task_queue,
            drafted,
            request=request,
            headless=begun["headless"],
        )
        return result


class AlreadyApplied(Exception):
    """The request of the command under way was applied before: the command applies nothing."""

    def __init__(self, fingerprint: str) -> None:
        super().__init__(fingerprint)
        self.fingerprint = fingerprint


async def open_process(
    conn: asyncpg.Connection,
    opportunity_id: str,
    fence: Fence,
    apply: Callable[[], Awaitable[M]],
    read: Callable[[Any], M],
    *,
    task_queue: str = "",
) -> tuple[M, JournalStart]:
    """A process's first write (its opening), which the journal numbers: after the last write of
    the opportunity's earlier processes, whose entries it takes as they are (a process starts only
    once the one before has ended). Run again (a retry, or its workflow task's result handed over
    late and a later task lost) it answers what it read then, read back with `read`; a different
    opening by a later attempt undoes what the attempts before it wrote, and is applied."""
    async with events.transaction(conn, opportunity_id):
        head = await _head(conn, opportunity_id)
        if head is not None and head["process"] == fence.process:
            first = head["process_start"]
            start = JournalStart(number=first, chain=fence.chain, run_no=head["start_run_no"])
            entry = await conn.fetchrow(
                "SELECT chain, result FROM journal WHERE opportunity_id = $1 AND number = $2",
                opportunity_id,
                first,
            )
            opening = (head["start_run_no"], fence.history_length, fence.attempt_at or _BEFORE_ALL)
            if entry is not None and entry["chain"] == fence.chain and entry["result"] is not None:
                await _adopt(conn, opportunity_id, first, fence.run_id, opening)
                return read(json_args(entry["result"])), start  # run again: what it read then
            if await _later_than(conn, opportunity_id, first, opening):
                raise Superseded(f"{opportunity_id}: the opening was decided before the writes there")
            await undo_from(conn, opportunity_id, first)
        else:
            if head is not None:  # an earlier process's: what is left of it stands
                await _confirm(conn, opportunity_id, head["number"], head["chain"])
            start = JournalStart(
                number=(head["number"] if head else 0) + 1,
                chain=fence.chain,
                run_no=(head["run_no"] if head else 0) + 1,
            )
        placed = fence.model_copy(update={"number": start.number, "run_no": start.run_no})
        await _capture(conn, opportunity_id, start.number)
        with drafts.gathering(conn) as drafted:
            result = await apply()
        await _record(conn, opportunity_id, placed, "open", task_queue, drafted, start=start)
        await conn.execute(
            "UPDATE journal SET result = $3::jsonb WHERE opportunity_id = $1 AND number = $2",
            opportunity_id,
            start.number,
            result.model_dump_json(),
        )
        return result, start


async def _head(conn: asyncpg.Connection, opportunity_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM projections WHERE opportunity_id = $1", opportunity_id
    )
    return row


async def _later_than(
    conn: asyncpg.Connection, opportunity_id: str, number: int, epoch: tuple[Any, ...]
) -> bool:
    """Whether an entry from `number` on was decided after `epoch`: then the write is what is left
    of a lost attempt. (A write decided in a workflow task that is in history, however late it
    runs, finds its own entry there first: a later attempt replays that decision alike.)"""
    rows = await conn.fetch(
        "SELECT run_no, history_length, attempt_at FROM journal WHERE opportunity_id = $1 AND number >= $2",
        opportunity_id,
        number,
    )
    return any(_epoch(r) > epoch for r in rows)


async def _adopt(
    conn: asyncpg.Connection, opportunity_id: str, number: int, run_id: str, epoch: tuple[Any, ...]
) -> None:
    """A later attempt of a workflow task has decided the same write again: the entry is now that
    attempt's (the earlier one was lost), so what is judged by when it was decided (the relay's
    undo of what a run does not have, a late step's refusal) judges it by the later attempt."""
    await conn.execute(
        "UPDATE journal SET run_id = $3, run_no = $4, history_length = $5, attempt_at = $6"
        " WHERE opportunity_id = $1 AND number = $2"
        "  AND (run_no, history_length, coalesce(attempt_at, '-infinity'))"
        "   < ($4, $5, coalesce($6, '-infinity'::timestamptz))",
        opportunity_id,
        number,
        run_id,
        epoch[0],
        epoch[1],
        None if epoch[2] == _BEFORE_ALL else epoch[2],
    )


async def _capture(conn: asyncpg.Connection, opportunity_id: str, number: int) -> None:
    """From here on in this transaction, rows changed are kept for undo, events are drafts."""
    await conn.execute(
        "SELECT set_config('corpsale.journal_opportunity', $1, true),"
        " set_config('corpsale.journal_number', $2, true)",
        opportunity_id,
        str(number),
    )


async def _record(
    conn: asyncpg.Connection,
    opportunity_id: str,
    fence: Fence,
    step: str,
    task_queue: str,
    drafted: drafts.Drafts,
    *,
    request: RequestMark | None = None,
    start: JournalStart | None = None,
    headless: bool = False,
) -> None:
    """What the write drafted (its events and task operations), the command's request (kept for
    undo with the rest), the entry of the write, and the opportunity's head moved to it: a new
    process's head at its opening (`start`), else one made only when it has none (`headless`: a run
    that continued one from before the journal)."""
    events, ops = drafted.as_json()
    await conn.execute(
        "SELECT journal_record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
        " $16::jsonb, $17::jsonb)",
        opportunity_id,
        fence.process,
        fence.number,
        fence.chain,
        fence.run_id,
        fence.run_no,
        fence.history_length,
        fence.attempt_at,
        step,
        task_queue,
        request.request_id if request else None,
        request.fingerprint if request else None,
        start.number if start else None,
        start.run_no if start else None,
        headless,
        events,
        ops,
    )


async def undo_from(conn: asyncpg.Connection, opportunity_id: str, number: int) -> int:
    """Undo the opportunity's unconfirmed entries from `number` on (in the caller's transaction,
    which holds its lock); the head goes back to the entry before."""
    undone: int = await conn.fetchval("SELECT journal_undo($1, $2)", opportunity_id, number)
    _said_undone(opportunity_id, undone, number)
    return undone


def _said_undone(opportunity_id: str, undone: int, number: int) -> None:
    if undone:
        log.info("%s: undid %d changes of writes from %d on (a lost workflow task's)",
                 opportunity_id, undone, number)  # fmt: skip


async def _confirm(conn: asyncpg.Connection, opportunity_id: str, upto: int, chain: str) -> int:
    """Entries up to `upto` are decided for good (when the entry there has `chain`): their events
    go to the feed, numbered on, their task operations become ready, their undo is dropped."""
    confirmed: int = await conn.fetchval("SELECT journal_confirm($1, $2, $3)", opportunity_id, upto, chain)
    if confirmed < 0:
        _said_unsettled(opportunity_id, upto, chain)
        return 0
    return confirmed


def _said_unsettled(opportunity_id: str, upto: int, chain: str) -> None:
    log.error("%s: the journal's write %d is not the one the run settled (%s); left unconfirmed",
              opportunity_id, upto, chain)  # fmt: skip


# What the journal relay asks of idle runs ----------------------------------------------------

_LEADER = 7_240_312  # the advisory lock class of the journal relays (with their task queue's hash)


async def lead(conn: asyncpg.Connection, task_queue: str) -> bool:
    """Whether this connection's session now leads the task queue's journal relays (a session
    advisory lock: it is let go when the session ends, and another relay takes over)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", _LEADER, task_queue))


async def step_down(conn: asyncpg.Connection, task_queue: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _LEADER, task_queue)


async def waiting(conn: asyncpg.Connection, task_queue: str, older_than: float, limit: int) -> list[str]:
    """Opportunities of this task queue with a write that has waited over `older_than` seconds."""
    rows = await conn.fetch(
        "SELECT opportunity_id FROM journal WHERE task_queue = $1"
        " GROUP BY opportunity_id HAVING min(written_at) < clock_timestamp() - $2 * interval '1 second'"
        " ORDER BY min(written_at) LIMIT $3",
        task_queue,
        older_than,
        limit,
    )
    return [r["opportunity_id"] for r in rows]


async def resolve(conn: asyncpg.Connection, opportunity_id: str, view: JournalView) -> tuple[int, int]:
    """Bring the journal to what the run says (a query of it, asked before this statement began):
    the writes of its ended commands confirmed; entries after those it holds undone, if they were
    decided before the workflow task it answered from (a lost attempt's, or a step that gave up).
    What a command under way wrote, or has in flight, stays, and so does anything decided in that
    attempt of the task or after: the run may have written it after it answered. One statement,
    its own transaction (`journal_resolve`, migration 027). Returns (confirmed, undone)."""
    row = await conn.fetchrow(
        "SELECT * FROM journal_resolve($1, $2, $3, $4, $5, $6, $7, $8)",
        opportunity_id,
        view.process,
        view.writes,
        view.chain,
        view.holding,
        view.run_no,
        view.history_length,
        view.attempt_at,
    )
    assert row is not None
    if row["mismatch"]:
        _said_unsettled(opportunity_id, view.writes, view.chain)
    _said_undone(opportunity_id, row["undone"], view.holding + 1)
    return row["confirmed"], row["undone"]


async def unconfirmed(conn: asyncpg.Connection, opportunity_ids: list[str] | None) -> list[asyncpg.Record]:
    """Per opportunity with writes not confirmed or task workflow operations not carried out, how
    many, and since when (corpsale check)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT opportunity_id, sum(writes)::int AS writes, sum(ops)::int AS ops, min(since) AS since FROM ("
        " SELECT opportunity_id, 1 AS writes, 0 AS ops, written_at AS since FROM journal"
        " UNION ALL SELECT opportunity_id, 0, 1, NULL FROM task_ops) AS w"
        " WHERE $1::text[] IS NULL OR opportunity_id = ANY($1::text[]) GROUP BY opportunity_id",
        opportunity_ids,
    )
    return rows
