"""The process's patches (`workflow.patched`): each names a change of behaviour that runs started
before it do not have, so that their histories replay as they ran. The ids are in histories
for good: never rename one. docs/versioning.md: how a patch is added, watched and retired.

A run asks for its patches in its first workflow task, before its first local activity. A patch
first asked for later, in code that runs after a local activity, can be answered differently on
replay: under load the SDK (temporalio 1.35) can hand a local activity's result to the workflow
only after it has completed the workflow task that recorded it, so the code after it runs in the
next workflow task when live and in the earlier one on replay, where that patch's marker is not
yet known."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from temporalio import workflow

# Retired (docs/versioning.md, the compatibility floor): every run this release serves has them,
# so their old branches are gone; `deprecate_patch` keeps the runs that recorded them replaying.
# In the order a run of the floor asked for them, which is the order their markers are in.
RETIRED = (
    "runs-hand-over-with-tasks-open",  # tasks outlive runs; a run hands over at any quiet point
    "command-permissions",  # who may do what (R24) is checked
    "patches-up-front",  # patches are asked for in the run's first workflow task
    "deadline-timers-run-out",  # a deadline's timer is never canceled (workflows/stale.py)
    "refusals-are-events",  # a refused command is a business event as well
    "writes-journaled",  # writes are journaled: only what the run decided leaves PostgreSQL
    "permission-checked-in-write",  # a task completion's permission is checked in its write
)
# Retired patches that up-front runs never asked for (they had them all): no marker to keep.
# "stale-deal", "stages-refreshed-on-unknown", "close-reason-lookup", "task-owner-shown".

# A completion that finishes its stage writes the next stage's entry in its own write: one local
# activity and one journal entry, not two (the old branch: the completion, then the entry).
ENTRY_IN_COMPLETION = "stage-entered-with-completion"

# Every patch with both branches, oldest first: the oldest is the compatibility floor. A change of
# behaviour adds its patch here (docs/versioning.md).
ALL: tuple[str, ...] = (ENTRY_IN_COMPLETION,)


def old_branches(has: Mapping[str, bool], patches: Sequence[str] = ALL) -> list[str]:
    """The patches whose old branch a run takes, from what it has (its `patches` query; a run
    that has not said, every one)."""
    return [patch for patch in patches if not has.get(patch, False)]


class Patches:
    """Which patches a run has; `decided`, what it has answered so far, for the `patches` query
    (`corpsale check` counts the open runs that take a patch's old branch)."""

    def __init__(self) -> None:
        self.decided: dict[str, bool] = {}

    def ask(self, patch: str) -> bool:
        """Whether the run has `patch` (`workflow.patched`), noted in `decided`."""
        self.decided[patch] = answer = workflow.patched(patch)
        return answer

    def decide(self) -> None:
        """In the run's first workflow task, before its first local activity."""
        for retired in RETIRED:
            workflow.deprecate_patch(retired)
        for patch in ALL:
            self.ask(patch)

    def has(self, patch: str) -> bool:
        """What the run decided for `patch` (`decide` asked for every one)."""
        return self.decided.get(patch, False)
