"""The process's patches (`workflow.patched`): each names a change of behaviour that runs started
before it do not have, so that their histories replay as they ran. The ids are in histories
for good: never rename one.

A run decides every patch in its first workflow task, before its first local activity
(`decide_up_front`). A patch first asked for later, in code that runs after a local activity,
can be answered differently on replay: under load the SDK (temporalio 1.35) can hand a local
activity's result to the workflow after it has completed the workflow task that recorded it,
so the code after it runs in the next workflow task when live and in the earlier one on
replay, where that patch's marker is not yet known. Runs from before `UP_FRONT` still ask as
they did (their histories say when)."""

from __future__ import annotations

from temporalio import workflow

# Runs hold tasks that outlive them and continue as new at any quiet point (between commands),
# not only at a stage boundary with every task closed.
HANDOVER = "runs-hand-over-with-tasks-open"
# Runs check who may do what (R24) before they apply a command.
PERMISSIONS = "command-permissions"
# Runs decide every patch below in their first workflow task.
UP_FRONT = "patches-up-front"
# Runs watch for a deal that has gone quiet (R20).
STALE_DEAL = "stale-deal"
# A move to a stage the run does not know reloads the stages lookup first.
STAGES_REFRESHED = "stages-refreshed-on-unknown"
# Closing as lost takes a reason from the close-reason lookup (R9).
CLOSE_REASON_LOOKUP = "close-reason-lookup"
# Runs tell their task workflows of a new owner (what the Web UI shows).
TASK_OWNER = "task-owner-shown"

DECIDED_UP_FRONT = (STALE_DEAL, STAGES_REFRESHED, CLOSE_REASON_LOOKUP, TASK_OWNER)


def decide_up_front() -> None:
    """Record the later patches now, in a run that has `UP_FRONT`: the SDK keeps a patch's
    answer for the rest of the run, so the calls where they take effect get it from here."""
    if workflow.patched(UP_FRONT):
        for patch in DECIDED_UP_FRONT:
            workflow.patched(patch)
