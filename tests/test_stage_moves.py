"""R8, R9, R10: moves in any order, final is final, outcomes drive the flow."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError

from tests.helpers import HAPPY_PATH_TITLES, Sale, eventually
from workflows import contract as c
from workflows.search_attributes import OWNER_ATTR, STAGE_ATTR


async def move(sale: Sale, opp: str, stage: str, **extra: object) -> c.StateView:
    """bob moves alice's opportunity; closing it is hers (R24)."""
    actor = "alice" if stage.startswith("Closed") else "bob"
    return await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": stage, "actor": actor, **extra})


async def test_moving_back_from_proposal_cancels_its_tasks_and_opens_qualification_anew(
    sale: Sale,
) -> None:
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    first = await sale.wait_stage(opp, "Qualification")
    await sale.complete_stage(opp)
    await sale.complete_stage(opp)
    proposal = await sale.wait_stage(opp, "Proposal")
    done = proposal.open_tasks[0]
    await sale.complete(opp, done.task_id)

    state = await move(sale, opp, "Qualification", reason="budget changed")

    assert state.stage == "Qualification" and state.visit == 4
    assert [t.title for t in state.open_tasks] == HAPPY_PATH_TITLES["Qualification"]
    assert {t.task_id for t in state.open_tasks}.isdisjoint(t.task_id for t in first.open_tasks)
    rows = {t["id"]: t for t in await sale.tasks(opp)}
    assert rows[done.task_id]["status"] == "completed"
    for task in proposal.open_tasks[1:]:
        assert rows[task.task_id]["status"] == "canceled"
        assert rows[task.task_id]["canceled_at"] is not None
    qualification_rows = [t for t in rows.values() if t["stage"] == "Qualification"]
    assert sorted(t["status"] for t in qualification_rows) == ["completed"] * 2 + ["open"] * 2
    visits = await sale.visits(opp)
    assert [(v["stage"], v["entered_by"]) for v in visits][-1] == ("Qualification", "bob")
    assert visits[-1]["reason"] == "budget changed" and visits[-2]["left_at"] is not None
    row = await sale.opportunity(opp)
    assert (row["stage"], row["probability"]) == ("Qualification", 10)
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(STAGE_ATTR) == "Qualification" and attrs.get(OWNER_ATTR) == "alice"
    # The second visit works like the first: completing it advances again.
    state = await sale.complete_stage(opp)
    assert state.stage == "Presentation"


async def test_a_move_to_the_current_stage_is_refused_unless_it_restarts(sale: Sale) -> None:
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    before = await sale.wait_stage(opp, "Qualification")

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await move(sale, opp, "Qualification")
    assert "already" in str(refused.value.cause) and "restart" in str(refused.value.cause)

    state = await move(sale, opp, "Qualification", restart=True)
    assert state.visit == before.visit + 1 and len(state.open_tasks) == 2
    statuses = sorted(t["status"] for t in await sale.tasks(opp))
    assert statuses == ["canceled", "canceled", "open", "open"]


async def test_closing_as_lost_from_presentation_ends_the_process(sale: Sale) -> None:
    handle, opp = await sale.started()
    await move(sale, opp, "Presentation")

    state = await move(sale, opp, "Closed lost", reason="Price too high", competitor="Globex")

    assert state.closed and state.stage == "Closed lost" and state.open_tasks == []
    assert (await handle.result()).stage == "Closed lost"
    row = await sale.opportunity(opp)
    assert (row["stage"], row["probability"]) == ("Closed lost", 0)
    assert (row["close_reason"], row["competitor"]) == ("Price too high", "Globex")
    assert row["closed_at"] is not None
    tasks = await sale.tasks(opp)
    assert [t["status"] for t in tasks if t["stage"] == "Presentation"] == ["canceled"]
    notes = [n for n in await sale.notifications(opp) if n["kind"] == "closed_lost"]
    assert len(notes) == 1 and notes[0]["recipient"] == "alice"


