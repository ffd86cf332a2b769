"""The process's deadline watchers, each a small class of its own, as samples-python's
`updatable_timer` keeps its timer, so that the process only starts them:

- the stale-deal watcher (R20): a notice to the owner when a stage visit has gone the stage's
  limit (from the definition) without a completed task; one per quiet spell;
- the close-date watcher: a notice to the owner when an open deal's expected close date has
  passed; one per date, and a new timer whenever the date changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.refusals import RETRY_AFTER, Unavailable
    from workflows.state import SaleState
    from workflows.steps import CloseDateNotice, StaleNotice


class Notices:
    """How the watchers write their notices (the process's store, which journals them)."""

    def __init__(
        self,
        stale: Callable[[StaleNotice], Awaitable[None]],
        close_date: Callable[[CloseDateNotice], Awaitable[None]],
    ) -> None:
        self.stale, self.close_date = stale, close_date


class DeadlineWatcher:
    """One durable timer at a time, to the deadline the state gives; at the deadline, under the
    process's lock, a notice. It ends with the run (a continued run starts its own)."""

    what = "deadline"  # what the timer is for, in its summary

    def __init__(self, state: SaleState, lock: asyncio.Lock, notices: Notices) -> None:
        self._state, self._lock, self._notices = state, lock, notices
        self._alarms: set[datetime] = set()  # timers running
        self._alarm_tasks: set[asyncio.Task[None]] = set()
        self._rang = False

    def deadline(self) -> datetime | None:
        raise NotImplementedError

    def moved(self, than: datetime) -> bool:
        """Whether the deadline moved so that the timer to `than` must be set again."""
        return self.deadline() != than

    async def notify(self) -> None:
        raise NotImplementedError

    def _ended(self) -> bool:
        return self._state.closed

    async def run(self) -> None:
        while not self._ended():
            due = self.deadline()
            if due is None:
                await workflow.wait_condition(lambda: self._ended() or self.deadline() is not None)
                continue
            if due > workflow.now():
                await self._wait_for(due)
                continue
            gave_up = False
            async with self._lock:
                due = self.deadline()
                if self._ended() or due is None or due > workflow.now():
                    continue  # moved meanwhile: wait on
                try:
                    await self.notify()
                except Unavailable:  # PostgreSQL away: the notice is tried again later
                    gave_up = True
            if gave_up:
                await workflow.sleep(RETRY_AFTER, summary=f"{self.what}: PostgreSQL did not answer; again")

    async def _wait_for(self, due: datetime) -> None:
        """A timer is never canceled (the retired patch deadline-timers-run-out). One started and canceled
        in the same workflow task leaves no event, and a local activity's late result (see
        workflows/patches.py) can make replay see the two in different workflow tasks and
        disagree. A timer no longer wanted runs out and wakes the watcher for nothing."""
        if not any(alarm <= due for alarm in self._alarms):
            self._alarms.add(due)
            alarm = asyncio.create_task(self._alarm(due))
            self._alarm_tasks.add(alarm)
            alarm.add_done_callback(self._alarm_tasks.discard)
        self._rang = False
        await workflow.wait_condition(lambda: self._ended() or self._rang or self.moved(due))

    async def _alarm(self, due: datetime) -> None:
        await workflow.sleep(due - workflow.now(), summary=f"{self.what} at {due:%Y-%m-%d %H:%M:%S} UTC")
        self._alarms.discard(due)
        self._rang = True


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
        await self._notices.stale(
            StaleNotice(
                opportunity_id=state.opportunity_id,
                visit_no=state.visit,
                number=state.stale_notices + 1,
                stage=state.stage,
                quiet_since=state.quiet_since,
                at=workflow.now(),
            )
        )
        state.stale_notices += 1
        state.stale_noticed = state.quiet_since


class CloseDateWatcher(DeadlineWatcher):
    """The owner hears once that the expected close date has passed: a new date, a new notice."""

    what = "expected close date passed"

    def deadline(self) -> datetime | None:
        return self._state.close_date_deadline()

    async def notify(self) -> None:
        state = self._state
        day = state.data["expected_close_date"]
        await self._notices.close_date(
            CloseDateNotice(opportunity_id=state.opportunity_id, expected_close_date=day, at=workflow.now())
        )
        state.close_date_noticed = day


def start_watchers(state: SaleState, lock: asyncio.Lock, notices: Notices) -> list[asyncio.Task[None]]:
    """The run's deadline watchers, running."""
    watchers: list[DeadlineWatcher] = [
        StaleDealWatcher(state, lock, notices),
        CloseDateWatcher(state, lock, notices),
    ]
    return [asyncio.create_task(w.run()) for w in watchers]
