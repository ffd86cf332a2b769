"""R28: PostgreSQL holds only what the run decided. A workflow task lost after its steps committed,
with its commands coming back in another order, leaves no visit, task, notification, task
workflow or event of the timeline the run did not take (activities/data/journal.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.data import journal
from activities.sale import SaleActivities
from tests.helpers import Sale, assert_the_database_is_the_runs, eventually
from tests.processes import killing_worker, worker_process
from tests.webhook_receiver import Receiver
from worker.webhook_relay import Policy, WebhookRelay
from workflows import contract as c
from workflows.contract import NewOpportunity, StateView
from workflows.state import ProcessInput
from workflows.steps import EnterStage, Fence, JournalView, NewTask, OpenOpportunity

# The workers' settings: the test's relay (`subscribed`) alone posts to its receiver. A worker
# killed between a post and its mark holds its claims for their lease (11 s a post of the chain,
# and 5), longer than these tests wait for the feed; tests/test_webhooks.py kills relays
# mid-delivery.
SUBSCRIBED_ONLY = {"CORPSALE_WEBHOOK_RELAY": "false"}


@contextlib.asynccontextmanager
async def subscribed(sale: Sale) -> AsyncIterator[Receiver]:
    """A webhook receiver subscribed to every event, with a relay posting to it."""
    receiver = Receiver()
    await receiver.start()
    added = await sale.cli("webhooks", "add", receiver.url)
    assert added.code == 0, added.stderr
    receiver.trust(added.stdout.rsplit("shown once): ", 1)[1].strip())
    stop = asyncio.Event()
    relaying = asyncio.create_task(WebhookRelay(sale.pool, Policy(interval=0.2)).run(stop))
    try:
        yield receiver
    finally:
        stop.set()
        await relaying
        await receiver.stop()
        await sale.cli("webhooks", "remove", receiver.url)


async def _started_at_qualification(sale: Sale, opp: str, title: str) -> WorkflowHandle[Any, Any]:
    """A new deal of alice's, its workflow tasks tried again soon when one is lost."""
    handle: WorkflowHandle[Any, Any] = await sale.client.start_workflow(
        c.WORKFLOW_TYPE,
        ProcessInput(
            opportunity_id=opp,
            actor="operator",
            new=NewOpportunity(title=title, customer="Acme Ltd", owner="alice"),
        ),
        id=c.workflow_id(opp),
        task_queue=sale.task_queue,
        task_timeout=timedelta(seconds=2),  # a lost workflow task is tried again soon
    )
    await sale.wait_stage(opp, "Qualification")
    return handle


async def test_a_lost_workflow_task_whose_commands_come_back_in_another_order_leaves_no_trace(
    client: Client, pool: asyncpg.Pool, database_url: str
) -> None:
    """An update moves the deal to Proposal; the worker dies the moment that stage entry has
    committed; while no worker runs a signal moves it to Contracting. The next attempt takes the
    signal first: visit 2 is Contracting, visit 3 Proposal. The lost attempt's visit 2 (Proposal),
    its tasks, their notifications, task workflows and events are nowhere."""
    sale = Sale(client, pool, f"corpsale-lost-{uuid.uuid4()}", database_url)
    env = sale.worker_env(**SUBSCRIBED_ONLY)
    opp = sale.new_id()
    lost = [f"{opp}:v2:{key}" for key in ("present-proposal", "proposal-approval", "internal-contract")]
    async with subscribed(sale) as receiver:
        async with killing_worker(env, "enter_stage", "stage=Proposal") as dying:
            handle = await _started_at_qualification(sale, opp, "Lost task")
            move = {"stage": "Proposal", "actor": "alice", "request_id": "to-proposal"}
            update = asyncio.create_task(
                handle.execute_update(c.UPDATE_CHANGE_STAGE, move, result_type=StateView)
            )
            assert await asyncio.wait_for(dying.wait(), 30) == 9
        # What the lost attempt wrote is in PostgreSQL now, and no worker runs.
        assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", "Proposal"]
        await sale.signal(
            opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Contracting", "actor": "alice", "request_id": "c"}
        )
        async with worker_process(env):
            with contextlib.suppress(Exception):  # its answer may be lost with the task: sent again below
                await asyncio.wait_for(update, 60)
            answer = await handle.execute_update(c.UPDATE_CHANGE_STAGE, move, result_type=StateView)
            assert answer.visit == 3
            state = await sale.wait_stage(opp, "Proposal", visit=3, timeout=60)
            events = await assert_the_database_is_the_runs(sale, opp, never=lost)
            await eventually(lambda: asyncio.sleep(0, receiver.of(opp)), lambda got: len(got) == len(events))
    assert [(v["visit_no"], v["stage"]) for v in await sale.visits(opp)] == [
        (1, "Qualification"), (2, "Contracting"), (3, "Proposal"),
    ]  # fmt: skip
    assert state.rejected == []
    taken = receiver.of(opp)
    assert [e["id"] for e in taken] == [e["id"] for e in events]
    entered = [(e["data"]["visit"], e["data"]["stage"]) for e in taken if e["type"].endswith("stage.entered")]
    assert entered == [(1, "Qualification"), (2, "Contracting"), (3, "Proposal")]
    assert not {f"{t}:created" for t in lost} & set(receiver.on_wire)


