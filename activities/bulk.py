"""Bulk commands: the activities that fix a bulk run's selection in PostgreSQL when it starts
(its SQL: activities/data/bulk.py) and send its commands, a page at a time, through the same
contract as one at a time.

Exactly once, whatever is retried: each opportunity's command carries the request id
`bulk-<bulk id>-<opportunity id>`, also as its update id, so a page sent again after a worker
was killed gets each process's first answer back instead of applying anything twice (R23);
what became of each opportunity is recorded in `bulk_items` as its answer comes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from tenacity import AsyncRetrying, retry_if_result, stop_after_delay, wait_exponential

from activities.data import bulk
from workflows import contract as c
from workflows.operations import BulkCounts, BulkPage, BulkSelect

GIVE_UP = 300.0  # seconds without an answer from one process before the run goes on without it


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
            return await bulk.select(conn, run)

    @activity.defn(name="send_bulk_page")
    async def send_bulk_page(self, page: BulkPage) -> BulkCounts:
        """Send the command to the next `page.size` opportunities still pending, `page.in_flight` at
        once, recording each answer as it comes; the run's counts after. Sent again (a retry after
        a worker was lost), a command gets its first answer back."""
        async with self._pool.acquire() as conn:
            payload = await bulk.payload(conn, page.bulk_id)
            pending = await bulk.pending(conn, page.bulk_id, page.size)
        gate = asyncio.Semaphore(page.in_flight)
        sent, canceled = 0, False

        async def one(opportunity_id: str) -> None:
            nonlocal sent, canceled
            async with gate:
                async with self._pool.acquire() as conn:
                    if await bulk.canceled(conn, page.bulk_id):
                        canceled = True  # `bulk cancel`: the run ends with this page
                        return
                answer = await self._send(page, opportunity_id, payload)
                async with self._pool.acquire() as conn:
                    await bulk.record(conn, page.bulk_id, opportunity_id, answer.status, answer.reason)
                sent += 1
                activity.heartbeat(sent)

        async with asyncio.TaskGroup() as sending:  # one fails: the others stop, the page is retried
            for opportunity_id in pending:
                sending.create_task(one(opportunity_id))
        async with self._pool.acquire() as conn:
            found = await bulk.counts(conn, page.bulk_id)
        return found.model_copy(update={"canceled": canceled})

    async def _send(self, page: BulkPage, opportunity_id: str, payload: dict[str, Any]) -> _Answer:
        """One opportunity's command, sent again with the same update id while its process answers
        "not now" (0.2 s, 0.4 s ... up to 5 s apart), until GIVE_UP seconds without an answer."""
        request_id = c.bulk_request_id(page.bulk_id, opportunity_id)
        handle = self._client.get_workflow_handle(c.workflow_id(opportunity_id))
        body = {**payload, "request_id": request_id}
        skipped = _Answer(
            "skipped",
            f"no answer in {GIVE_UP:.0f} s (is its process stuck? `corpsale check`); it may still be"
            f" applied, once, under request id {request_id}",
        )
        attempts = AsyncRetrying(
            retry=retry_if_result(lambda answer: answer is None),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            stop=stop_after_delay(GIVE_UP),
            retry_error_callback=lambda _: skipped,
        )
        answer: _Answer = await attempts(self._attempt, handle, page.update, body, request_id)
        return answer

    @staticmethod
    async def _attempt(
        handle: WorkflowHandle[Any, Any], update: str, body: dict[str, Any], request_id: str
    ) -> _Answer | None:
        """The process's answer, or None: not now (the same update id again)."""
        activity.heartbeat()  # waiting on one process is not a lost page
        try:
            await handle.execute_update(update, body, id=request_id)
            return _Answer("done")
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if not (isinstance(cause, ApplicationError) and cause.type in c.NOT_NOW):
                return _Answer("refused", getattr(cause, "message", None) or str(err))
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            pass  # no answer yet
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # ended (closed), or never started
                return _Answer("skipped", f"its process is not running ({err.message})")
            if "Workflow Task in failed state" not in err.message:
                raise  # Temporal away: the page is retried, each command applied once
        return None

    def all(self) -> list[Any]:
        return [self.select_bulk, self.send_bulk_page]
