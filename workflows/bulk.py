"""A bulk command as a workflow of its own (`bulk-<id>`): it fixes its selection in its first
step, then sends the command to a page of opportunities at a time (a bounded number in flight),
shows its progress in its details (the Web UI) and its `progress` query, and continues as new
every few pages. After a worker is killed the page it was sending is sent again: every command
carries a request id made of the run's and the opportunity's, so none is applied twice. Canceled,
it stops sending (the page under way is canceled with it)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows import contract as c
    from workflows.operations import BulkCounts, BulkInput, BulkPage, BulkProgress

SELECT_TIMEOUT = timedelta(minutes=5)
PAGE_TIMEOUT = timedelta(minutes=30)
PAGE_HEARTBEAT = timedelta(seconds=10)  # a page's sender sends a heartbeat after each command
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@workflow.defn(name=c.BULK_WORKFLOW_TYPE)
class BulkWorkflow:
    @workflow.init
    def __init__(self, start: BulkInput) -> None:
        self._start = start
        self._state = "selecting" if start.total is None else "sending"
        self._total, self._counts = start.total, start.counts

    @workflow.run
    async def run(self, start: BulkInput) -> BulkProgress:
        try:
            if self._total is None:
                self._total = await workflow.execute_activity(
                    "select_bulk",
                    start.run,
                    result_type=int,
                    start_to_close_timeout=SELECT_TIMEOUT,
                    retry_policy=RETRY,
                )
                self._counts = BulkCounts(pending=self._total)
            self._state = "sending"
            self._show()
            page = BulkPage(
                bulk_id=start.run.bulk_id, update=start.update, size=start.page, in_flight=start.in_flight
            )
            for _ in range(start.pages_per_run):
                if self._counts.pending == 0:
                    self._state = "done"
                    self._show()
                    return self.progress()
                self._counts = await workflow.execute_activity(
                    "send_bulk_page",
                    page,
                    result_type=BulkCounts,
                    start_to_close_timeout=PAGE_TIMEOUT,
                    heartbeat_timeout=PAGE_HEARTBEAT,
                    retry_policy=RETRY,
                )
                if self._counts.canceled:  # in PostgreSQL, and Temporal's cancel did not come
                    self._state = "canceled"
                    self._show()
                    return self.progress()
                self._show()
            workflow.continue_as_new(start.model_copy(update={"total": self._total, "counts": self._counts}))
        except asyncio.CancelledError:
            self._state = "canceled"
            self._show()
            raise

    def _show(self) -> None:
        """The progress in the run's details, as the Web UI shows it."""
        n = self._counts
        sent = n.done + n.refused + n.skipped
        workflow.set_current_details(
            f"{self._state}: {sent} of {self._total if self._total is not None else '?'} sent"
            f" ({n.done} done, {n.refused} refused, {n.skipped} skipped)"
        )

    @workflow.query(name=c.QUERY_BULK_PROGRESS)
    def progress(self) -> BulkProgress:
        run = self._start.run
        return BulkProgress(
            bulk_id=run.bulk_id,
            command=run.command,
            query=run.query,
            state=self._state,
            total=self._total,
            counts=self._counts,
        )
