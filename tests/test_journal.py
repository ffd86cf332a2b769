"""R28: PostgreSQL holds only what the run decided. A workflow task lost after its steps committed,
with its commands coming back in another order, leaves no visit, task, notification, task
workflow or event of the timeline the run did not take (activities/journal.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
from temporalio.client import Client

from tests.helpers import Sale, assert_the_database_is_the_runs, eventually, worker_process
from tests.webhook_receiver import Receiver
from worker.webhook_relay import Policy, WebhookRelay
from workflows import contract as c
from workflows.contract import NewOpportunity, StateView
from workflows.state import ProcessInput


@contextlib.asynccontextmanager
async def killing_worker(
    env: dict[str, str], step: str, condition: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A worker that dies the moment `step` has committed for a row where `condition` holds."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.killing_worker", step, condition, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


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


async def test_a_lost_workflow_task_whose_commands_come_back_in_another_order_leaves_no_trace(
    client: Client, pool: asyncpg.Pool, database_url: str
) -> None:
    """An update moves the deal to Proposal; the worker dies the moment that stage entry has
    committed; while no worker runs a signal moves it to Contracting. The next attempt takes the
    signal first: visit 2 is Contracting, visit 3 Proposal. The lost attempt's visit 2 (Proposal),
    its tasks, their notifications, task workflows and events are nowhere."""
    sale = Sale(client, pool, f"corpsale-lost-{uuid.uuid4()}", database_url)
    env = {**sale.cli_env(), "PYTHONPATH": os.getcwd()}
    opp = sale.new_id()
    lost = [f"{opp}:v2:{key}" for key in ("present-proposal", "proposal-approval", "internal-contract")]
    async with subscribed(sale) as receiver:
        async with killing_worker(env, "enter_stage", "stage=Proposal") as dying:
            handle = await client.start_workflow(
                c.WORKFLOW_TYPE,
                ProcessInput(
                    opportunity_id=opp,
                    actor="operator",
                    new=NewOpportunity(title="Lost task", customer="Acme Ltd", owner="alice"),
                ),
                id=c.workflow_id(opp),
                task_queue=sale.task_queue,
                task_timeout=timedelta(seconds=2),  # a lost workflow task is tried again soon
            )
            await sale.wait_stage(opp, "Qualification")
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