async def test_closing_as_won_records_income_and_hours(sale: Sale) -> None:
    handle, opp = await sale.started()
    await move(sale, opp, "Contracting")
    await move(sale, opp, "Closed won", actual_income="125000.50", hours_spent=42)
    await handle.result()
    row = await sale.opportunity(opp)
    assert (str(row["actual_income"]), str(row["hours_spent"])) == ("125000.50", "42.00")


async def test_nothing_moves_a_closed_opportunity(sale: Sale) -> None:
    handle, opp = await sale.started()
    await move(sale, opp, "Closed lost", reason="No budget")
    await handle.result()

    # The run has ended; the CLI says why the move cannot happen.
    result = await sale.cli("move", opp, "Qualification", "--actor", "bob")
    assert result.code == 1
    assert result.stderr.strip() == (
        f"corpsale: Opportunity {opp!r} is closed in 'Closed lost'; a final stage is never left"
        " and its process takes no more commands."
    )
    assert (await sale.opportunity(opp))["stage"] == "Closed lost"
    assert len(await sale.visits(opp)) == 2


async def test_changes_requested_restarts_the_proposal_stage(sale: Sale) -> None:
    _, opp = await sale.started()
    proposal = await move(sale, opp, "Proposal")
    approval = next(t for t in proposal.open_tasks if "approval" in t.title)
    assert approval.outcomes == ["approved", "changes requested", "rejected"]

    state = await sale.complete(opp, approval.task_id, outcome="changes requested")

    assert state.stage == "Proposal" and state.visit == proposal.visit + 1
    assert len(state.open_tasks) == 3
    rows = {t["id"]: t for t in await sale.tasks(opp)}
    assert rows[approval.task_id]["outcome"] == "changes requested"
    others = [t.task_id for t in proposal.open_tasks if t.task_id != approval.task_id]
    assert all(rows[i]["status"] == "canceled" for i in others)


async def test_a_rejected_proposal_closes_the_opportunity_as_lost(sale: Sale) -> None:
    handle, opp = await sale.started()
    proposal = await move(sale, opp, "Proposal")
    approval = next(t for t in proposal.open_tasks if "approval" in t.title)

    state = await sale.complete(opp, approval.task_id, outcome="rejected")

    assert state.closed and state.stage == "Closed lost"
    result = await handle.result()  # the process ends with the deal: a final stage is never left
    assert result.stage == "Closed lost" and result.closed
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert (await sale.opportunity(opp))["stage"] == "Closed lost"


async def test_a_declined_contract_closes_the_opportunity_as_lost(sale: Sale) -> None:
    _, opp = await sale.started()
    contracting = await move(sale, opp, "Contracting")
    signing = next(t for t in contracting.open_tasks if t.outcomes == ["signed", "declined"])
    for task in contracting.open_tasks:
        if task is not signing:
            await sale.complete(opp, task.task_id)
    state = await sale.complete(opp, signing.task_id, outcome="declined")
    assert state.stage == "Closed lost"
    await eventually(lambda: sale.opportunity(opp), lambda r: r["closed_at"] is not None)


async def test_a_final_stage_an_operator_adds_is_usable_by_a_running_process(sale: Sale) -> None:
    _, opp = await sale.started()
    await move(sale, opp, "Proposal")
    # An operator adds a stage to the lookup while the process runs (no restart, no deploy).
    await sale.pool.execute(
        "INSERT INTO stages (name, sort_order, is_final, is_successful, probability)"
        " VALUES ('Closed rejected', 7, true, false, 0) ON CONFLICT (name) DO NOTHING"
    )

    state = await move(sale, opp, "Closed rejected", reason="Requirements not met")

    assert state.closed and state.stage == "Closed rejected"
    row = await sale.opportunity(opp)
    assert (row["stage"], row["probability"], row["close_reason"]) == (
        "Closed rejected",
        0,
        "Requirements not met",
    )
    kinds = [n["kind"] for n in await sale.notifications(opp)]
    assert kinds.count("closed_lost") == 1