# The journal's rules, straight on PostgreSQL through the real steps (activities/data/journal.py) ----


def _entry(opp: str, visit: int, stage: str, at: datetime, keys: tuple[str, ...] = ("a",)) -> EnterStage:
    tasks = tuple(
        NewTask(task_id=f"{opp}:v{visit}:{k}", task_key=k, title=k.upper(), start_at=at, due_at=at)
        for k in keys
    )
    return EnterStage(
        opportunity_id=opp,
        visit_no=visit,
        stage=stage,
        owner="erin",
        actor="op",
        reason=None,
        at=at,
        tasks=tasks,
    )


def _fence(
    number: int,
    chain: str,
    length: int,
    began: datetime,
    prev: str = "",
    durable: int = 0,
    durable_chain: str = "",
) -> Fence:
    return Fence(
        process="p1", run_id="r1", run_no=1, history_length=length, attempt_at=began, number=number,
        chain=chain, prev_chain=prev, durable=durable, durable_chain=durable_chain,
    )  # fmt: skip


async def _rows(pool: asyncpg.Pool, opp: str) -> dict[str, Any]:
    return {
        "visits": [(r["visit_no"], r["stage"]) for r in await pool.fetch(
            "SELECT visit_no, stage FROM stage_visits WHERE opportunity_id = $1 ORDER BY 1", opp)],
        "tasks": sorted((r["id"], r["status"]) for r in await pool.fetch(
            "SELECT id, status FROM tasks WHERE opportunity_id = $1", opp)),
        "notes": await pool.fetchval("SELECT count(*) FROM notifications WHERE opportunity_id = $1", opp),
        "drafts": await pool.fetchval("SELECT count(*) FROM event_drafts WHERE opportunity_id = $1", opp),
        "events": [r["id"] for r in await pool.fetch(
            "SELECT id FROM events WHERE opportunity_id = $1 ORDER BY sequence", opp)],
        "ops": [(r["kind"], r["task_id"]) for r in await pool.fetch(
            "SELECT kind, task_id FROM task_ops WHERE opportunity_id = $1 ORDER BY number, ordinal", opp)],
    }  # fmt: skip


