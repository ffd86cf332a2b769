"""R9 and R13: closing. Won takes income and hours and creates an order draft and the follow-up
tasks of the definition; lost-type stages take a reason from the close-reason lookup and
optionally the competitor; both notify the owner; the process ends."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError

from tests.helpers import Sale, eventually, journal_settled
from workflows import contract as c


async def _in_contracting(sale: Sale) -> str:
    _, opp = await sale.started()
    await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"expected_amount": "48000"})
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Contracting", "actor": "alice"})
    return opp


async def test_closed_won_creates_the_order_draft_and_the_follow_up_tasks(sale: Sale) -> None:
    _, opp = await sale.started()
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Contracting", "actor": "alice"})
    won = {"stage": "Closed won", "actor": "alice", "actual_income": "51000.50", "hours_spent": "35"}
    state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, won)
    assert state.closed and state.open_tasks == []
    await sale.handle(opp).result()

    row = await sale.opportunity(opp)
    assert (row["actual_income"], row["hours_spent"]) == (Decimal("51000.50"), Decimal("35"))
    order = await sale.pool.fetchrow("SELECT * FROM orders WHERE opportunity_id = $1", opp)
    assert (order["status"], order["amount"], order["customer"]) == ("draft", Decimal("51000.50"), "Acme Ltd")
    follow_up = [t for t in await sale.tasks(opp) if t["kind"] == "follow-up"]
    assert [(t["title"], t["status"], t["owner"], t["stage"]) for t in follow_up] == [
        ("Check the opportunity data", "open", "alice", "Closed won"),
        ("Schedule the kick-off with the customer", "open", "alice", "Closed won"),
    ]
    assert [t["due_at"] - t["start_at"] for t in follow_up] == [timedelta(days=2), timedelta(days=5)]
    notes = await sale.notifications(opp)
    assert {n["task_id"] for n in notes if n["kind"] == "task_assigned"} >= {t["id"] for t in follow_up}
    assert [n["recipient"] for n in notes if n["kind"] == "closed_won"] == ["alice"]
    shown = await sale.cli("show", opp)
    assert f"Order {opp}:order (draft)" in shown.stdout and "[follow-up]" in shown.stdout
    check = await sale.cli("check", opp, "--json")  # follow-ups are open by design
    assert check.code == 0 and json.loads(check.stdout)["violations"] == []


async def test_a_follow_up_task_is_completed_after_the_process_has_ended(sale: Sale) -> None:
    _, opp = await sale.started()
    won = {"stage": "Closed won", "actor": "alice", "actual_income": "1000", "hours_spent": "2"}
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, won)
    await sale.handle(opp).result()
    await journal_settled(sale, opp)
    task = c.follow_up_task_id(opp, "kick-off")
    # Each follow-up task has a workflow of its own, with its reminders, that outlives the process.
    workflow = sale.client.get_workflow_handle(c.task_workflow_id(task))
    assert (await workflow.describe()).status == WorkflowExecutionStatus.RUNNING

    wrong = await sale.cli("complete", opp, task, "--outcome", "maybe")
    assert wrong.code == 1 and "has no outcome 'maybe'; it has: done" in wrong.stderr
    missing = await sale.cli("complete", opp, c.follow_up_task_id(opp, "nothing"))
    assert missing.code == 1 and "has no follow-up task" in missing.stderr
    done = await sale.cli("complete", opp, task, "--comment", "kick-off on Monday", "--actor", "bob")
    assert done.code == 0 and done.stdout.strip() == f"{task}: completed (done)", done.stderr
    again = await sale.cli("complete", opp, task)  # a retried command changes nothing
    assert again.code == 0 and again.stdout.strip() == f"{task}: completed (done) already"

    rows = {t["id"]: t for t in await sale.tasks(opp)}
    assert (rows[task]["status"], rows[task]["completed_by"], rows[task]["comment"]) == (
        "completed",
        "bob",
        "kick-off on Monday",
    )
    assert rows[c.follow_up_task_id(opp, "check-data")]["status"] == "open"
    assert (await workflow.result())["outcome"] == "done"  # ended with its task
    still = sale.client.get_workflow_handle(c.task_workflow_id(c.follow_up_task_id(opp, "check-data")))
    assert (await still.describe()).status == WorkflowExecutionStatus.RUNNING


async def test_won_by_completing_every_task_orders_the_expected_amount(sale: Sale) -> None:
    opp = await _in_contracting(sale)
    while not (await sale.state(opp)).closed:
        await sale.complete_stage(opp)
    order = await sale.pool.fetchrow("SELECT amount FROM orders WHERE opportunity_id = $1", opp)
    assert order["amount"] == Decimal("48000")


async def test_closing_as_lost_takes_a_reason_from_the_lookup(sale: Sale) -> None:
    opp = await _in_contracting(sale)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Closed lost", "actor": "alice"})
    assert "takes a reason from the close-reason lookup" in str(refused.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await sale.update(
            opp, c.UPDATE_CHANGE_STAGE, {"stage": "Closed lost", "actor": "alice", "reason": "Bad vibes"}
        )
    assert "not 'Bad vibes': one of Price too high, Lost to a competitor" in str(refused.value.cause)
    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Closed lost", "actor": "alice", "reason": "?"})
    state = await eventually(lambda: sale.state(opp), lambda s: bool(s.rejected))
    assert state.stage == "Contracting" and "close-reason lookup" in state.rejected[-1].reason
    assert {t["status"] for t in await sale.tasks(opp) if t["stage"] == "Contracting"} == {"open"}

    result = await sale.cli(
        "move", opp, "Closed lost", "--reason", "Lost to a competitor", "--competitor", "Globex"
    )
    assert result.code == 0, result.stderr
    row = await sale.opportunity(opp)
    assert (row["stage"], row["close_reason"], row["competitor"]) == (
        "Closed lost",
        "Lost to a competitor",
        "Globex",
    )
    assert [n["recipient"] for n in await sale.notifications(opp) if n["kind"] == "closed_lost"] == ["alice"]
    assert await sale.pool.fetchval("SELECT count(*) FROM orders WHERE opportunity_id = $1", opp) == 0
    assert not [t for t in await sale.tasks(opp) if t["kind"] == "follow-up"]


async def test_a_rejected_proposal_closes_with_the_definitions_reason(sale: Sale) -> None:
    _, opp = await sale.started()
    state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "alice"})
    approval = next(t for t in state.open_tasks if t.task_id.endswith("proposal-approval"))
    state = await sale.complete(opp, approval.task_id, outcome="rejected")
    assert state.closed and state.stage == "Closed lost"
    assert (await sale.opportunity(opp))["close_reason"] == "Proposal rejected"


async def test_the_close_reasons_are_listed(sale: Sale) -> None:
    result = await sale.cli("close-reasons", "--json")
    reasons = json.loads(result.stdout)
    assert result.code == 0 and "Price too high" in reasons and "Proposal rejected" in reasons
