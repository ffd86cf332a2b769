"""R12: a command delivered twice is applied once; nothing is ever duplicated or lost."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import ActivityEnvironment

from activities.sale import SaleActivities
from tests.helpers import Sale, eventually
from workflows import contract as c
from workflows import state as state_module
from workflows.contract import NewOpportunity
from workflows.steps import (
    AddTaskRow,
    CancelTaskRow,
    Closing,
    CompleteTaskRow,
    EnterStage,
    NewTask,
    OpenOpportunity,
    UpdateOpportunityRow,
)


async def test_a_repeated_request_id_is_applied_once_for_signals(sale: Sale) -> None:
    _, opp = await sale.started()
    move = {"stage": "Proposal", "actor": "bob", "request_id": "req-1"}
    back = {"stage": "Qualification", "actor": "bob", "request_id": "req-2"}
    for payload in (move, move, back, back, move):  # a broker delivering twice, then a replay
        await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, payload)
    await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": "barrier", "request_id": "x"})

    state = await sale.state(opp)
    assert (state.stage, state.visit, state.rejected) == ("Qualification", 3, [])
    assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", "Proposal", "Qualification"]
    assert len(await sale.tasks(opp)) == 2 + 3 + 2
    assert len(await sale.notifications(opp, "task_assigned")) == 7
    changed = await sale.notifications(opp, "stage_changed")  # bob moved alice's opportunity twice
    assert [(n["recipient"], n["message"]) for n in changed] == [
        ("alice", f"bob moved Deal {opp} from Qualification to Proposal"),
        ("alice", f"bob moved Deal {opp} from Proposal to Qualification"),
    ]


async def test_a_repeated_update_answers_again_without_applying_twice(sale: Sale) -> None:
    handle, opp = await sale.started()
    task = (await sale.state(opp)).open_tasks[0]
    payload = {"task_id": task.task_id, "actor": "alice", "request_id": "done-1"}

    first = await sale.update(opp, c.UPDATE_COMPLETE_TASK, payload)
    second = await sale.update(opp, c.UPDATE_COMPLETE_TASK, payload)

    assert first.tasks_done == second.tasks_done == 1
    rows = [t for t in await sale.tasks(opp) if t["id"] == task.task_id]
    assert len(rows) == 1 and rows[0]["status"] == "completed"

    # A client retrying the same update id gets the first answer; the task closes once.
    other = (await sale.state(opp)).open_tasks[0]
    answers = [
        await handle.execute_update(
            c.UPDATE_COMPLETE_TASK,
            {"task_id": other.task_id, "actor": "alice"},
            id="retry-me",
            result_type=c.StateView,
        )
        for _ in range(2)
    ]
    assert answers[0] == answers[1]
    assert sum(t["status"] == "completed" for t in await sale.tasks(opp)) == 2


async def test_completing_a_task_twice_without_request_id_is_refused_the_second_time(
    sale: Sale,
) -> None:
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    state = await sale.wait_stage(opp, "Qualification")
    payload = {"task_id": state.open_tasks[0].task_id, "actor": "alice"}
    await sale.signal(opp, c.SIGNAL_COMPLETE_TASK, payload)
    await sale.signal(opp, c.SIGNAL_COMPLETE_TASK, payload)
    state = await eventually(lambda: sale.state(opp), lambda s: len(s.rejected) == 1)
    assert "completed already" in state.rejected[0].reason
    assert state.tasks_done == 1
    assert sum(t["status"] == "completed" for t in await sale.tasks(opp)) == 1


async def test_every_activity_can_run_twice_with_the_same_effect(pool: asyncpg.Pool) -> None:
    """What a retry after a crash does: the second attempt of each step changes nothing."""
    acts = SaleActivities(pool)
    env = ActivityEnvironment()
    opp = f"opp-{uuid.uuid4().hex[:12]}"
    at = datetime.now(UTC)
    new = NewOpportunity(title="Retry", customer="Acme", owner="erin")
    task = NewTask(task_id=f"{opp}:v1:a", task_key="a", title="A", start_at=at, due_at=at)
    steps: list[tuple[Callable[[Any], Awaitable[Any]], Any]] = [
        (acts.open_opportunity, OpenOpportunity(opportunity_id=opp, actor="op", new=new)),
        (
            acts.enter_stage,
            EnterStage(
                opportunity_id=opp,
                visit_no=1,
                stage="Qualification",
                owner="erin",
                actor="op",
                reason=None,
                at=at,
                tasks=(task,),
            ),
        ),
        (
            acts.complete_task,
            CompleteTaskRow(task_id=task.task_id, outcome="done", actor="erin", comment=None, at=at),
        ),
        (acts.cancel_task, CancelTaskRow(task_id=task.task_id, at=at)),
        (acts.update_opportunity, UpdateOpportunityRow(opportunity_id=opp, changes={"need": "n"}, at=at)),
        (
            acts.enter_stage,
            EnterStage(
                opportunity_id=opp,
                visit_no=2,
                stage="Closed lost",
                owner="erin",
                actor="op",
                reason="gone",
                at=at,
                tasks=(),
                closing=Closing(successful=False, reason="gone"),
            ),
        ),
    ]

    async def snapshot() -> list[list[dict[str, object]]]:
        return [
            [dict(r) for r in await pool.fetch(f"SELECT * FROM {table} WHERE {key} = $1 ORDER BY 1", opp)]
            for table, key in [
                ("opportunities", "id"),
                ("stage_visits", "opportunity_id"),
                ("tasks", "opportunity_id"),
                ("notifications", "opportunity_id"),
            ]
        ]

    for activity_fn, arg in steps:
        await env.run(activity_fn, arg)
        once = await snapshot()
        await env.run(activity_fn, arg)
        assert await snapshot() == once, activity_fn.__name__
    opportunities, visits, tasks, notes = await snapshot()
    assert opportunities[0]["need"] == "n" and opportunities[0]["closed_at"] == at
    assert len(visits) == 2 and len(tasks) == 1 and tasks[0]["status"] == "completed"
    assert [n["kind"] for n in notes] == ["task_assigned", "closed_lost"]


async def test_a_lost_workflow_task_run_again_in_order_leaves_what_it_left_the_first_time(
    pool: asyncpg.Pool,
) -> None:
    """A worker dies after one workflow task's steps committed (stage entries, an ad-hoc task)
    but before the task completed: the next worker runs all of them again, in order. An earlier
    entry then cancels the later ones' open tasks as stale for a moment; the later steps, run
    again after it, open them again, so the rows end as the first run left them."""
    acts = SaleActivities(pool)
    env = ActivityEnvironment()
    opp = f"opp-{uuid.uuid4().hex[:12]}"
    at = datetime.now(UTC)
    await env.run(
        acts.open_opportunity,
        OpenOpportunity(
            opportunity_id=opp, actor="op", new=NewOpportunity(title="T", customer="C", owner="erin")
        ),
    )

    def entry(visit: int, stage: str, keep: tuple[str, ...] = ()) -> EnterStage:
        task = NewTask(task_id=f"{opp}:v{visit}:a", task_key="a", title="A", start_at=at, due_at=at)
        return EnterStage(
            opportunity_id=opp, visit_no=visit, stage=stage, owner="erin", actor="op",
            reason=None, at=at, tasks=(task,), keep_open=keep,
        )  # fmt: skip

    adhoc = AddTaskRow(
        opportunity_id=opp, visit_no=1, stage="Qualification", owner="erin", at=at,
        task=NewTask(task_id=f"{opp}:adhoc1", task_key="adhoc", title="Call", start_at=at, due_at=at),
    )  # fmt: skip
    steps: list[tuple[Callable[[Any], Awaitable[Any]], Any]] = [
        (acts.enter_stage, entry(1, "Qualification")),
        (acts.add_task, adhoc),
        (acts.enter_stage, entry(2, "Proposal", keep=(adhoc.task.task_id,))),
    ]
    for activity_fn, arg in steps:  # the first run
        await env.run(activity_fn, arg)
    first = {
        r["id"]: r["status"]
        for r in await pool.fetch("SELECT id, status FROM tasks WHERE opportunity_id = $1", opp)
    }
    events = await pool.fetch(
        "SELECT id, sequence FROM events WHERE opportunity_id = $1 ORDER BY sequence", opp
    )
    for activity_fn, arg in steps:  # the lost workflow task, run again
        await env.run(activity_fn, arg)
    # The events out are those of the first run: none again, and no cancellation of a later
    # entry's task by the earlier entry run again (it was stale only for a moment).
    assert (
        await pool.fetch("SELECT id, sequence FROM events WHERE opportunity_id = $1 ORDER BY sequence", opp)
        == events
    )
    assert [e["id"] for e in events] == [
        f"{opp}:started", f"{opp}:v1:entered", f"{opp}:v1:a:created", f"{opp}:adhoc1:created",
        f"{opp}:v1:a:canceled", f"{opp}:v2:entered", f"{opp}:v2:a:created",
    ]  # fmt: skip
    assert [e["sequence"] for e in events] == list(range(1, 8))
    again = {
        r["id"]: r["status"]
        for r in await pool.fetch("SELECT id, status FROM tasks WHERE opportunity_id = $1", opp)
    }
    assert first == {f"{opp}:v1:a": "canceled", f"{opp}:adhoc1": "open", f"{opp}:v2:a": "open"}
    assert again == first
    visits = await pool.fetch(
        "SELECT visit_no, left_at FROM stage_visits WHERE opportunity_id = $1 ORDER BY 1", opp
    )
    assert [(v["visit_no"], v["left_at"] is None) for v in visits] == [(1, False), (2, True)]


async def test_a_retry_is_known_however_many_requests_came_between(
    sale: Sale, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R23 beyond the run's ledger (here cut to 5 requests): PostgreSQL keeps each applied request,
    so a retry after many others is answered, not applied again; another command under its id is
    refused."""
    monkeypatch.setattr(state_module, "MAX_REQUEST_IDS", 5)
    _, opp = await sale.started()
    await sale.update(
        opp, c.UPDATE_ADD_TASK, {"title": "Call the CFO", "actor": "alice", "request_id": "call"}
    )
    for n in range(8):  # the run's ledger forgets "call"
        await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": f"n{n}", "request_id": f"need-{n}"})
    again = await sale.update(
        opp, c.UPDATE_ADD_TASK, {"title": "Call the CFO", "actor": "alice", "request_id": "call"}
    )
    await sale.signal(
        opp, c.SIGNAL_ADD_TASK, {"title": "Call the CFO", "actor": "alice", "request_id": "call"}
    )
    with pytest.raises(WorkflowUpdateFailedError) as reused:
        await sale.update(
            opp, c.UPDATE_ADD_TASK, {"title": "Something else", "actor": "alice", "request_id": "call"}
        )
    assert "'call' was used for another command" in str(reused.value.cause)
    state = await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": "last", "request_id": "need-last"})
    assert (
        [t.title for t in state.open_tasks if t.adhoc]
        == ["Call the CFO"]
        == [t.title for t in again.open_tasks if t.adhoc]
    )
    assert len([t for t in await sale.tasks(opp) if t["task_key"] == "adhoc"]) == 1
    assert state.rejected == []  # the signal was a retry, answered quietly
