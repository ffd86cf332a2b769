"""Webhooks under load: `python -m bench.webhooks [--n 300] [--concurrency 50] [--rounds 2]`.

In one run (a dev server in memory, an embedded PostgreSQL, one worker with its relay), it pushes
N opportunities through the happy path at full load without a subscriber and with one, turn about,
`--rounds` times each: the process's throughput with a subscriber against without. The subscriber
is a local aiohttp server that answers 204 and notes when each event arrived. Then, at half the
throughput measured with the subscriber, it measures the delay from each change (the event's
time) to its arrival, p50/p95/p99, and the events delivered per second. Every event of every
opportunity must arrive, each id at least once. The table goes to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from statistics import mean
from typing import Any

import asyncpg
from aiohttp import web

from activities.data import webhooks
from bench.harness import (
    Load,
    check_database,
    dev_server,
    embedded_database,
    percentiles,
    record,
    stop_on_signals,
    worker_process,
)
from bench.paths import PATHS
from bench.run import product_run


class Subscriber:
    """Notes the first arrival of each event (wall clock) and counts repeats."""

    def __init__(self) -> None:
        self.arrived: dict[str, tuple[float, str]] = {}  # id -> (arrival, the event's time)
        self.repeats = 0
        self.url = ""

    async def _take(self, request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        if event["id"] in self.arrived:
            self.repeats += 1
        else:
            self.arrived[event["id"]] = (time.time(), event["time"])
        return web.Response(status=204)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Subscriber]:
        app = web.Application()
        app.router.add_post("/events", self._take)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/events"
        try:
            yield self
        finally:
            await runner.cleanup()


async def _drained(pool: asyncpg.Pool, url: str, run_id: str, subscriber: Subscriber) -> tuple[int, float]:
    """Wait until every event of the run's opportunities arrived; (how many, seconds waited)."""
    began = time.perf_counter()
    while True:
        ids = {
            r["id"]
            for r in await pool.fetch(
                "SELECT id FROM events WHERE opportunity_id LIKE $1", f"bench-{run_id}-%"
            )
        }
        missing = ids - subscriber.arrived.keys()
        if not missing:
            return len(ids), time.perf_counter() - began
        print(f"\r  events still on their way: {len(missing)}   ", end="", file=sys.stderr)
        await asyncio.sleep(0.5)


async def _round(
    client: Any, pool: asyncpg.Pool, database_url: str, n: int, load: Load, subscriber: Subscriber | None
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    path = PATHS["happy"]
    queue = f"bench-webhooks-{run_id}"
    if subscriber is not None:
        async with pool.acquire() as conn:
            await webhooks.add(conn, subscriber.url, ["*"], webhooks.new_secret(), "bench")
    try:
        async with worker_process("worker.main", client, queue, database_url):
            seconds, latencies = await product_run(client, queue, run_id, n, load, path)
            await check_database(database_url, run_id, n, sum(s.tasks() for s in path))
            figures: dict[str, Any] = {
                "subscriber": subscriber is not None,
                "load": load.describe(),
                "opportunities_per_s": round(n / seconds, 2),
                "transition_ms": percentiles(latencies),
            }
            if subscriber is not None:
                events, drain = await _drained(pool, subscriber.url, run_id, subscriber)
                ours = [subscriber.arrived[i] for i in subscriber.arrived if i.startswith(f"bench-{run_id}-")]
                delays = [(at - datetime.fromisoformat(t).timestamp()) * 1000 for at, t in ours]
                span = max(at for at, _ in ours) - min(at for at, _ in ours)
                figures |= {
                    "events": events,
                    "events_per_s": round(events / span, 1),
                    "delay_ms": percentiles(delays),
                    "drained_after_s": round(drain, 1),
                    "repeats": subscriber.repeats,
                }
            return figures
    finally:
        if subscriber is not None:
            async with pool.acquire() as conn:
                await webhooks.remove(conn, subscriber.url)


def table(rounds: list[dict[str, Any]], half: dict[str, Any]) -> str:
    without = [r["opportunities_per_s"] for r in rounds if not r["subscriber"]]
    with_ = [r["opportunities_per_s"] for r in rounds if r["subscriber"]]
    lines = [
        "| run | load | opp/s | events delivered/s | delay change → arrival p50 / p95 / p99 ms | repeats |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in [*rounds, half]:
        d = r.get("delay_ms", {})
        lines.append(
            f"| {'with a subscriber' if r['subscriber'] else 'without'} | {r['load']}"
            f" | {r['opportunities_per_s']}"
            f" | {r.get('events_per_s', '—')}"
            f" | {' / '.join(str(d.get(p)) for p in ('p50', 'p95', 'p99')) if d else '—'}"
            f" | {r.get('repeats', '—')} |"
        )
    ratio = mean(with_) / mean(without)
    lines.append(f"\nThroughput with a subscriber / without (means of the rounds above): **{ratio:.2f}**.")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="opportunities per round")
    parser.add_argument("--concurrency", type=int, default=50, help="opportunities in flight at full load")
    parser.add_argument("--rounds", type=int, default=2, help="rounds without and with a subscriber, each")
    args = parser.parse_args()
    stop_on_signals()
    rounds: list[dict[str, Any]] = []
    async with (
        embedded_database() as (database_url, pool),
        dev_server("memory") as client,
        Subscriber().serving() as subscriber,
    ):
        full = Load(args.concurrency)
        for i in range(args.rounds * 2):
            sub = subscriber if i % 2 else None  # without, with, without, with ...
            print(f"round {i + 1}: {'with' if sub else 'without'} a subscriber", file=sys.stderr)
            rounds.append(await _round(client, pool, database_url, args.n, full, sub))
        rate = round(mean(r["opportunities_per_s"] for r in rounds if r["subscriber"]) / 2, 2)
        print(f"half load: {rate} opportunities/s", file=sys.stderr)
        half = await _round(client, pool, database_url, args.n, Load(10_000, rate), subscriber)
    text = table(rounds, half)
    record("<!-- webhooks -->", "Webhooks (issue 16)", text)


if __name__ == "__main__":
    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())
