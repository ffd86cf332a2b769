"""R18: an operator's own tasks. Stage changes leave them open, they never hold up the move to
the next stage, and closing the opportunity cancels them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError

from tests.helpers import Sale, journal_settled
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


async def test_an_open_adhoc_task_does_not_hold_continue_as_new_and_its_workflow_carries_over(
    sale: Sale,
) -> None:
    """R21: runs hand over with tasks open; the task's workflow (its timers) lives on untouched."""
    handle, opp = await sale.started(continue_as_new_after_events=100)
    first_run = (await handle.describe()).run_id
    await sale.update(opp, c.UPDATE_ADD_TASK, {"title": "Check credit", "actor": "a"})
    adhoc = f"{opp}:adhoc1"
    await journal_settled(sale, opp)  # its workflow starts once the task's write is confirmed
    task_run = (await sale.client.get_workflow_handle(c.task_workflow_id(adhoc)).describe()).run_id
    moves = ["Presentation", "Proposal", "Qualification", "Contracting"] * 8
    for stage in moves:
        await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": stage, "actor": "a"})

    runs = [r async for r in sale.client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) >= 3 and (await handle.describe()).run_id != first_run
    for run in runs:  # every run stayed near its bound (100 events), with the task open
        history = await sale.client.get_workflow_handle(handle.id, run_id=run.run_id).fetch_history()
        assert len(history.events) < 160, (run.run_id, len(history.events))
    task = await sale.client.get_workflow_handle(c.task_workflow_id(adhoc)).describe()
    assert (task.run_id, task.status) == (task_run, WorkflowExecutionStatus.RUNNING)  # never restarted
    state = await sale.state(opp)
    assert [t.task_id for t in state.open_tasks if t.adhoc] == [adhoc]

    state = await sale.complete(opp, adhoc)
    assert not [t for t in state.open_tasks if t.adhoc]
    result = await sale.client.get_workflow_handle(c.task_workflow_id(adhoc)).result()
    assert result["outcome"] == "done"
    (row,) = [t for t in await sale.tasks(opp) if t["id"] == adhoc]
    assert (row["status"], row["outcome"]) == ("completed", "done")
    assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", *moves]
    check = await sale.cli("check", opp)
    assert check.code == 0, check.stdout + check.stderr


async def test_add_task_from_the_cli(sale: Sale) -> None:
    _, opp = await sale.started()
    due = (datetime.now(UTC) + timedelta(days=30)).replace(hour=9, minute=0, second=0, microsecond=0)
    result = await sale.cli("add-task", opp, "Visit the plant", "--owner", "carol", "--due", due.isoformat())
    assert result.code == 0, result.stderr
    assert "Visit the plant" in result.stdout
    (row,) = [t for t in await sale.tasks(opp) if t["task_key"] == "adhoc"]
    assert (row["owner"], row["due_at"]) == ("carol", due)
    bad = await sale.cli("add-task", opp, "Yesterday", "--due", "2000-01-01T00:00:00Z")
    assert bad.code == 1 and "not in the future" in bad.stderr
