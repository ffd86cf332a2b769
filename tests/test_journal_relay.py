"""The journal relay (worker/journal_relay.py) on the real stack: what it reads of a run that has
ended, and how it carries out a confirmed write's task workflow operations."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryRejectedError
from temporalio.common import QueryRejectCondition

from tests.helpers import Sale, eventually
from worker.journal_relay import JournalRelay
from worker.main import build_worker
from workflows import contract as c
from workflows.steps import JournalView, ProcessResult

WON = {"stage": "Closed won", "actor": "alice", "actual_income": "1000", "hours_spent": "2"}


async def test_a_run_that_has_ended_tells_its_writes_in_its_result_and_they_are_confirmed(sale: Sale) -> None:
    """A closed run is not asked (a query would replay its whole history on a worker): its result
    carries what the `journal` query answers, the relay confirms its last writes from it, and the
    follow-up tasks' workflows start."""
    handle, opp = await sale.started()
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, WON)
    result = await sale.client.get_workflow_handle(handle.id, result_type=ProcessResult).result()
    assert result.closed and result.journal is not None
    assert result.journal.writes == result.journal.holding > 1
    try:
        await handle.query(c.QUERY_JOURNAL, reject_condition=QueryRejectCondition.NOT_OPEN)
        raise AssertionError("a completed run's query was not rejected")
    except WorkflowQueryRejectedError as rejected:
        assert rejected.status == WorkflowExecutionStatus.COMPLETED
    replayed = await handle.query(c.QUERY_JOURNAL, result_type=JournalView)
    assert replayed == result.journal  # the same answer, without a replay
    relay = JournalRelay(sale.pool, sale.client, sale.task_queue)
    assert await relay.view(opp) == result.journal

    async def left() -> tuple[int, int, int]:
        row = await sale.pool.fetchrow(
            "SELECT (SELECT count(*) FROM journal WHERE opportunity_id = $1) AS writes,"
            " (SELECT count(*) FROM task_ops WHERE opportunity_id = $1) AS ops,"
            " (SELECT confirmed FROM projections WHERE opportunity_id = $1) AS confirmed",
            opp,
        )
        assert row is not None
        return row["writes"], row["ops"], row["confirmed"]

    await eventually(left, lambda got: got == (0, 0, result.journal.writes), timeout=20)
    follow_up = await sale.pool.fetch(
        "SELECT id FROM tasks WHERE opportunity_id = $1 AND kind = 'follow-up'", opp
    )
    assert follow_up
    for row in follow_up:
        described = await sale.client.get_workflow_handle(c.task_workflow_id(row["id"])).describe()
        assert described.status == WorkflowExecutionStatus.RUNNING


async def test_a_task_completed_before_its_workflow_was_started_is_started_completed_in_one_call(
    client: Client, pool: asyncpg.Pool, database_url: str
) -> None:
    """The relay falls behind (here: it is not running): the Qualification tasks' starts and one
    task's completion are all ready when it comes. The completed task's workflow is started with
    its completion (signal-with-start) and ends in its first workflow task; the other one's runs."""
    sale = Sale(client, pool, f"corpsale-relay-{uuid.uuid4()}", database_url)
    relay = JournalRelay(pool, client, sale.task_queue, confirm_after=0.01)
    async with build_worker(client, pool, task_queue=sale.task_queue):
        _, opp = await sale.started()
        done, other = [t.task_id for t in (await sale.state(opp)).open_tasks][:2]
        await sale.complete(opp, done)
        last = await pool.fetchval("SELECT number FROM projections WHERE opportunity_id = $1", opp)

        async def confirmed() -> int:  # the completion is the run's last write: the run is asked
            asking: dict[str, asyncio.Task[None]] = {}
            await relay.confirm_quiet_runs(asking)
            await asyncio.gather(*asking.values())
            n: int = await pool.fetchval("SELECT confirmed FROM projections WHERE opportunity_id = $1", opp)
            return n

        await eventually(confirmed, lambda n: n == last, timeout=10)
        ready = await pool.fetch(
            "SELECT kind, task_id FROM task_ops WHERE opportunity_id = $1 AND ready ORDER BY number, ordinal",
            opp,
        )
        assert [("start", done), ("finish", done)] == [
            (r["kind"], r["task_id"]) for r in ready if r["task_id"] == done
        ]
        assert ("start", other) in {(r["kind"], r["task_id"]) for r in ready}
        working: dict[str, asyncio.Task[None]] = {}
        await relay.carry_out_operations(working, 10)
        await asyncio.gather(*working.values())
        working.clear()
        await relay.carry_out_operations(working, 10)  # the next look deletes them, and finds no more
        assert working == {}
        assert await pool.fetchval("SELECT count(*) FROM task_ops WHERE opportunity_id = $1", opp) == 0
        completed = client.get_workflow_handle(c.task_workflow_id(done))
        assert (await completed.result())["outcome"] == "done"
        events = [e.event_type async for e in completed.fetch_history_events()]
        assert events.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 1
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED in events
        running = await client.get_workflow_handle(c.task_workflow_id(other)).describe()
        assert running.status == WorkflowExecutionStatus.RUNNING