async def test_a_lost_completion_that_entered_the_next_stage_is_undone_when_a_move_comes_first(
    client: Client, pool: asyncpg.Pool, database_url: str
) -> None:
    """Completing Qualification's last task enters Presentation in the same write (patch
    `stage-entered-with-completion`). The worker dies the moment that write has committed; while
    no worker runs, a signal moves the deal to Contracting. The next attempt takes the signal
    first, so the completion finds its task canceled and is refused: the lost attempt's
    completion, its visit 2 (Presentation), that visit's task and their events are nowhere."""
    sale = Sale(client, pool, f"corpsale-lost-{uuid.uuid4()}", database_url)
    env = sale.worker_env(**SUBSCRIBED_ONLY)
    opp = sale.new_id()
    first, last = f"{opp}:v1:contact-assess", f"{opp}:v1:prepare-presentation"
    lost = [f"{opp}:v2:presentation"]
    async with subscribed(sale) as receiver:
        async with killing_worker(env, "complete_task", f"task_id={last}") as dying:
            handle = await _started_at_qualification(sale, opp, "Lost completion")
            await sale.complete(opp, first)
            done = {"task_id": last, "actor": "alice", "request_id": "last-task"}
            update = asyncio.create_task(
                handle.execute_update(c.UPDATE_COMPLETE_TASK, done, result_type=StateView)
            )
            assert await asyncio.wait_for(dying.wait(), 30) == 9
        # The lost attempt's one write is in PostgreSQL now: the completion and the entry.
        assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", "Presentation"]
        assert (await sale.pool.fetchval("SELECT status FROM tasks WHERE id = $1", last)) == "completed"
        await sale.signal(
            opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Contracting", "actor": "alice", "request_id": "c"}
        )
        async with worker_process(env):
            with contextlib.suppress(Exception):  # its answer may be lost with the task: sent again below
                await asyncio.wait_for(update, 60)
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(c.UPDATE_COMPLETE_TASK, done, result_type=StateView)
            assert isinstance(refused.value.cause, ApplicationError)
            assert "was canceled when the opportunity left 'Qualification'" in refused.value.cause.message
            await sale.wait_stage(opp, "Contracting", visit=2, timeout=60)
            events = await assert_the_database_is_the_runs(sale, opp, never=lost)
            await eventually(lambda: asyncio.sleep(0, receiver.of(opp)), lambda got: len(got) == len(events))
    assert [(v["visit_no"], v["stage"]) for v in await sale.visits(opp)] == [
        (1, "Qualification"),
        (2, "Contracting"),
    ]
    tasks = {t["id"]: t["status"] for t in await sale.tasks(opp)}
    assert (tasks[first], tasks[last]) == ("completed", "canceled")
    assert [e["id"] for e in receiver.of(opp)] == [e["id"] for e in events]
    assert not [e for e in events if e["type"].endswith("task.completed") and e["data"]["task_id"] == last]


async def test_a_lost_attempts_write_is_undone_a_late_one_refused_a_retry_changes_nothing(
    pool: asyncpg.Pool,
) -> None:
    """A run continued from one before the journal begins it with its first write (no opening).
    Write 2 by a lost attempt is undone by the true write 2 of a later attempt, rows, drafts and
    operations; the lost attempt's write 3, coming late, is refused; the true write 2 run again
    changes nothing; a later write confirms what was settled before its workflow task: events
    reach the feed, operations become ready."""
    acts, env = SaleActivities(pool), ActivityEnvironment()
    opp, t0 = f"opp-{uuid.uuid4().hex[:12]}", datetime.now(UTC)
    new = NewOpportunity(title="Journal", customer="Acme", owner="erin")
    await env.run(acts.open_opportunity, OpenOpportunity(opportunity_id=opp, actor="op", new=new))  # no fence
    first = _entry(opp, 1, "Qualification", t0)
    await env.run(acts.enter_stage, first.model_copy(update={"fence": _fence(1, "c1", 10, t0)}))
    lost = _entry(opp, 2, "Proposal", t0, ("x", "y"))
    await env.run(acts.enter_stage, lost.model_copy(update={"fence": _fence(2, "lost", 20, t0, "c1")}))
    assert (await _rows(pool, opp))["visits"] == [(1, "Qualification"), (2, "Proposal")]

    later = t0 + timedelta(seconds=5)  # the next attempt of the same workflow task: same length
    true = _entry(opp, 2, "Contracting", later, ("s",))
    await env.run(acts.enter_stage, true.model_copy(update={"fence": _fence(2, "c2", 20, later, "c1")}))
    rows = await _rows(pool, opp)
    assert rows["visits"] == [(1, "Qualification"), (2, "Contracting")]
    assert [t for t, _ in rows["tasks"]] == [f"{opp}:v1:a", f"{opp}:v2:s"]
    assert ("start", f"{opp}:v2:x") not in rows["ops"] and ("start", f"{opp}:v2:s") in rows["ops"]
    assert rows["events"] == [f"{opp}:started"]  # what the run has not settled is not out

    late = _entry(opp, 3, "Presentation", t0)  # the lost attempt's next step, after all that
    with pytest.raises(ApplicationError, match="decided before those there"):
        await env.run(acts.enter_stage, late.model_copy(update={"fence": _fence(3, "lost3", 20, t0, "lost")}))
    await env.run(acts.enter_stage, true.model_copy(update={"fence": _fence(2, "c2", 20, later, "c1")}))
    assert await _rows(pool, opp) == rows  # a retry: nothing more

    third = _entry(opp, 3, "Proposal", later + timedelta(seconds=1))
    await env.run(
        acts.enter_stage, third.model_copy(update={"fence": _fence(3, "c3", 30, later, "c2", 2, "c2")})
    )
    rows = await _rows(pool, opp)
    entered = [e for e in rows["events"] if e.endswith(":entered")]
    assert entered == [f"{opp}:v1:entered", f"{opp}:v2:entered"]  # confirmed up to write 2; 3 waits
    assert await pool.fetchval("SELECT confirmed FROM projections WHERE opportunity_id = $1", opp) == 2
    ready = await pool.fetch("SELECT kind, task_id FROM task_ops WHERE opportunity_id = $1 AND ready", opp)
    assert ("start", f"{opp}:v2:s") in {(r["kind"], r["task_id"]) for r in ready}


