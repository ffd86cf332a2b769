"""The process's deadline watchers, each a small class of its own, as samples-python's
`updatable_timer` keeps its timer, so that the process only starts them:

- the stale-deal watcher (R20): a notice to the owner when a stage visit has gone the stage's
  limit (from the definition) without a completed task; one per quiet spell;
- the close-date watcher: a notice to the owner when an open deal's expected close date has
  passed; one per date, and a new timer whenever the date changes.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import steps
    from workflows.state import SaleState
    from workflows.steps import CloseDateNotice, StaleNotice

NOTICE_TIMEOUT = timedelta(seconds=30)


class DeadlineWatcher:
    """One durable timer at a time, to the deadline the state gives; at the deadline, under the
    process's lock, a notice. It ends with the run (a continued run starts its own)."""

    what = "deadline"  # what the timer is for, in its summary

    def __init__(self, state: SaleState, lock: asyncio.Lock) -> None:
        self._state, self._lock = state, lock

    def deadline(self) -> datetime | None:
        raise NotImplementedError

    def moved(self, than: datetime) -> bool:
        """Whether the deadline moved so that the timer to `than` must be set again."""
        return self.deadline() != than

    async def notify(self) -> None:
        raise NotImplementedError

    def _ended(self) -> bool:
        return self._state.closed or self._state.pending_entry is not None

    async def run(self) -> None:
        while not self._ended():
            due = self.deadline()
            if due is None:
                await workflow.wait_condition(lambda: self._ended() or self.deadline() is not None)
                continue
            if due > workflow.now():
                try:
                    await workflow.wait_condition(
                        lambda than=due: self._ended() or self.moved(than),  # type: ignore[misc]
                        timeout=due - workflow.now(),
                        timeout_summary=f"{self.what} at {due:%Y-%m-%d %H:%M:%S} UTC",
                    )
                    continue  # ended, or a deadline to wait for anew
                except TimeoutError:
                    pass
            async with self._lock:
                due = self.deadline()
                if self._ended() or due is None or due > workflow.now():
                    continue  # moved meanwhile: wait on
                await self.notify()


class StaleDealWatcher(DeadlineWatcher):
    """A completion only moves the deadline later, so the timer is let run and set again when
    it fires; only an earlier deadline (a stage with a shorter limit) replaces it."""

    what = "stale-deal check"

    def deadline(self) -> datetime | None:
        return self._state.stale_deadline()

    def moved(self, than: datetime) -> bool:
        moved = self.deadline()
        return moved is not None and moved < than

    async def notify(self) -> None:
        state = self._state
        assert state.stage is not None and state.quiet_since is not None
        state.stale_notices += 1
        state.stale_noticed = state.quiet_since
        await workflow.execute_local_activity(
            steps.notify_stale,
            StaleNotice(
                opportunity_id=state.opportunity_id,
                visit_no=state.visit,
                number=state.stale_notices,
                stage=state.stage,
                quiet_since=state.quiet_since,
                at=workflow.now(),
            ),
            start_to_close_timeout=NOTICE_TIMEOUT,
            summary=f"stale-deal notice: {state.stage}",
        )


class CloseDateWatcher(DeadlineWatcher):
    """The owner hears once that the expected close date has passed: a new date, a new notice."""

    what = "expected close date passed"

    def deadline(self) -> datetime | None:
        return self._state.close_date_deadline()

    async def notify(self) -> None:
        state = self._state
        day = state.data["expected_close_date"]
        state.close_date_noticed = day
        await workflow.execute_local_activity(
            steps.notify_close_date,
            CloseDateNotice(opportunity_id=state.opportunity_id, expected_close_date=day, at=workflow.now()),
            start_to_close_timeout=NOTICE_TIMEOUT,
            summary=f"expected close date {day} passed",
        )
