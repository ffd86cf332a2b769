"""R12 and continue-as-new: a run that hands over to a new run in the middle of a stage
sequence loses nothing; a worker killed at any point duplicates nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import Counter

import asyncpg
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.client import start_process
from tests.helpers import Sale, eventually, journal_settled
from tests.processes import killing_worker, worker_process
from worker.dev_server import temporal_cli
from worker.main import serving
from workflows import contract as c
from workflows.search_attributes import OPPORTUNITY_ID_ATTR, SEARCH_ATTRIBUTES, TASK_OWNER_ATTR


async def test_continue_as_new_mid_sequence_loses_nothing(sale: Sale) -> None:
    handle, opp = await sale.started(continue_as_new_after_events=100)
    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Nowhere", "actor": "bob"})
    await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": "ERP", "request_id": "need-1"})
    first_run = (await handle.describe()).run_id

    stages = ["Proposal", "Qualification", "Contracting", "Presentation"] * 3
    for stage in stages:
        await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": stage, "actor": "bob"})
    state = await sale.wait_stage(opp, "Presentation", visit=1 + len(stages))

    assert (await sale.handle(opp).describe()).run_id != first_run, "no continue-as-new happened"
    assert state.data["need"] == "ERP" and len(state.rejected) == 1
    # A request id applied before the hand-over is still known after it: its retry is answered
    # without being applied again, and another command under that id is refused.
    await sale.pool.execute("UPDATE opportunities SET need = 'changed meanwhile' WHERE id = $1", opp)
    await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": "ERP", "request_id": "need-1"})
    assert (await sale.opportunity(opp))["need"] == "changed meanwhile"
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": "CRM", "request_id": "need-1"})
    assert "'need-1' was used for another command" in str(refused.value.cause)

    visits = await sale.visits(opp)
    assert [v["stage"] for v in visits] == ["Qualification", *stages]
    tasks = await sale.tasks(opp)
    per_stage = {"Qualification": 2, "Presentation": 1, "Proposal": 3, "Contracting": 3}
    assert len(tasks) == sum(per_stage[v["stage"]] for v in visits)
    assert [t["status"] for t in tasks].count("open") == 1
    assert len(await sale.notifications(opp, "task_assigned")) == len(tasks)
    # bob moved alice's opportunity 12 times, across runs: she was told of each move once.
    assert len(await sale.notifications(opp, "stage_changed")) == len(stages)
    # The new run goes on: completing the stage advances it.
    state = await sale.complete_stage(opp)
    assert state.stage == "Proposal"
    await sale.wait_stage(opp, "Proposal")


async def test_a_worker_killed_mid_stage_duplicates_and_loses_nothing(
    client: Client, pool: asyncpg.Pool, database_url: str
) -> None:
    sale = Sale(client, pool, f"corpsale-kill-{uuid.uuid4()}", database_url)
    env = sale.worker_env()
    moves = ["Proposal", "Qualification", "Contracting", "Presentation", "Proposal"]

    # The first worker dies the moment the third move's stage entry has committed: in the middle
    # of the moves, that entry in PostgreSQL, its workflow task lost, two moves still to come.
    async with killing_worker(env, "enter_stage", "stage=Contracting") as first:
        _, opp = await sale.started()
        for stage in moves:
            await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": stage, "actor": "bob"})
        assert await asyncio.wait_for(first.wait(), 60) == 9  # died there, not at some other point

    async with worker_process(env) as second:
        state = await sale.wait_stage(opp, "Proposal", visit=1 + len(moves))
        task = state.open_tasks[0].task_id
        await sale.signal(opp, c.SIGNAL_COMPLETE_TASK, {"task_id": task, "actor": "alice"})
        await eventually(lambda: sale.state(opp), lambda s: s.tasks_done == 1, timeout=30)
        second.send_signal(signal.SIGTERM)  # a graceful stop, as a process manager does it
        assert await asyncio.wait_for(second.wait(), 30) == 0

    visits = await sale.visits(opp)
    assert [v["visit_no"] for v in visits] == list(range(1, len(moves) + 2))
    tasks = await sale.tasks(opp)
    per_stage = {"Qualification": 2, "Presentation": 1, "Proposal": 3, "Contracting": 3}
    assert len(tasks) == sum(per_stage[v["stage"]] for v in visits)
    assert Counter(t["status"] for t in tasks) == Counter(
        {"canceled": len(tasks) - 3, "open": 2, "completed": 1}
    )
    notes = await sale.notifications(opp, "task_assigned")
    assert sorted(n["task_id"] for n in notes) == sorted(t["id"] for t in tasks)
    assert len(await sale.notifications(opp, "stage_changed")) == len(moves)  # bob's, to alice
    assert state.rejected == []


async def test_signals_sent_while_the_run_hands_over_are_all_applied_in_order(sale: Sale) -> None:
    handle, opp = await sale.started(continue_as_new_after_events=100)
    stages = ["Proposal", "Contracting", "Presentation", "Qualification"] * 8
    # Sent without waiting for the process, a little apart: runs hand over to the next while
    # signals keep coming (a signal that arrives during a hand-over makes it wait).
    for i, stage in enumerate(stages):
        await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": stage, "actor": "b", "request_id": f"m{i}"})
        await asyncio.sleep(0.03)
    state = await sale.wait_stage(opp, "Qualification", visit=1 + len(stages))
    assert state.rejected == []
    visits = await sale.visits(opp)
    assert [v["stage"] for v in visits] == ["Qualification", *stages]
    runs = [w async for w in sale.client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) > 1


async def test_the_consistency_checker_finds_nothing_after_a_run_and_reports_a_tampered_database(
    sale: Sale,
) -> None:
    _, opp = await sale.started()
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "bob"})
    closed, closed_opp = await sale.started()
    await sale.update(
        closed_opp, c.UPDATE_CHANGE_STAGE, {"stage": "Closed lost", "actor": "alice", "reason": "No decision"}
    )
    await closed.result()

    clean = await sale.cli("check", opp, closed_opp)
    assert clean.code == 0, clean.stdout + clean.stderr
    assert "checked 2 opportunities, 2 runs: 0 violations" in clean.stdout

    # Rows changed behind the process's back are what the checker is for.
    await sale.pool.execute("UPDATE opportunities SET stage = 'Contracting' WHERE id = $1", opp)
    await sale.pool.execute(
        "UPDATE tasks SET status = 'open', canceled_at = NULL WHERE opportunity_id = $1", closed_opp
    )
    await sale.pool.execute("DELETE FROM notifications WHERE task_id = $1", f"{opp}:v2:present-proposal")
    await sale.pool.execute("DELETE FROM events WHERE id = $1", f"{opp}:v2:entered")  # a lost event
    found = await sale.cli("check", opp, closed_opp, "--json")
    assert found.code == 1
    report = json.loads(found.stdout)
    assert report["totals"] == {
        "stage differs": 1,
        "notification lost or duplicated": 1,
        "open task of a closed opportunity": 1,
        "event numbers with a gap or a double": 1,
        "event lost": 1,
    }


async def test_a_run_hands_over_when_the_server_suggests_it(pool: asyncpg.Pool, database_url: str) -> None:
    """R21's third bound: Temporal suggests continuing as new (here from 120 history events, on a
    dev server of this test's own; 4,096 by default). The run hands over at its next quiet point,
    far below its own bounds (2,500 events, 1,000 updates), and the deal goes on in the new run."""
    suggest = "limit.historyCount.suggestContinueAsNew=120"
    async with (
        await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli(),
            dev_server_log_level="warn",
            dev_server_extra_args=["--dynamic-config-value", suggest],
            search_attributes=list(SEARCH_ATTRIBUTES),
            data_converter=pydantic_data_converter,
        ) as env,
    ):
        sale = Sale(env.client, pool, f"corpsale-suggested-{uuid.uuid4()}", database_url)
        async with serving(env.client, pool, task_queue=sale.task_queue):
            _, opp = await sale.started()
            first = (await sale.handle(opp).describe()).run_id
            for i in range(100):
                await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": f"n{i}", "actor": "alice"})
                if (await sale.handle(opp).describe()).run_id != first:
                    break
            else:
                raise AssertionError("the run never handed over")
            ran = env.client.get_workflow_handle(c.workflow_id(opp), run_id=first)
            length = len([e async for e in ran.fetch_history_events()])
            assert 120 <= length < 300, length  # the server's suggestion, not the run's own bound
            state = await sale.complete_stage(opp)
            assert state.stage == "Presentation" and state.data["need"] == f"n{i}"


async def test_a_namespace_not_yet_given_the_opportunity_id_attribute_runs_deals_without_it(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """An upgrade where the namespace has the search attributes of before, not `OpportunityId`
    (registered by the compose job and `corpsale dev`): processes and their task workflows start
    without it, and deals go on."""
    before = [key for key in SEARCH_ATTRIBUTES if key != OPPORTUNITY_ID_ATTR]
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        dev_server_log_level="warn",
        search_attributes=before,
        data_converter=pydantic_data_converter,
    ) as env:
        sale = Sale(env.client, pool, f"corpsale-upgrade-{uuid.uuid4()}", database_url)
        async with serving(env.client, pool, task_queue=sale.task_queue):
            opp = sale.new_id()
            new = c.NewOpportunity(title="Depot fleet", customer="Initech", owner="alice")
            start = c.StartProcess(opportunity_id=opp, actor="alice", new=new)
            await start_process(env.client, start, task_queue=sale.task_queue)
            await sale.wait_stage(opp, "Qualification")
            await journal_settled(sale, opp)
            task = await env.client.get_workflow_handle(
                c.task_workflow_id(f"{opp}:v1:contact-assess")
            ).describe()
            assert task.status == WorkflowExecutionStatus.RUNNING
            assert task.typed_search_attributes.get(TASK_OWNER_ATTR) is None  # started without them
            state = await sale.complete_stage(opp)
            assert state.stage == "Presentation"
