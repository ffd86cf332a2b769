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

import asyncpg
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
