"""When a run hands over to its next (R21): the bounds that keep a run far from Temporal's own
limits (history size and length, 2,000 updates), and what the next run starts from."""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.state import ProcessInput, SaleState

# A run continues as new before Temporal's limits are near: after this many history events or
# accepted updates (the server refuses updates after 2,000 in a run), or when the server suggests
# it. Past the margin (a flood of commands that leaves no quiet point) commands wait for the
# next run: signals are carried to it, updates are refused with HandingOver, which the product's
# clients send again on their own.
RUN_EVENTS = 2_500
RUN_UPDATES = 1_000
FLOOD_UPDATES_MARGIN = 500


class Handover:
    """The bounds of one run, as its start sets them (tests set smaller ones)."""

    def __init__(self, start: ProcessInput | None, lock: asyncio.Lock) -> None:
        self._start, self._lock = start, lock
        self.updates = 0  # updates this run accepted

    @property
    def events(self) -> int:
        return (self._start and self._start.continue_as_new_after_events) or RUN_EVENTS

    @property
    def max_updates(self) -> int:
        return (self._start and self._start.continue_as_new_after_updates) or RUN_UPDATES

    def quiet(self) -> bool:
        """No command is being applied and every handler has finished."""
        return workflow.all_handlers_finished() and not self._lock.locked()

    def due(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.events
            or self.updates >= self.max_updates
        )

    def flooded(self) -> bool:
        """So far past the bounds that commands must wait for the next run."""
        return (
            workflow.info().get_current_history_length() >= 2 * self.events
            or self.updates >= self.max_updates + FLOOD_UPDATES_MARGIN
        )

    async def when_due(self, state: SaleState) -> None:
        """R21: once a bound is reached, continue as new at the first quiet point (no command
        being applied, every handler finished), with whatever tasks are open: their workflows
        outlive this run. Returns when the process closes."""
        while not state.closed:
            await workflow.wait_condition(lambda: state.closed or (self.due() and self.quiet()))
            if state.closed:
                return
            if self.quiet() and not state.closed:
                workflow.continue_as_new(self.next_input(state.for_next_run()))

    def next_input(self, state: SaleState) -> ProcessInput:
        start = self._start
        assert start is not None
        return ProcessInput(
            opportunity_id=start.opportunity_id,
            actor=start.actor,
            continue_as_new_after_events=start.continue_as_new_after_events,
            continue_as_new_after_updates=start.continue_as_new_after_updates,
            resume=state.model_copy(update={"run_no": state.run_no + 1}),
        )
