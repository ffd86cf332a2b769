"""The journal relay: what confirms a process's writes when no later write of its run does, and
carries out what confirmed writes ask of the task workflows (activities/data/journal.py).

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
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry import propagate
from temporalio.client import (
    Client,
    WorkflowContinuedAsNewError,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.common import QueryRejectCondition
from temporalio.service import RPCError

from activities.data import journal, task_ops
from activities.task_workflows import TaskWorkflows
from workflows import contract as c
from workflows.state import TaskInput
from workflows.steps import JournalView, ProcessResult, TaskStart

log = logging.getLogger("corpsale.journal")

QUERY_TIMEOUT = timedelta(seconds=10)  # a query waits for a workflow task in flight
GATHER = 0.02  # seconds the relay waits, once woken, before it looks for more ready operations


class JournalRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        client: Client,
        task_queue: str,
        *,
        confirm_after: float = 1.0,
        interval: float = 0.2,
        in_flight: int = 32,
        asking: int = 8,
        batch: int = 500,
    ) -> None:
        self._pool, self._client, self._queue = pool, client, task_queue
        self._confirm_after, self._interval, self._batch = confirm_after, interval, batch
        self._in_flight = in_flight  # opportunities whose operations are carried out at once
        self._asking = asyncio.Semaphore(asking)  # runs asked at once
        self._tasks = TaskWorkflows(client)
        self._ready = asyncio.Event()  # operations may have become ready, or a slot free
        self._not_before: dict[str, tuple[float, float]] = {}  # opportunity -> (when, backoff): asking
        self._resting: dict[str, tuple[float, float]] = {}  # the same, for operations that failed
        self._carried: list[tuple[str, int, int]] = []  # carried out: deleted at the next look

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set, while this relay leads its task queue's: runs are asked and
        operations carried out side by side, neither waiting for the other. The database or
        Temporal away: it says so once, and tries again less often, up to every 5 s."""
        failures = 0
        async with self._listening():
            while not stop.is_set():
                try:
                    async with self._leading() as leading:
                        if leading():
                            async with asyncio.TaskGroup() as group:
                                group.create_task(self._confirming(stop, leading))
                                group.create_task(self._carrying_out(stop, leading))
                    failures = 0
                except Exception as err:
                    if isinstance(err, ExceptionGroup):
                        err = err.exceptions[0]
                    if not failures:
                        log.warning("journal relay: %r; trying again until it works", err)
                    failures += 1
                await _sleep(stop, None, min(5.0, self._interval * 2**failures))

    @contextlib.asynccontextmanager
    async def _leading(self) -> AsyncIterator[Any]:
        """Whether this relay leads (a session advisory lock held on a connection of its own)."""
        conn, led = await self._pool.acquire(), False
        try:
            led = await journal.lead(conn, self._queue)
            yield lambda: led and not conn.is_closed()
        finally:
            try:
                if led:
                    await journal.step_down(conn, self._queue)
            except Exception:  # the lock stays with the session: the session goes
                conn.terminate()
            await self._pool.release(conn)

    @contextlib.asynccontextmanager
    async def _listening(self) -> AsyncIterator[None]:
        """Woken when task operations become ready (best effort: it looks every `interval` anyway)."""
        try:
            conn = await self._pool.acquire()
        except Exception as err:
            log.warning("journal relay: not woken by ready operations (%r)", err)
            yield
            return

        def woken(*_: object) -> None:
            self._ready.set()

        try:
            await conn.add_listener(task_ops.OPS_CHANNEL, woken)
            yield
        finally:
            try:
                await conn.remove_listener(task_ops.OPS_CHANNEL, woken)
            except Exception:  # still listening: the session goes
                conn.terminate()
            await self._pool.release(conn)

    # Confirming --------------------------------------------------------------------------------

    async def _confirming(self, stop: asyncio.Event, leading: Callable[[], bool]) -> None:
        """Every `interval`, the runs with a write that has waited `confirm_after` are asked
        (but those asked already, and those backing off)."""
        asking: dict[str, asyncio.Task[None]] = {}
        try:
            while leading() and not stop.is_set():
                await self.confirm_quiet_runs(asking)
                await _sleep(stop, None, self._interval)
        finally:
            await _cancel(asking.values())

    async def confirm_quiet_runs(self, asking: dict[str, asyncio.Task[None]]) -> None:
        """Ask the quiet runs, but those being asked (`asking`, the questions under way)."""
        async with self._pool.acquire() as conn:
            waiting = await journal.waiting(conn, self._queue, self._confirm_after, self._batch)
        now = time.monotonic()
        for o in waiting:
            if self._not_before.get(o, (0.0, 0.0))[0] > now:
                continue
            if o not in asking:
                asking[o] = asyncio.create_task(self._confirm(o))
                asking[o].add_done_callback(functools.partial(_forget, asking, o))

    async def _confirm(self, opportunity_id: str) -> None:
        async with self._asking:
            try:
                view = await self.view(opportunity_id)
                async with self._pool.acquire() as conn:
                    confirmed, undone = await journal.resolve(conn, opportunity_id, view)
            except (
                RPCError,
                WorkflowQueryFailedError,
                WorkflowFailureError,
                WorkflowContinuedAsNewError,
                TimeoutError,
                asyncpg.PostgresError,
                OSError,
            ) as err:  # the run or the database not answering now
                log.info("journal relay: %s not confirmed yet (%s); again in %.0f s", opportunity_id, err,
                         _rest(self._not_before, opportunity_id))  # fmt: skip
                return
            except Exception as err:  # unforeseen: said louder, and tried again all the same
                log.warning("journal relay: %s not confirmed: %r; again in %.0f s", opportunity_id, err,
                            _rest(self._not_before, opportunity_id))  # fmt: skip
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

    async def view(self, opportunity_id: str) -> JournalView:
        """What the run says of its writes: asked while it runs; a run that has completed has
        it in its result (asked, it would replay its whole history on a worker to answer)."""
        handle = self._client.get_workflow_handle(c.workflow_id(opportunity_id), result_type=ProcessResult)
        view: JournalView
        try:
            view = await handle.query(
                c.QUERY_JOURNAL,
                result_type=JournalView,
                reject_condition=QueryRejectCondition.NOT_OPEN,
                rpc_timeout=QUERY_TIMEOUT,
            )
            return view
        except WorkflowQueryRejectedError as rejected:
            if rejected.status == WorkflowExecutionStatus.COMPLETED:
                result: ProcessResult = await handle.result(follow_runs=False, rpc_timeout=QUERY_TIMEOUT)
                if result.journal is not None:
                    return result.journal
        # failed, terminated, canceled: a replay of its history answers
        view = await handle.query(c.QUERY_JOURNAL, result_type=JournalView, rpc_timeout=QUERY_TIMEOUT)
        return view

    # Carrying out --------------------------------------------------------------------------------

    async def _carrying_out(self, stop: asyncio.Event, leading: Callable[[], bool]) -> None:
        """Up to `in_flight` opportunities' ready operations at a time, each opportunity's in
        order; one that is done makes room for the next, those that have waited longest first."""
        working: dict[str, asyncio.Task[None]] = {}
        try:
            while leading() and not stop.is_set():
                free = self._in_flight - len(working)
                if free > 0:
                    await self.carry_out_operations(working, free)
                await _sleep(stop, self._ready, self._interval)
                await asyncio.sleep(GATHER)  # those done meanwhile make room together
        finally:
            await _cancel(working.values())
            await self._forget_carried()

    async def _forget_carried(self) -> None:
        """Delete what was carried out and not yet deleted (best effort: carried out again by the
        next relay, each operation is idempotent)."""
        carried, self._carried = self._carried, []
        if carried:
            with contextlib.suppress(Exception):
                async with self._pool.acquire() as conn:
                    await task_ops.ready_ops(conn, self._queue, 0, [], carried)

    async def carry_out_operations(self, working: dict[str, asyncio.Task[None]], opportunities: int) -> None:
        """Start on the ready operations of up to `opportunities` more opportunities, but those
        under way (`working`); those carried out since the last look are deleted with it."""
        now = time.monotonic()
        resting = [o for o, (until, _) in self._resting.items() if until > now]
        carried, self._carried = self._carried, []
        try:
            async with self._pool.acquire() as conn:
                busy = [*working, *resting]
                ready = await task_ops.ready_ops(conn, self._queue, opportunities, busy, carried)
        except BaseException:
            self._carried[:0] = carried  # deleted at a later look
            raise
        per_opportunity: dict[str, list[asyncpg.Record]] = {}
        for op in ready:
            per_opportunity.setdefault(op["opportunity_id"], []).append(op)
        for opportunity_id, ops in per_opportunity.items():
            working[opportunity_id] = asyncio.create_task(self._in_order(ops))
            working[opportunity_id].add_done_callback(functools.partial(self._done, working, opportunity_id))

    def _done(
        self, working: dict[str, asyncio.Task[None]], opportunity_id: str, task: asyncio.Task[None]
    ) -> None:
        _forget(working, opportunity_id, task)
        self._ready.set()  # room for another (and this one may have more ready by now)

    async def _in_order(self, ops: list[asyncpg.Record]) -> None:
        """One opportunity's operations, one after the other, up to the first that fails; those
        carried out are deleted at the relay's next look for ready ones (this opportunity is not
        under way any more then). A task's start followed by its completion is one call."""
        done: list[tuple[str, int, int]] = []
        skip: set[int] = set()
        for i, op in enumerate(ops):
            if i in skip:
                continue
            finish = _completed_next(ops, i) if op["kind"] == "start" else None
            try:
                completed = task_ops.json_args(ops[finish]["args"])["outcome"] if finish is not None else None
                await self._carry_out(op["kind"], op["task_id"], task_ops.json_args(op["args"]), completed)
            except Exception as err:  # Temporal away: the rest waits, in order, a while
                rest = _rest(self._resting, op["opportunity_id"])
                log.warning("journal relay: task %s (%s): %r; trying again in %.0f s",
                            op["task_id"], op["kind"], err, rest)  # fmt: skip
                break
            done.append((op["opportunity_id"], op["number"], op["ordinal"]))
            if finish is not None:
                skip.add(finish)
                done.append((op["opportunity_id"], ops[finish]["number"], ops[finish]["ordinal"]))
        if len(done) == len(ops):
            self._resting.pop(ops[0]["opportunity_id"], None)
        self._carried.extend(done)

    async def _carry_out(self, kind: str, task_id: str, args: dict[str, Any], completed: str | None) -> None:
        """In the trace of the step that asked for it, when that was traced. `completed`: a start
        whose task is completed already, with that outcome."""
        token = otel_context.attach(propagate.extract(args.pop(task_ops.TRACE, None) or {}))
        try:
            await self._carry_out_traced(kind, task_id, args, completed)
        finally:
            otel_context.detach(token)

    async def _carry_out_traced(
        self, kind: str, task_id: str, args: dict[str, Any], completed: str | None
    ) -> None:
        if kind == "start":
            task = TaskInput.model_validate(args)
            await self._tasks.start(
                TaskStart(task=task, summary=task.title), self._queue, completed=completed
            )
        elif kind == "finish":
            await self._tasks.finish(task_id, args["outcome"])
        elif kind == "cancel":
            await self._tasks.cancel(task_id)
        elif kind == "owner":
            await self._tasks.reassign(task_id, args["owner"])
        elif kind == "due":
            await self._tasks.put_off(task_id, args["due_at"])


