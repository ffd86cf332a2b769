"""Approval tasks end to end (real Temporal, real PostgreSQL, the real activities): the bundled
definition's "Prepare and approve the contract within the company" opens for the owner's
manager, who gets its notice and whose name its task workflow shows; the owner's completion is
refused and recorded; the manager's completes it. An owner without a manager does it themself."""

from __future__ import annotations

import uuid

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowUpdateFailedError

from tests.helpers import Sale, eventually, journal_settled
from workflows import contract as c


async def test_the_contract_approval_is_the_managers_and_theirs_alone(sale: Sale) -> None:
    suffix = uuid.uuid4().hex[:6]
    alice, mary = f"alice-{suffix}", f"mary-{suffix}"
    assert (await sale.cli("people", "set", alice, "--manager", mary)).code == 0
    _, opp = await sale.started(owner=alice)
    state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": alice})
    tasks = {t.task_id.rsplit(":", 1)[1]: t for t in state.open_tasks}
    approval = tasks["internal-contract"]
    assert (approval.owner, approval.approval) == (mary, True)
    assert {t.owner for key, t in tasks.items() if key != "internal-contract"} == {alice}

    # The approver gets the task's notice and is who its workflow (its timers) is for.
    notices = await sale.notifications(opp, "task_assigned")
    assert {n["recipient"] for n in notices if n["task_id"] == approval.task_id} == {mary}
    rows = {r["id"]: r["owner"] for r in await sale.tasks(opp)}
    assert rows[approval.task_id] == mary
    child = sale.client.get_workflow_handle(c.task_workflow_id(approval.task_id))
    await journal_settled(sale, opp)
    details = (
        await child.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    ).current_details
    assert details.startswith(f"{mary}, due ")

    # The owner may not approve their own contract: refused, and recorded who tried.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await sale.update(opp, c.UPDATE_COMPLETE_TASK, {"task_id": approval.task_id, "actor": alice})
    assert f"{alice} may not complete an approval task of {mary}'s: only its approver may." in str(
        refused.value.cause
    )
    state = await sale.state(opp)
    assert state.rejected[-1].command == c.SIGNAL_COMPLETE_TASK and alice in state.rejected[-1].reason
    state = await sale.update(opp, c.UPDATE_COMPLETE_TASK, {"task_id": approval.task_id, "actor": mary})
    assert approval.task_id not in {t.task_id for t in state.open_tasks}
    done = await eventually(
        lambda: sale.tasks(opp), lambda rows: any(r["status"] == "completed" for r in rows)
    )
    assert [(r["id"], r["completed_by"]) for r in done if r["status"] == "completed"] == [
        (approval.task_id, mary)
    ]


async def test_an_owner_without_a_manager_approves_the_contract_themself(sale: Sale) -> None:
    _, opp = await sale.started(owner=f"solo-{uuid.uuid4().hex[:6]}")
    state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "solo"})
    approval = next(t for t in state.open_tasks if t.task_id.endswith(":internal-contract"))
    assert (approval.owner, approval.approval) == (state.owner, False)
