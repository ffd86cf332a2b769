"""The journal relay: what confirms a process's writes when no later write of its run does, and
carries out what confirmed writes ask of the task workflows (activities/journal.py).

A write is confirmed by its run's next write when that comes from a later workflow task. A run
that has gone quiet is asked instead, once its write has waited `confirm_after` seconds: the
`journal` query answers which writes it settled (a query is answered on the state of a completed
workflow task, so what it says is in history) and which one it has in flight. Settled writes are
confirmed; later ones that the run does not have, decided before its last workflow task, were a
lost attempt's, and are undone.

Then each confirmed write's task workflow operations are carried out, each opportunity's in
order: a task workflow is started, told of its completion or new owner, canceled. One relay per
task queue works at a time (a PostgreSQL advisory lock elects it, and another takes over when its
worker stops), so the operations of one opportunity never overtake each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry import propagate
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from activities import journal, task_ops
from activities.task_workflows import TaskWorkflows
from workflows import contract as c
from workflows.state import TaskInput
from workflows.steps import JournalView, TaskStart

log = logging.getLogger("corpsale.journal")

QUERY_TIMEOUT = timedelta(seconds=10)  # a query waits for a workflow task in flight


class JournalRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        client: Client,
        task_queue: str,
        *,
        confirm_after: float = 1.0,
        interval: float = 0.2,
        in_flight: int = 16,
        batch: int = 500,
    ) -> None:
        self._pool, self._client, self._queue = pool, client, task_queue
        self._confirm_after, self._interval, self._batch = confirm_after, interval, batch
        self._slots = asyncio.Semaphore(in_flight)
        self._tasks = TaskWorkflows(client)
        self._wake = asyncio.Event()
        self._not_before: dict[str, tuple[float, float]] = {}  # opportunity -> (when, backoff)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set, while this relay leads its task queue's. The database or
        Temporal away: it says so once, and tries again less often, up to every 5 s."""
        failures = 0
        async with self._listening():
            while not stop.is_set():
                try:
                    async with self._leading() as leading:
                        while leading() and not stop.is_set():
                            await self.pass_once()
                            failures = 0
                            await self._sleep(stop, self._interval)
                except Exception as err:
                    if not failures:
                        log.warning("journal relay: %r; trying again until it works", err)
                    failures += 1
                await self._sleep(stop, min(5.0, self._interval * 2**failures))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        self._wake.clear()
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()

    @contextlib.asynccontextmanager
    async def _leading(self) -> AsyncIterator[Any]:
        """Whether this relay leads (a session advisory lock held on a connection of its own)."""
        conn, led = await self._pool.acquire(), False
        try:
            led = await journal.lead(conn, self._queue)
            yield lambda: led and not conn.is_closed()
        finally:
            with contextlib.suppress(Exception):
                if led:
                    await journal.step_down(conn, self._queue)
            await self._pool.release(conn)

    @contextlib.asynccontextmanager
    async def _listening(self) -> AsyncIterator[None]:
        """Woken when task operations become ready (best effort: passes go on anyway)."""
        try:
            conn = await self._pool.acquire()
        except Exception as err:
            log.warning("journal relay: not woken by ready operations (%r)", err)
            yield
            return

        def woken(*_: object) -> None:
            self._wake.set()

        try:
            await conn.add_listener(task_ops.OPS_CHANNEL, woken)
            yield
        finally:
            with contextlib.suppress(Exception):
                await conn.remove_listener(task_ops.OPS_CHANNEL, woken)
            await self._pool.release(conn)

    async def pass_once(self) -> None:
        await self.confirm_quiet_runs()
        await self.carry_out_operations()

    # Confirming --------------------------------------------------------------------------------

    async def confirm_quiet_runs(self) -> None:
        async with self._pool.acquire() as conn:
            waiting = await journal.waiting(conn, self._queue, self._confirm_after, self._batch)
        now = time.monotonic()
        due = [o for o in waiting if self._not_before.get(o, (0.0, 0.0))[0] <= now]
        await asyncio.gather(*(self._confirm(o) for o in due))

    async def _confirm(self, opportunity_id: str) -> None:
        async with self._slots:
            try:
                view = await self._client.get_workflow_handle(c.workflow_id(opportunity_id)).query(
                    c.QUERY_JOURNAL, result_type=JournalView, rpc_timeout=QUERY_TIMEOUT
                )
                async with self._pool.acquire() as conn:
                    confirmed, undone = await journal.resolve(conn, opportunity_id, view)
            except (RPCError, WorkflowQueryFailedError, TimeoutError, asyncpg.PostgresError, OSError) as err:
                backoff = min(30.0, max(1.0, self._not_before.get(opportunity_id, (0.0, 0.5))[1] * 2))
                self._not_before[opportunity_id] = (time.monotonic() + backoff, backoff)
                log.info(
                    "journal relay: %s not confirmed yet (%s); again in %.0f s", opportunity_id, err, backoff
                )
                return
            self._not_before.pop(opportunity_id, None)
            if undone:
                log.warning(
                    "journal relay: %s: undid %d changes of a lost workflow task's writes",
                    opportunity_id,
                    undone,
                )
            elif not confirmed:  # nothing to do yet (a write in flight): not before a while
                self._not_before[opportunity_id] = (time.monotonic() + self._confirm_after, 0.5)

    # Carrying out --------------------------------------------------------------------------------

    async def carry_out_operations(self) -> None:
        async with self._pool.acquire() as conn:
            ready = await task_ops.ready_ops(conn, self._queue, self._batch)
        per_opportunity: dict[str, list[asyncpg.Record]] = {}
        for op in ready:
            per_opportunity.setdefault(op["opportunity_id"], []).append(op)
        done = await asyncio.gather(*(self._in_order(ops) for ops in per_opportunity.values()))
        finished = [key for keys in done for key in keys]
        if finished:
            async with self._pool.acquire() as conn:
                await task_ops.ops_done(conn, finished)
        if len(ready) >= self._batch:
            self._wake.set()

    async def _in_order(self, ops: list[asyncpg.Record]) -> list[tuple[str, int, int]]:
        """One opportunity's operations, one after the other, up to the first that fails."""
        done: list[tuple[str, int, int]] = []
        async with self._slots:
            for op in ops:
                try:
                    await self._carry_out(op["kind"], op["task_id"], task_ops.json_args(op["args"]))
                except Exception as err:  # Temporal away: the rest waits, in order
                    log.warning(
                        "journal relay: task %s (%s): %r; trying again", op["task_id"], op["kind"], err
                    )
                    break
                done.append((op["opportunity_id"], op["number"], op["ordinal"]))
        return done

    async def _carry_out(self, kind: str, task_id: str, args: dict[str, Any]) -> None:
        """In the trace of the step that asked for it, when that was traced."""
        token = otel_context.attach(propagate.extract(args.pop(task_ops.TRACE, None) or {}))
        try:
            await self._carry_out_traced(kind, task_id, args)
        finally:
            otel_context.detach(token)

    async def _carry_out_traced(self, kind: str, task_id: str, args: dict[str, Any]) -> None:
        if kind == "start":
            task = TaskInput.model_validate(args)
            await self._tasks.start(TaskStart(task=task, summary=task.title), self._queue)
        elif kind == "finish":
            await self._tasks.finish(task_id, args["outcome"])
        elif kind == "cancel":
            await self._tasks.cancel(task_id)
        elif kind == "owner":
            await self._tasks.reassign(task_id, args["owner"])
