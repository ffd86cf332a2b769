"""The process's patches (`workflow.patched`): each names a change of behaviour that runs started
before it do not have, so that their histories replay as they ran. The ids are in histories
for good: never rename one.

A run asks for its patches in its first workflow task, before its first local activity. A patch
first asked for later, in code that runs after a local activity, can be answered differently on
replay: under load the SDK (temporalio 1.35) can hand a local activity's result to the workflow
only after it has completed the workflow task that recorded it, so the code after it runs in the
next workflow task when live and in the earlier one on replay, where that patch's marker is not
yet known. A run that has `UP_FRONT` has every patch before it; runs from before `UP_FRONT` ask
for those where they take effect, as they did (their histories say when)."""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import workflow

# Runs hold tasks that outlive them and continue as new at any quiet point (between commands),
# not only at a stage boundary with every task closed.
HANDOVER = "runs-hand-over-with-tasks-open"
# Runs check who may do what (R24) before they apply a command.
PERMISSIONS = "command-permissions"
# Runs have every patch below, decided in their first workflow task.
UP_FRONT = "patches-up-front"
# Runs watch for a deal that has gone quiet (R20).
STALE_DEAL = "stale-deal"
# A move to a stage the run does not know reloads the stages lookup first.
STAGES_REFRESHED = "stages-refreshed-on-unknown"
# Closing as lost takes a reason from the close-reason lookup (R9).
CLOSE_REASON_LOOKUP = "close-reason-lookup"
# Runs tell their task workflows of a new owner (what the Web UI shows).
TASK_OWNER = "task-owner-shown"
# Runs never cancel a deadline's timer: one no longer wanted runs out (workflows/stale.py).
TIMERS_RUN_OUT = "deadline-timers-run-out"
# A refused command is a business event (command.refused) as well as a line in `rejected`.
REFUSALS_ARE_EVENTS = "refusals-are-events"
# Runs journal their writes (activities/data/journal.py): what a lost workflow task wrote is undone,
# events and task workflows hear only of confirmed decisions.
JOURNAL = "writes-journaled"
# A journaled run checks a task completion's permission in the completion's own write (one local
# activity, one transaction), not in a local activity before it.
CHECK_IN_WRITE = "permission-checked-in-write"


# Every patch of the process, oldest first (docs/versioning.md: how one is retired).
ALL = (
    HANDOVER,
    PERMISSIONS,
    UP_FRONT,
    STALE_DEAL,
    STAGES_REFRESHED,
    CLOSE_REASON_LOOKUP,
    TASK_OWNER,
    TIMERS_RUN_OUT,
    REFUSALS_ARE_EVENTS,
    JOURNAL,
    CHECK_IN_WRITE,
)
_BEFORE_UP_FRONT = (STALE_DEAL, STAGES_REFRESHED, CLOSE_REASON_LOOKUP, TASK_OWNER)


def old_branches(has: Mapping[str, bool]) -> list[str]:
    """The patches whose old branch a run takes, from what it has (its `patches` query; a run
    that has not said, every one)."""
    return [patch for patch in ALL if not has.get(patch, False)]


class Patches:
    """Which of the patches before `UP_FRONT` a run has, and which of those after; `decided`, what
    the run has answered so far, for the `patches` query (`corpsale check` counts the open runs
    that take a patch's old branch)."""

    def __init__(self) -> None:
        self.decided: dict[str, bool] = {}
        self._up_front = False
        self.timers_run_out = False  # TIMERS_RUN_OUT
        self.refusals_are_events = False  # REFUSALS_ARE_EVENTS
        self.journal = False  # JOURNAL
        self.check_in_write = False  # CHECK_IN_WRITE

    def ask(self, patch: str) -> bool:
        """Whether the run has `patch` (`workflow.patched`), noted in `decided`."""
        self.decided[patch] = answer = workflow.patched(patch)
        return answer

    def decide(self) -> None:
        """In the run's first workflow task, before its first local activity."""
        self._up_front = self.ask(UP_FRONT)
        if self._up_front:
            self.decided.update(dict.fromkeys(_BEFORE_UP_FRONT, True))
        self.timers_run_out = self.ask(TIMERS_RUN_OUT)
        self.refusals_are_events = self.ask(REFUSALS_ARE_EVENTS)
        self.journal = self.ask(JOURNAL)
        self.check_in_write = self.ask(CHECK_IN_WRITE)

    def has(self, patch: str) -> bool:
        """Every one, in a run that has `UP_FRONT`; in a run from before, as its history says
        where the patch is first asked for."""
        return self._up_front or self.ask(patch)