def _completed_next(ops: list[asyncpg.Record], i: int) -> int | None:
    """Where the task started at `i` is completed, if that is the next operation of its task."""
    for j in range(i + 1, len(ops)):
        if ops[j]["task_id"] == ops[i]["task_id"]:
            return j if ops[j]["kind"] == "finish" else None
    return None


async def _sleep(stop: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> None:
    """Until `seconds` have passed, `stop` is set or `wake` is (which it clears)."""
    events = [stop] if wake is None else [stop, wake]
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    if wake is not None:
        wake.clear()


def _rest(until: dict[str, tuple[float, float]], opportunity_id: str) -> float:
    """Not before a while (doubled each time, 1 to 30 s); returns how long."""
    backoff = min(30.0, max(1.0, until.get(opportunity_id, (0.0, 0.5))[1] * 2))
    until[opportunity_id] = (time.monotonic() + backoff, backoff)
    return backoff


def _forget(tasks: dict[str, asyncio.Task[None]], key: str, task: asyncio.Task[None]) -> None:
    """A question or an opportunity's operations done: what failed unforeseen is said (it is
    tried again on a later round: the write stays unconfirmed, the operations ready)."""
    tasks.pop(key, None)
    if not task.cancelled() and task.exception() is not None:
        log.warning("journal relay: %s: %r; trying again", key, task.exception())


async def _cancel(tasks: Any) -> None:
    pending = list(tasks)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
