"""R18: an operator's own tasks. Stage changes leave them open, they never hold up the move to
the next stage, and closing the opportunity cancels them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError

from tests.helpers import Sale
from workflows import contract as c


async def test_an_adhoc_task_outlives_stage_changes_and_never_blocks_the_next_stage(sale: Sale) -> None:
    _, opp = await sale.started()
    due = datetime.now(UTC) + timedelta(days=3)
    state = await sale.update(
        opp,
        c.UPDATE_ADD_TASK,
        {"title": "Call the CFO", "owner": "bob", "due_at": due.isoformat(), "actor": "alice"},
    )
    adhoc = next(t for t in state.open_tasks if t.adhoc)
    assert (adhoc.task_id, adhoc.title, adhoc.owner, adhoc.due_at) == (
        f"{opp}:adhoc1",
        "Call the CFO",
        "bob",
        due,
    )
    assert (state.tasks_done, state.tasks_total) == (0, 2)  # the stage's progress leaves it out
    row = next(t for t in await sale.tasks(opp) if t["id"] == adhoc.task_id)
    assert (row["task_key"], row["owner"], row["status"], row["stage"]) == (
        "adhoc",
        "bob",
        "open",
        "Qualification",
    )
    assert [n["recipient"] for n in await sale.notifications(opp) if n["task_id"] == adhoc.task_id] == ["bob"]

    state = await sale.complete_stage(opp)  # all the process's tasks: on to Presentation
    assert state.stage == "Presentation"
    state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "alice"})
    assert state.stage == "Proposal" and adhoc.task_id in [t.task_id for t in state.open_tasks]
    rows = {t["id"]: t for t in await sale.tasks(opp)}
    assert rows[adhoc.task_id]["status"] == "open"
    assert rows[f"{opp}:v2:presentation"]["status"] == "canceled"  # the process's own task

    state = await sale.complete(opp, adhoc.task_id)
    assert state.stage == "Proposal" and state.visit == 3  # completing it moves nothing
    row = next(t for t in await sale.tasks(opp) if t["id"] == adhoc.task_id)
    assert (row["status"], row["outcome"]) == ("completed", c.ADHOC_OUTCOME)
    check = await sale.cli("check", opp, "--json")
    assert check.code == 0 and json.loads(check.stdout)["violations"] == []


async def test_closing_cancels_open_adhoc_tasks_and_the_process_ends(sale: Sale) -> None:
    handle, opp = await sale.started()
    await sale.update(opp, c.UPDATE_ADD_TASK, {"title": "Send references", "actor": "alice"})
    await sale.update(
        opp, c.UPDATE_CHANGE_STAGE, {"stage": "Closed lost", "actor": "alice", "reason": "No budget"}
    )
    final = await handle.result()
    assert final.closed and final.open_tasks == []
    assert {t["status"] for t in await sale.tasks(opp)} == {"canceled"}
    late = await sale.cli("add-task", opp, "Too late")
    assert late.code == 1 and "closed in 'Closed lost'" in late.stderr


async def test_bad_adhoc_tasks_are_refused_and_duplicates_applied_once(sale: Sale) -> None:
    _, opp = await sale.started()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for payload, why in [
        ({"title": "Late", "actor": "a", "due_at": past}, "not in the future"),
        ({"title": "", "actor": "a"}, "title"),
        ({"actor": "a"}, "title"),
        ({"title": "x", "actor": "a", "colour": "red"}, "colour"),
    ]:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await sale.update(opp, c.UPDATE_ADD_TASK, payload)
        assert why in str(refused.value.cause)
    payload = {"title": "Book the demo room", "actor": "a", "request_id": "adhoc-1"}
    await sale.signal(opp, c.SIGNAL_ADD_TASK, payload)
    await sale.signal(opp, c.SIGNAL_ADD_TASK, payload)
    await sale.signal(opp, c.SIGNAL_ADD_TASK, {"title": "x", "actor": "a", "due_at": past})
    state = await sale.state(opp)
    assert [t.title for t in state.open_tasks if t.adhoc] == ["Book the demo room"]
    assert len(state.rejected) == 1 and "not in the future" in state.rejected[0].reason
    adhoc = f"{opp}:adhoc1"
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await sale.complete(opp, adhoc, outcome="approved")
    assert "no outcome 'approved'" in str(refused.value.cause)
    assert len([t for t in await sale.tasks(opp) if t["task_key"] == "adhoc"]) == 1


async def test_an_open_adhoc_task_holds_continue_as_new_until_it_is_done(sale: Sale) -> None:
    handle, opp = await sale.started(continue_as_new_after_events=100)
    first_run = (await handle.describe()).run_id
    state = await sale.update(opp, c.UPDATE_ADD_TASK, {"title": "Check credit", "actor": "a"})
    for stage in ["Presentation", "Proposal", "Qualification", "Contracting"] * 3:
        state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": stage, "actor": "a"})
    description = await sale.handle(opp).describe()
    assert description.run_id == first_run and description.history_length > 100  # held
    await sale.complete(opp, f"{opp}:adhoc1")
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "a"})
    state = await sale.wait_stage(opp, "Proposal", visit=state.visit + 1)
    assert (await sale.handle(opp).describe()).run_id != first_run  # handed over at last
    assert [t.task_id for t in state.open_tasks] == [
        f"{opp}:v14:{k}" for k in ("present-proposal", "proposal-approval", "internal-contract")
    ]


async def test_add_task_from_the_cli(sale: Sale) -> None:
    _, opp = await sale.started()
    result = await sale.cli(
        "add-task", opp, "Visit the plant", "--owner", "carol", "--due", "2099-01-02T09:00:00Z"
    )
    assert result.code == 0, result.stderr
    assert "Visit the plant" in result.stdout
    (row,) = [t for t in await sale.tasks(opp) if t["task_key"] == "adhoc"]
    assert (row["owner"], row["due_at"]) == ("carol", datetime(2099, 1, 2, 9, tzinfo=UTC))
    bad = await sale.cli("add-task", opp, "Yesterday", "--due", "2000-01-01T00:00:00Z")
    assert bad.code == 1 and "not in the future" in bad.stderr
