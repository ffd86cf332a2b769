"""R19: changing the owner moves the open tasks and every later task and notification to the
new owner, and tells both owners."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowUpdateFailedError

from tests.helpers import ADMIN, Sale
from workflows import contract as c
from workflows.opportunity import OWNER_ATTR


async def test_reassigning_moves_open_tasks_and_later_work_and_tells_both_owners(sale: Sale) -> None:
    handle, opp = await sale.started()
    await sale.complete_stage(opp)  # Presentation
    await sale.complete_stage(opp)  # Proposal: three tasks
    done = f"{opp}:v3:present-proposal"
    await sale.complete(opp, done)

    state = await sale.update(
        opp, c.UPDATE_REASSIGN, {"owner": "bob", "actor": ADMIN, "reason": "alice is on leave"}
    )

    assert state.owner == "bob" and {t.owner for t in state.open_tasks} == {"bob"}
    rows = {t["id"]: t for t in await sale.tasks(opp)}
    assert rows[done]["owner"] == "alice"  # finished work keeps who did it
    assert {rows[t.task_id]["owner"] for t in state.open_tasks} == {"bob"}
    assert len(state.open_tasks) == 2
    assert (await sale.opportunity(opp))["owner"] == "bob"
    assert (await handle.describe()).typed_search_attributes.get(OWNER_ATTR) == "bob"
    told = [(n["recipient"], n["kind"]) for n in await sale.notifications(opp) if "reassigned" in n["kind"]]
    assert told == [("alice", "reassigned_away"), ("bob", "reassigned_to_you")]
    note = next(n for n in await sale.notifications(opp) if n["kind"] == "reassigned_to_you")
    assert "2 open tasks" in note["message"] and "alice is on leave" in note["message"]

    state = await sale.complete_stage(opp)  # on to Contracting: its tasks are bob's
    assert state.stage == "Contracting" and {t.owner for t in state.open_tasks} == {"bob"}
    contracting = [n for n in await sale.notifications(opp) if n["task_id"] and ":v4:" in n["task_id"]]
    assert len(contracting) == 3 and {n["recipient"] for n in contracting} == {"bob"}


async def test_a_reassignment_delivered_twice_is_applied_once(sale: Sale) -> None:
    _, opp = await sale.started()
    payload = {"owner": "carol", "actor": ADMIN, "request_id": "reassign-1"}
    await sale.signal(opp, c.SIGNAL_REASSIGN, payload)
    await sale.signal(opp, c.SIGNAL_REASSIGN, payload)
    state = await sale.update(opp, c.UPDATE_REASSIGN, {**payload, "owner": "carol"})  # same id again
    assert state.owner == "carol" and state.rejected == []
    told = [n for n in await sale.notifications(opp) if "reassigned" in n["kind"]]
    assert len(told) == 2


async def test_reassigning_to_the_owner_or_a_closed_opportunity_is_refused(sale: Sale) -> None:
    _, opp = await sale.started()
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await sale.update(opp, c.UPDATE_REASSIGN, {"owner": "alice", "actor": "x"})
    assert "is the owner already" in str(refused.value.cause)
    await sale.signal(opp, c.SIGNAL_REASSIGN, {"owner": "", "actor": "x"})
    state = await sale.state(opp)
    assert state.owner == "alice" and "owner" in state.rejected[-1].reason

    await sale.update(
        opp, c.UPDATE_CHANGE_STAGE, {"stage": "Closed lost", "actor": "alice", "reason": "Other"}
    )
    result = await sale.cli("reassign", opp, "bob")
    assert result.code == 1 and "closed" in result.stderr
    assert (await sale.opportunity(opp))["owner"] == "alice"


async def test_reassign_from_the_cli(sale: Sale) -> None:
    _, opp = await sale.started()
    result = await sale.cli("reassign", opp, "erin-r19", "--reason", "new territory", "--json")
    assert result.code == 0, result.stderr
    assert '"owner": "erin-r19"' in result.stdout
    assert {t["owner"] for t in await sale.tasks(opp)} == {"erin-r19"}
