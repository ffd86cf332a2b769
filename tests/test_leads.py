"""R3: a lead that reaches "Awaiting sale" with StartOppBusinessProcess on becomes an opportunity
and its process starts, exactly once per lead; with the setting off nothing starts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from activities.data import leads
from tests.helpers import Sale, eventually
from tests.processes import worker_process
from worker.lead_relay import LeadRelay
from workflows import contract as c
from workflows.state import ProcessInput

AWAITING = "Awaiting sale"


@asynccontextmanager
async def relay(pool: asyncpg.Pool, client: Client, queue: str) -> AsyncIterator[LeadRelay]:
    stop = asyncio.Event()
    lead_relay = LeadRelay(pool, client, queue, interval=0.1)
    task = asyncio.create_task(lead_relay.run(stop))
    try:
        yield lead_relay
    finally:
        stop.set()
        await task


@pytest.fixture
async def start_setting(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """StartOppBusinessProcess on for the test (it is off by default), off again after it."""
    async with pool.acquire() as conn:
        await leads.set_setting(conn, leads.START_SETTING, True)
    yield
    async with pool.acquire() as conn:
        await leads.set_setting(conn, leads.START_SETTING, False)
        pending = await conn.fetchval("SELECT count(*) FROM lead_outbox WHERE processed_at IS NULL")
    assert pending == 0, "a test left outbox rows behind"


async def add_lead(pool: asyncpg.Pool, stage: str = "Qualification") -> str:
    lead_id = f"L{uuid.uuid4().hex[:10]}"
    async with pool.acquire() as conn:
        await leads.add_lead(
            conn,
            leads.NewLead(
                id=lead_id, title=f"Lead {lead_id}", customer="Acme Ltd", owner="alice", stage=stage
            ),
        )
    return lead_id


async def move(pool: asyncpg.Pool, lead_id: str, stage: str = AWAITING) -> None:
    async with pool.acquire() as conn:
        await leads.move_lead(conn, lead_id, stage)


async def has_process(client: Client, opportunity_id: str) -> bool:
    try:
        await client.get_workflow_handle(c.workflow_id(opportunity_id)).describe()
        return True
    except RPCError:
        return False


async def assert_started_once(sale: Sale, lead_id: str) -> str:
    opp = leads.opportunity_id_for(lead_id)
    await eventually(lambda: has_process(sale.client, opp), bool)
    await sale.wait_stage(opp, "Qualification")
    assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification"]
    assert len(await sale.tasks(opp)) == 2 and len(await sale.notifications(opp)) == 2
    lead = await sale.pool.fetchrow("SELECT opportunity_id FROM leads WHERE id = $1", lead_id)
    assert lead["opportunity_id"] == opp
    return opp


@pytest.mark.usefixtures("start_setting")
async def test_a_lead_awaiting_sale_becomes_an_opportunity_with_its_data_and_process(sale: Sale) -> None:
    lead_id = f"L{uuid.uuid4().hex[:10]}"
    added = await sale.cli(
        "lead", "add", "--id", lead_id, "--title", "Fleet renewal", "--customer", "Northwind",
        "--owner", "bob", "--contact", "Ann Lee", "--need", "40 vans", "--budget", "125000.50",
    )  # fmt: skip
    assert added.code == 0, added.stderr
    async with relay(sale.pool, sale.client, sale.task_queue):
        moved = await sale.cli("lead", "move", lead_id, AWAITING, "--json")
        assert moved.code == 0 and json.loads(moved.stdout)["stage"] == AWAITING, moved.stderr
        opp = await assert_started_once(sale, lead_id)
    row = await sale.opportunity(opp)
    assert (row["title"], row["customer"], row["owner"], row["contact"], row["need"], row["budget"]) == (
        "Fleet renewal",
        "Northwind",
        "bob",
        "Ann Lee",
        "40 vans",
        Decimal("125000.50"),
    )
    state = await sale.state(opp)
    assert state.owner == "bob" and state.data["contact"] == "Ann Lee"
    shown = await sale.cli("lead", "show", lead_id)
    assert f"opportunity {opp}" in shown.stdout


async def test_with_the_setting_off_nothing_starts(sale: Sale) -> None:
    listed = await sale.cli("setting", leads.START_SETTING)
    assert listed.code == 0 and f"{leads.START_SETTING}: off" in listed.stdout
    lead_id = await add_lead(sale.pool)
    await move(sale.pool, lead_id)
    async with relay(sale.pool, sale.client, sale.task_queue) as lead_relay:
        await asyncio.sleep(0.5)  # several passes
        assert await lead_relay.relay_once() == 0
    opp = leads.opportunity_id_for(lead_id)
    assert await sale.pool.fetchval("SELECT count(*) FROM lead_outbox WHERE lead_id = $1", lead_id) == 0
    assert await sale.pool.fetchval("SELECT count(*) FROM opportunities WHERE id = $1", opp) == 0
    assert not await has_process(sale.client, opp)


@pytest.mark.usefixtures("start_setting")
async def test_a_lead_moved_while_no_worker_runs_starts_once_a_worker_is_back(sale: Sale) -> None:
    lead_id = await add_lead(sale.pool)
    await move(sale.pool, lead_id)  # no relay runs: the outbox keeps it
    opp = leads.opportunity_id_for(lead_id)
    assert await sale.pool.fetchval("SELECT count(*) FROM lead_outbox WHERE processed_at IS NULL") == 1
    assert not await has_process(sale.client, opp)
    # A minute on, the checker reports it (and says what to do).
    await sale.pool.execute("UPDATE lead_outbox SET created_at = now() - interval '2 minutes'")
    report = json.loads((await sale.cli("check", opp, "--json")).stdout)
    (late,) = report["violations"]
    assert (late["kind"], late["opportunity_id"]) == ("lead not started", opp)
    assert "lead relay" in late["detail"]
    async with worker_process(sale.worker_env()):
        await assert_started_once(sale, lead_id)
        await eventually(
            lambda: sale.pool.fetchval("SELECT count(*) FROM lead_outbox WHERE processed_at IS NULL"),
            lambda pending: pending == 0,
        )


@pytest.mark.usefixtures("start_setting")
async def test_two_relays_racing_start_each_lead_once(sale: Sale) -> None:
    lead_ids = [await add_lead(sale.pool) for _ in range(8)]
    async with relay(sale.pool, sale.client, sale.task_queue), relay(sale.pool, sale.client, sale.task_queue):
        await asyncio.gather(*(move(sale.pool, lead_id) for lead_id in lead_ids))
        for lead_id in lead_ids:
            await assert_started_once(sale, lead_id)
        # Back and to "Awaiting sale" again: the lead has its opportunity, nothing new starts.
        await move(sale.pool, lead_ids[0], "Qualification")
        await move(sale.pool, lead_ids[0])
        await asyncio.sleep(0.5)
    await assert_started_once(sale, lead_ids[0])
    rows = await sale.pool.fetchval(
        "SELECT count(*) FROM lead_outbox WHERE lead_id = ANY($1::text[])", lead_ids
    )
    assert rows == len(lead_ids)


@pytest.mark.usefixtures("start_setting")
async def test_a_relay_stopped_after_the_start_repeats_it_harmlessly(sale: Sale) -> None:
    """One relay pass stopped after the start, before it marked the row: the row stays, and the
    next pass finds the opportunity and the process there and only marks it."""
    lead_id = await add_lead(sale.pool)
    await move(sale.pool, lead_id)
    lead_relay = LeadRelay(sale.pool, sale.client, sale.task_queue)
    async with sale.pool.acquire() as conn, conn.transaction():
        (row,) = await leads.claim_pending(conn, 10)
        async with sale.pool.acquire() as own:
            opp, _ = await leads.opportunity_from_lead(own, row)
        start = ProcessInput(opportunity_id=opp, actor=f"lead {lead_id}")
        await lead_relay._start(start, row)  # and no mark_relayed: the relay died here
    await sale.wait_stage(opp, "Qualification")
    assert await lead_relay.relay_once() == 1  # the same row again
    assert await lead_relay.relay_once() == 0
    await assert_started_once(sale, lead_id)


@pytest.mark.usefixtures("start_setting")
async def test_a_lead_that_cannot_become_an_opportunity_is_set_aside_and_holds_up_no_other(
    sale: Sale,
) -> None:
    """Another system wrote a lead whose id cannot name an opportunity (a space in it): the relay
    records why, goes on with the lead behind it, and `corpsale check` reports it."""
    bad = f"bad lead {uuid.uuid4().hex[:6]}"
    await sale.pool.execute(
        "INSERT INTO leads (id, title, customer, owner, stage) VALUES ($1, 'T', 'C', 'alice', 'New')", bad
    )
    good = await add_lead(sale.pool)
    await move(sale.pool, bad)
    await move(sale.pool, good)
    try:
        async with relay(sale.pool, sale.client, sale.task_queue):
            await assert_started_once(sale, good)
            shown = await eventually(
                lambda: sale.cli("lead", "show", bad), lambda r: "could not start" in r.stdout
            )
        assert f"opportunity_id 'lead-{bad}': String should match pattern" in shown.stdout
        assert "corpsale lead retry" in shown.stdout
        check = json.loads((await sale.cli("check", leads.opportunity_id_for(bad), "--json")).stdout)
        assert [v["kind"] for v in check["violations"]] == ["lead start failed"]
        assert (
            await sale.pool.fetchval("SELECT count(*) FROM opportunities WHERE id = $1", f"lead-{bad}") == 0
        )

        retried = await sale.cli("lead", "retry", bad)
        assert retried.code == 0 and "is being created by the worker" in retried.stdout, retried.stderr
        again = await sale.cli("lead", "retry", good)
        assert again.code == 1 and "has no failed start to retry" in again.stderr
        async with relay(sale.pool, sale.client, sale.task_queue):  # still wrong: set aside again
            await eventually(lambda: sale.cli("lead", "show", bad), lambda r: "could not start" in r.stdout)
    finally:
        await sale.pool.execute("DELETE FROM lead_outbox WHERE lead_id = $1", bad)
        await sale.pool.execute("DELETE FROM leads WHERE id = $1", bad)
