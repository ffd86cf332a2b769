"""R15 and the typed client: what ops read in the Web UI (search attributes, the static summary,
the current detail line, the task children's summaries) after each kind of change, driven
through `starter.client.SaleClient` as a Python service would."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle

from starter.client import CommandRefused, SaleClient
from tests.helpers import Sale, eventually, journal_settled
from workflows import contract as c
from workflows import patches
from workflows.contract import (
    AddTask,
    ChangeStage,
    CompleteTask,
    NewOpportunity,
    Reassign,
    StateView,
    UpdateOpportunity,
)
from workflows.search_attributes import AMOUNT_ATTR, OWNER_ATTR, STAGE_ATTR


async def _ops_view(handle: WorkflowHandle[Any, Any]) -> tuple[tuple[Any, Any, Any], str]:
    attrs = (await handle.describe()).typed_search_attributes
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return (attrs.get(STAGE_ATTR), attrs.get(OWNER_ATTR), attrs.get(AMOUNT_ATTR)), metadata.current_details


# The Qualification stage's key fields (the bundled definition), none filled in yet.
TO_FILL = "; to fill in: budget, authority, need, timeframe, decision_maker, sales_tactics, presentation_at"


def _next_due(state: StateView) -> str:
    return f"{min(t.due_at for t in state.open_tasks):%Y-%m-%d %H:%M} UTC"


async def test_the_ops_view_follows_every_kind_of_change(sale: Sale) -> None:
    client = SaleClient(sale.client, sale.task_queue)
    opp = f"opp-{uuid.uuid4().hex[:10]}"
    new = NewOpportunity(title="Fleet renewal", customer="Initech", owner="alice", expected_amount=48000)
    handle = await client.start(opp, actor="crm-sync", new=new)
    with pytest.raises(CommandRefused, match="has a running process already"):
        await client.start(opp, actor="crm-sync")  # R4: one process per opportunity
    state = await eventually(lambda: client.state(opp), lambda s: s.tasks_total == 2)
    description = await handle.describe()
    assert await description.static_summary() == "Fleet renewal — Initech"
    assert await _ops_view(handle) == (
        ("Qualification", "alice", 48000.0),
        f"Qualification: 0 of 2 tasks done, next due {_next_due(state)}{TO_FILL}",
    )

    # A task completed; each open task's workflow shows its title, and whose it is and when due.
    state = await client.complete_task(opp, CompleteTask(task_id=f"{opp}:v1:contact-assess", actor="alice"))
    task = sale.client.get_workflow_handle(f"task-{opp}:v1:prepare-presentation")
    await journal_settled(sale, opp)  # task workflows start once their stage entry is confirmed
    assert await (await task.describe()).static_summary() == "Prepare presentation"
    details = (await task.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)).current_details
    assert details.startswith("alice, due ")
    assert (await _ops_view(handle))[
        1
    ] == f"Qualification: 1 of 2 tasks done, next due {_next_due(state)}{TO_FILL}"

    # The amount changed, the owner changed, the stage changed.
    await client.update_opportunity(opp, UpdateOpportunity(expected_amount=51000, actor="alice"))
    assert (await _ops_view(handle))[0] == ("Qualification", "alice", 51000.0)
    await client.reassign(opp, Reassign(owner="bob", actor="alice"))
    assert (await _ops_view(handle))[0] == ("Qualification", "bob", 51000.0)
    state = await client.change_stage(opp, ChangeStage(stage="Proposal", actor="bob"))
    assert await _ops_view(handle) == (
        ("Proposal", "bob", 51000.0),
        f"Proposal: 0 of 3 tasks done, next due {_next_due(state)}",
    )

    # An ad-hoc task does not count in the stage's progress; a refusal raises; a signal records.
    state = await client.add_task(opp, AddTask(title="Call the CFO", actor="bob"))
    assert state.tasks_total == 3 and any(t.adhoc for t in state.open_tasks)
    with pytest.raises(CommandRefused, match="Unknown stage 'Nowhere'"):
        await client.change_stage(opp, ChangeStage(stage="Nowhere", actor="bob"))
    await client.signal(opp, ChangeStage(stage="Nowhere", actor="bob"))
    state = await eventually(lambda: client.state(opp), lambda s: len(s.rejected) == 1)
    assert "Nowhere" in state.rejected[0].reason

    # Closed: the detail says so, and the run's result is the final state.
    await client.change_stage(opp, ChangeStage(stage="Closed won", actor="bob", actual_income=50000))
    final = await handle.result()
    assert final.closed and final.stage == "Closed won"
    assert await _ops_view(handle) == (("Closed won", "bob", 51000.0), "Closed won (closed)")


async def test_check_counts_the_open_runs_that_take_a_patchs_old_branch(sale: Sale) -> None:
    """docs/versioning.md: a patch is retired once no open run takes its old branch."""
    _, opp = await sale.started()
    has = await sale.handle(opp).query(c.QUERY_PATCHES, result_type=dict[str, bool])
    assert has == dict.fromkeys(patches.ALL, True)  # a new run takes every live patch
    assert patches.old_branches(has) == []
    checked = await sale.cli("check", opp)
    assert checked.code == 0 and "no open run takes the old branch of a patch" in checked.stdout
    report = json.loads((await sale.cli("check", opp, "--json")).stdout)
    assert report["old_branches"] == {} and report["runs"] == 1
    # With two live patches, a run that has only the first takes the second's old branch; a run
    # that does not say takes every old one.
    live = ("first-patch", "second-patch")
    assert patches.old_branches({"first-patch": True}, live) == ["second-patch"]
    assert patches.old_branches({}, live) == list(live)
