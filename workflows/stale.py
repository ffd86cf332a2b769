"""The stale-deal watcher (R20): a notice to the owner when a stage visit has gone the stage's
limit (from the definition) without a completed task; one per quiet spell. A small class of its
own, as samples-python's `updatable_timer` keeps its timer, so that the process only starts it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import steps
    from workflows.state import SaleState
    from workflows.steps import StaleNotice


class StaleDealWatcher:
    """One timer at a time: a completion only moves the deadline later, so the timer is let run
    and set again when it fires; only an earlier deadline (a stage with a shorter limit) replaces
    it. It ends with the run (a continued run starts its own from the state)."""

    def __init__(self, state: SaleState, lock: asyncio.Lock) -> None:
        self._state, self._lock = state, lock

    def _ended(self) -> bool:
        return self._state.closed or self._state.pending_entry is not None

    async def run(self) -> None:
        state = self._state
        while not self._ended():
            due = state.stale_deadline()
            if due is None:
                await workflow.wait_condition(lambda: self._ended() or state.stale_deadline() is not None)
                continue
            if due > workflow.now():

                def sooner(than: datetime = due) -> bool:
                    moved = state.stale_deadline()
                    return self._ended() or (moved is not None and moved < than)

                try:
                    await workflow.wait_condition(
                        sooner,
                        timeout=due - workflow.now(),
                        timeout_summary=f"stale-deal check at {due:%Y-%m-%d %H:%M:%S} UTC",
                    )
                    continue  # ended, or an earlier deadline to wait for
                except TimeoutError:
                    pass
            async with self._lock:
                due = state.stale_deadline()
                if self._ended() or due is None or due > workflow.now():
                    continue  # a task was completed meanwhile: wait on
                await self._notify()

    async def _notify(self) -> None:
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
            start_to_close_timeout=timedelta(seconds=30),
            summary=f"stale-deal notice: {state.stage}",
        )
