"""R19: changing the owner moves the open tasks and every later task and notification to the
new owner, and tells both owners."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowUpdateFailedError

from starter.client import start_process
from tests.helpers import ADMIN, Sale, eventually, journal_settled
from workflows import contract as c
from workflows.search_attributes import OPPORTUNITY_ID_ATTR, OWNER_ATTR, TASK_OWNER_ATTR


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


async def test_a_reassigned_tasks_workflow_shows_its_new_owner_to_ops(sale: Sale) -> None:
    """What the Web UI shows of a task names its current owner, and ops find one person's tasks."""
    _, opp = await sale.started()
    task = sale.client.get_workflow_handle(c.task_workflow_id(f"{opp}:v1:contact-assess"))

    async def shown() -> tuple[Any, str]:
        owner = (await task.describe()).typed_search_attributes.get(TASK_OWNER_ATTR)
        metadata = await task.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        return owner, metadata.current_details

    await journal_settled(sale, opp)
    owner, details = await shown()
    assert owner == "alice" and details.startswith("alice, due ")
    await sale.update(opp, c.UPDATE_REASSIGN, {"owner": "bob", "actor": "alice"})
    owner, details = await eventually(shown, lambda seen: seen[0] == "bob")
    assert details.startswith("bob, due ")
    description = await task.describe()
    assert (await description.static_summary()) == (
        "Contact the client, assess the needs, coordinate the date and time of the presentation"
    )  # the title alone: the owner is in the details, which follow

    query = "WorkflowType = 'SaleTask' AND TaskOwner = 'bob' AND ExecutionStatus = 'Running'"
    bobs = [w.id async for w in sale.client.list_workflows(query)]
    assert {c.task_workflow_id(f"{opp}:v1:{k}") for k in ("contact-assess", "prepare-presentation")} <= set(
        bobs
    )


async def test_ops_find_an_opportunity_and_its_tasks_by_its_id_and_a_task_links_to_its_deal(
    sale: Sale,
) -> None:
    """`OpportunityId` is on the process and on each of its task workflows, as started; a task's
    details in the Web UI link to its opportunity's run."""
    opp = sale.new_id()
    await start_process(sale.client, c.StartProcess(opportunity_id=opp, actor="alice", new=c.NewOpportunity(
        title="Depot fleet", customer="Initech", owner="alice")), task_queue=sale.task_queue)  # fmt: skip
    await sale.wait_stage(opp, "Qualification")
    await journal_settled(sale, opp)
    task = sale.client.get_workflow_handle(c.task_workflow_id(f"{opp}:v1:contact-assess"))
    described = await task.describe()
    assert described.typed_search_attributes.get(OPPORTUNITY_ID_ATTR) == opp
    assert (await described.static_details()) == (
        f"Task of opportunity [{opp}](/namespaces/{sale.client.namespace}/workflows/{c.workflow_id(opp)})"
    )
    process = await sale.handle(opp).describe()
    assert process.typed_search_attributes.get(OPPORTUNITY_ID_ATTR) == opp

    async def runs() -> set[str]:
        return {w.id async for w in sale.client.list_workflows(f"OpportunityId = '{opp}'")}

    found = await eventually(runs, lambda ids: len(ids) >= 3)
    assert found == {
        c.workflow_id(opp),
        c.task_workflow_id(f"{opp}:v1:contact-assess"),
        c.task_workflow_id(f"{opp}:v1:prepare-presentation"),
    }
