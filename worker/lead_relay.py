"""The lead relay (R3): turns each lead outbox row into an opportunity and its process.

Exactly once per lead, by construction: the opportunity id comes from the lead id, the workflow
id from the opportunity id, and the start refuses a duplicate id (also of a finished run). A row
is marked relayed only after the start, so a relay killed half-way leaves it for the next pass;
the repeat finds the opportunity and the process there and just marks it. Rows written while no
worker ran are picked up at the next start; two relays skip each other's locked rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.data import leads
from workflows import contract as c
from workflows.search_attributes import OPPORTUNITY_ID_ATTR, PROCESS_ATTR, start_with
from workflows.state import ProcessInput

log = logging.getLogger("corpsale.leads")


# Refusals of a start that come from the lead's data; any other error is the moment's (Temporal
# unavailable, slow, or misconfigured for every lead) and leaves the lead for the next pass.
LEAD_ERRORS = {RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.OUT_OF_RANGE}


def _problem(err: Exception) -> str:
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"]))
        what = f"{where} {first['input']!r}: {first['msg']}"
    else:
        what = str(err)
    return f"{what}; correct the lead, then `corpsale lead retry ID` (or add it again under another id)"


class LeadRelay:
    def __init__(
        self, pool: asyncpg.Pool, client: Client, task_queue: str, *, interval: float = 1.0, batch: int = 20
    ) -> None:
        self._pool, self._client, self._task_queue = pool, client, task_queue
        self._interval, self._batch = interval, batch

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set: a pass every `interval` seconds, and again at once while
        there is more. A failed pass (database or Temporal away) is logged and tried again."""
        while not stop.is_set():
            try:
                while await self.relay_once() == self._batch and not stop.is_set():
                    pass
            except Exception as err:  # the database or Temporal away, a lead it cannot take: go on
                log.warning("lead relay: %r; trying again in %.0f s", err, self._interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def relay_once(self) -> int:
        """One pass over the pending rows; returns how many it took."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await leads.claim_pending(conn, self._batch)
            for row in rows:
                try:
                    start = ProcessInput(
                        opportunity_id=row["opportunity_id"] or leads.opportunity_id_for(row["id"]),
                        actor=f"lead {row['id']}",
                    )
                    # Committed before the start: the process reads the opportunity at once.
                    async with self._pool.acquire() as own:
                        _, process = await leads.opportunity_from_lead(own, row)
                    start = start.model_copy(update={"process": process})  # its rules' pick
                except (ValidationError, asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as err:
                    # The lead's data, not the moment: set it aside, go on with the others.
                    problem = _problem(err)
                    await leads.mark_failed(conn, row["outbox_id"], problem)
                    log.error("lead %s cannot become an opportunity: %s", row["id"], problem)
                    continue
                try:
                    await self._start(start, row)
                except RPCError as err:
                    if err.status not in LEAD_ERRORS:
                        raise  # Temporal away or misconfigured: the whole pass tries again
                    problem = f"Temporal refused the start ({err.status.name}: {err.message})"
                    await leads.mark_failed(conn, row["outbox_id"], problem)
                    log.error("lead %s: %s", row["id"], problem)
                    continue
                await leads.mark_relayed(conn, row["outbox_id"])
        return len(rows)

    async def _start(self, start: ProcessInput, lead: asyncpg.Record) -> None:
        opportunity_id = start.opportunity_id
        attributes = TypedSearchAttributes(
            [
                SearchAttributePair(OPPORTUNITY_ID_ATTR, opportunity_id),
                SearchAttributePair(PROCESS_ATTR, start.process),
            ]
        )
        try:
            await start_with(
                attributes,
                lambda search: self._client.start_workflow(
                    c.WORKFLOW_TYPE,
                    start,
                    id=c.workflow_id(opportunity_id),
                    task_queue=self._task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    static_summary=c.start_summary(opportunity_id, lead["title"], lead["customer"]),
                    search_attributes=search,
                ),
            )
            log.info("lead %s: started the process of opportunity %s", lead["id"], opportunity_id)
        except WorkflowAlreadyStartedError:
            pass  # an earlier pass (or another relay) started it: once is what we want