async def test_the_relay_confirms_what_a_quiet_run_settled_and_undoes_what_it_never_had(
    pool: asyncpg.Pool,
) -> None:
    acts, env = SaleActivities(pool), ActivityEnvironment()
    opp, t0 = f"opp-{uuid.uuid4().hex[:12]}", datetime.now(UTC)
    new = NewOpportunity(title="Quiet", customer="Acme", owner="erin")
    await env.run(acts.open_opportunity, OpenOpportunity(opportunity_id=opp, actor="op", new=new))
    await env.run(
        acts.enter_stage,
        _entry(opp, 1, "Qualification", t0).model_copy(update={"fence": _fence(1, "c1", 10, t0)}),
    )
    await env.run(
        acts.enter_stage,
        _entry(opp, 2, "Proposal", t0).model_copy(update={"fence": _fence(2, "lost", 20, t0, "c1")}),
    )
    # The run answered from a later workflow task: write 2 (decided before it) is a lost attempt's.
    view = JournalView(
        process="p1", writes=1, chain="c1", holding=1, run_no=1, history_length=25, attempt_at=t0
    )
    changed = await pool.fetchval(
        "SELECT count(*) FROM journal_undo WHERE opportunity_id = $1 AND number = 2", opp
    )
    async with pool.acquire() as conn:
        assert await journal.resolve(conn, opp, view) == (1, changed) and changed > 0
    rows = await _rows(pool, opp)
    assert rows["visits"] == [(1, "Qualification")] and rows["drafts"] == 0
    assert [e for e in rows["events"] if e.endswith(":entered")] == [f"{opp}:v1:entered"]

    # The next attempt of that task answers the query, then writes 2 and 3 (a command's steps):
    # the answer (holding 1) reaches the relay after them, and they stay.
    later = t0 + timedelta(seconds=10)
    await env.run(
        acts.enter_stage,
        _entry(opp, 2, "Contracting", later).model_copy(update={"fence": _fence(2, "c2", 25, later, "c1")}),
    )
    await env.run(
        acts.enter_stage,
        _entry(opp, 3, "Proposal", later).model_copy(update={"fence": _fence(3, "c3", 25, later, "c2")}),
    )
    answered = view.model_copy(update={"attempt_at": later})
    async with pool.acquire() as conn:
        assert await journal.resolve(conn, opp, answered) == (0, 0)
    visits = [(1, "Qualification"), (2, "Contracting"), (3, "Proposal")]
    assert (await _rows(pool, opp))["visits"] == visits
    async with pool.acquire() as conn:  # an answer from an earlier attempt of that task: the same
        assert await journal.resolve(conn, opp, view) == (0, 0)
    assert (await _rows(pool, opp))["visits"] == visits

    # That attempt is lost too; the next one decides write 2 alike (so it is written already) and
    # answers the query before its write 3: write 2 is now the next attempt's, and stays.
    again = later + timedelta(seconds=10)
    await env.run(
        acts.enter_stage,
        _entry(opp, 2, "Contracting", again).model_copy(update={"fence": _fence(2, "c2", 25, again, "c1")}),
    )
    async with pool.acquire() as conn:
        assert await journal.resolve(conn, opp, view.model_copy(update={"attempt_at": again})) == (0, 0)
    assert (await _rows(pool, opp))["visits"] == visits
