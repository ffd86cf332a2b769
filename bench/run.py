"""The benchmark: `python -m bench.run [--n 100 --n 1000] [--persistence memory file] [--path revisit]`.

For each size N and each dev-server persistence it pushes N opportunities concurrently through
a path (`happy`: 9 task completions to Closed won; `revisit`: back from Proposal to
Qualification, so three stages are entered twice, then on to Closed won) with the real worker and
PostgreSQL, then the same path through the floor (bench/floor.py: the product's shape with nothing
else) and through the bare baseline workflows (bench/baseline.py), and reports each, the product's
ratios to them, and what one opportunity cost the dev server in each (requests by kind, workflow
tasks, history events, CPU). `--rate` starts opportunities at a fixed rate instead of keeping
`--concurrency` in flight (latency at a chosen load); `--open N` measures the worker's memory with
N opportunities open. `--rounds R` runs each kind R times, the order turned round every round
(the product first, then last, ...), and reports each kind over all its rounds: what the machine
does meanwhile then weighs on all alike. `--pin` gives the dev server half of the CPUs and the
rest the other half. The workflows run as production runs them, outside the SDK's sandbox;
`--sandbox` runs them in it, as the tests do. Results go to bench/results/ (JSON) and
docs/benchmarks.md (a table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client

from activities.data.db import create_pool, migrate
from bench.baseline import STAGE_TASKS, BaselineProcess
from bench.floor import FloorProcess
from bench.harness import (
    RETRIED,
    ROOT,
    Load,
    check_database,
    dev_server,
    drained,
    drive,
    execute_update,
    percentiles,
    pin_server,
    postgres_cpu_ms,
    server_costs,
    stop_on_signals,
    worker_process,
)
from bench.paths import PATHS, STAGES, Segment, history_costs
from bench.report import Figures, save_json, write_report
from worker.database import embedded_server
from workflows import contract as c
from workflows.state import ProcessInput


async def product_run(
    client: Client, queue: str, run_id: str, n: int, load: Load, path: list[Segment]
) -> tuple[float, list[float]]:
    async def one(i: int, latencies: list[float]) -> None:
        opp, owner = f"bench-{run_id}-{i}", f"owner-{i % 20}"  # the owner does the work (R24)
        handle = await client.start_workflow(
            c.WORKFLOW_TYPE,
            ProcessInput(
                opportunity_id=opp,
                actor="bench",
                new=c.NewOpportunity(title=f"Deal {i}", customer="Bench Ltd", owner=owner),
            ),
            id=c.workflow_id(opp),
            task_queue=queue,
        )
        for visit, segment in enumerate(path, start=1):
            tasks = STAGES[segment.stage].tasks
            for k, task in enumerate(tasks[: segment.tasks()]):
                await load.pause()
                began = time.perf_counter()
                await execute_update(
                    handle,
                    c.UPDATE_COMPLETE_TASK,
                    {"task_id": f"{opp}:v{visit}:{task.key}", "actor": owner},
                )
                if k == len(tasks) - 1:  # the stage's last task: the answer comes
                    latencies.append((time.perf_counter() - began) * 1000)  # after the move
            if segment.move_to is not None:
                await execute_update(
                    handle, c.UPDATE_CHANGE_STAGE, {"stage": STAGES[segment.move_to].stage, "actor": owner}
                )
        await handle.result()

    return await drive("corporate sale", n, load, one)


def bare_run(kind: str, workflow: type[BaselineProcess] | type[FloorProcess]) -> Run:
    """The run of the bare workflows `workflow` (the baseline or the floor): the same path."""

    async def run(
        client: Client, queue: str, run_id: str, n: int, load: Load, path: list[Segment]
    ) -> tuple[float, list[float]]:
        async def one(i: int, latencies: list[float]) -> None:
            wid = f"{kind}-{run_id}-{i}"
            handle = await client.start_workflow(workflow.run, id=wid, task_queue=queue)
            for visit, segment in enumerate(path, start=1):
                count = STAGE_TASKS[segment.stage]
                for t in range(segment.tasks()):
                    await load.pause()
                    began = time.perf_counter()
                    await execute_update(handle, workflow.complete, f"{wid}-v{visit}-t{t}")
                    if t == count - 1:
                        latencies.append((time.perf_counter() - began) * 1000)
                if segment.move_to is not None:
                    await execute_update(handle, workflow.move, segment.move_to)
            await handle.result()

        return await drive(kind, n, load, one)

    return run


Run = Callable[[Client, str, str, int, Load, list[Segment]], Awaitable[tuple[float, list[float]]]]


async def measure(
    n: int,
    persistence: str,
    load: Load,
    path_name: str,
    database_url: str,
    *,
    baseline: bool = True,
    floor: bool = True,
    rounds: int = 1,
) -> list[Figures]:
    """Each kind's run of N opportunities, `rounds` times, one after the other on one dev server:
    the order turns round every round (the product, the floor, the baseline; then back), so that a
    machine that speeds up or slows down over the run, or a server that fills up, favours none.
    A kind's figures are those of all its rounds together (its opportunities over its time)."""
    path = PATHS[path_name]
    runs: list[tuple[str, str, Run]] = [("corporate sale", "worker.main", product_run)]
    if floor:
        runs.append(("floor", "bench.baseline_worker", bare_run("floor", FloorProcess)))
    if baseline:
        runs.append(("baseline", "bench.baseline_worker", bare_run("baseline", BaselineProcess)))
    legs: dict[str, list[Leg]] = {kind: [] for kind, _, _ in runs}
    async with dev_server(persistence) as client:
        for r in range(rounds):
            if rounds > 1:
                print(f"  round {r + 1} of {rounds}:", file=sys.stderr)
            for kind, module, run in runs if r % 2 == 0 else runs[::-1]:
                legs[kind].append(await _leg(client, kind, module, run, n, load, path, database_url))
    return [_figures(kind, legs[kind], n, persistence, path_name, load) for kind, _, _ in runs]


@dataclass
class Leg:  # one kind's run of N opportunities
    seconds: float
    latencies: list[float]
    costs: dict[str, float]
    peak: float
    retried: int


async def _leg(
    client: Client,
    kind: str,
    module: str,
    run: Run,
    n: int,
    load: Load,
    path: list[Segment],
    database_url: str,
) -> Leg:
    run_id = uuid.uuid4().hex[:8]
    queue = f"bench-{kind.replace(' ', '-')}-{run_id}"
    RETRIED.clear()
    async with worker_process(module, client, queue, database_url) as rss:
        before = await server_costs(client).reading()
        before |= {"worker CPU ms": rss.cpu_ms(), "PostgreSQL CPU ms": postgres_cpu_ms()}
        seconds, latencies = await run(client, queue, run_id, n, load, path)
        if kind == "corporate sale":  # the time counts until the worker has done it all
            seconds += await drained(database_url, run_id)
        peak = rss.stop()
        after = await server_costs(client).reading()  # the worker's last tasks, meanwhile
        after |= {"worker CPU ms": rss.cpu_ms(), "PostgreSQL CPU ms": postgres_cpu_ms()}
    costs = {k: (after[k] - before[k]) / n for k in before}
    costs |= await history_costs(client, kind, run_id, path)
    if kind == "corporate sale":
        await check_database(database_url, run_id, n, sum(s.tasks() for s in path))
    if RETRIED:
        print(f"  {len(RETRIED)} updates sent again; the first: {RETRIED[0]}", file=sys.stderr)
    cpu = ", ".join(f"{k.removesuffix(' CPU ms')} {costs[k]:.0f}" for k in costs if k.endswith("CPU ms"))
    print(f"  {kind}: {n / seconds:.2f} opportunities/s; CPU ms a deal: {cpu}", file=sys.stderr)
    return Leg(seconds, latencies, costs, peak, len(RETRIED))


def _figures(kind: str, legs: list[Leg], n: int, persistence: str, path_name: str, load: Load) -> Figures:
    """A kind's figures over its rounds: throughput is all its opportunities over all its time,
    costs the mean per opportunity, the peak the highest."""
    seconds = sum(leg.seconds for leg in legs)
    completions = sum(s.tasks() for s in PATHS[path_name])
    costs = {k: round(sum(leg.costs[k] for leg in legs) / len(legs), 1) for k in legs[0].costs}
    return Figures(
        kind=kind,
        n=n,
        persistence=persistence,
        path=path_name,
        load=load.describe(),
        seconds=round(seconds, 2),
        opportunities_per_s=round(n * len(legs) / seconds, 2),
        completions_per_s=round(completions * n * len(legs) / seconds, 1),
        transition_ms=percentiles([t for leg in legs for t in leg.latencies]),
        history_events=int(costs["opportunity history events"]),
        worker_peak_rss_mib=max(leg.peak for leg in legs),
        retried_updates=sum(leg.retried for leg in legs),
        costs=costs,
        rounds=[round(n / leg.seconds, 2) for leg in legs] if len(legs) > 1 else [],
    )


async def open_run(n: int, persistence: str, load: Load, database_url: str) -> Figures:
    """Open N opportunities (each waits at Qualification with its two task children) and measure
    the worker's memory once all are in PostgreSQL."""
    run_id = uuid.uuid4().hex[:8]
    async with dev_server(persistence) as client:
        queue = f"bench-open-{run_id}"
        async with worker_process("worker.main", client, queue, database_url) as rss:

            async def one(i: int, _: list[float]) -> None:
                opp = f"bench-{run_id}-{i}"
                await client.start_workflow(
                    c.WORKFLOW_TYPE,
                    ProcessInput(
                        opportunity_id=opp,
                        actor="bench",
                        new=c.NewOpportunity(title=f"Deal {i}", customer="Bench Ltd", owner="owner"),
                    ),
                    id=c.workflow_id(opp),
                    task_queue=queue,
                )

            began = time.perf_counter()
            await drive("open opportunities", n, load, one)
            pool = await create_pool(database_url)
            try:
                expected = n * len(STAGES[0].tasks)
                sql = "SELECT count(*) FROM tasks WHERE opportunity_id LIKE $1 AND status = 'open'"
                while (opened := await pool.fetchval(sql, f"bench-{run_id}-%")) < expected:
                    print(f"\r  tasks in PostgreSQL: {opened}/{expected}", end="", file=sys.stderr)
                    await asyncio.sleep(1)
                print(file=sys.stderr)
            finally:
                await pool.close()
            seconds = time.perf_counter() - began
            await asyncio.sleep(5)  # settle: the last workflow tasks and cache evictions
            return Figures(
                kind="open opportunities",
                n=n,
                persistence=persistence,
                path="open",
                load=load.describe(),
                seconds=round(seconds, 2),
                opportunities_per_s=round(n / seconds, 2),
                worker_peak_rss_mib=rss.stop(),
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="opportunities (repeatable)")
    parser.add_argument("--persistence", nargs="+", choices=["memory", "file"], default=["memory", "file"])
    parser.add_argument("--path", choices=sorted(PATHS), default="happy", help="the way through the stages")
    parser.add_argument("--concurrency", type=int, default=200, help="opportunities in flight (at most)")
    parser.add_argument("--rate", type=float, help="start this many opportunities per second")
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="seconds before each task completion (tasks left open a while)",
    )
    parser.add_argument(
        "--open", type=int, metavar="N", help="only open N opportunities and measure the worker's memory"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each kind this many times, the order turned round every round; a kind's figures"
        " are those of all its rounds",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the dev server on half of the CPUs, everything else on the other half, as in production,"
        " where it runs apart: the throughput is then set by what the commands cost the server",
    )
    parser.add_argument("--without-baseline", action="store_true", help="leave out the baseline")
    parser.add_argument("--without-floor", action="store_true", help="leave out the floor")
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="run the workflows (the product's and the floor's) in the SDK's sandbox, as the tests do;"
        " without it they run as production runs them",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"argument --rounds: {args.rounds}: give 1 or more")
    os.environ["CORPSALE_WORKFLOW_SANDBOX"] = "true" if args.sandbox else "false"  # for every worker
    if args.pin:  # before PostgreSQL, the dev server and the workers are started
        print(pin_server(), file=sys.stderr)
    stop_on_signals()
    load = Load(args.concurrency, args.rate, args.think)
    results: list[Figures] = []
    with (
        tempfile.TemporaryDirectory(prefix="corpsale-bench-pg-") as pg,
        embedded_server(Path(pg)) as server,
    ):
        database_url = server.get_uri()
        pool = await create_pool(database_url)
        await migrate(pool)
        await pool.close()
        for persistence in args.persistence:
            if args.open:
                print(f"{args.open} open opportunities, dev server {persistence}:", file=sys.stderr)
                results.append(await open_run(args.open, persistence, load, database_url))
                continue
            for n in args.n or [100, 1000]:
                print(f"N = {n}, {args.path} path, dev server {persistence}:", file=sys.stderr)
                results += await measure(
                    n,
                    persistence,
                    load,
                    args.path,
                    database_url,
                    baseline=not args.without_baseline,
                    floor=not args.without_floor,
                    rounds=args.rounds,
                )
                save_json(results, args.out)  # kept if a later size is stopped
    write_report(results, args.out)


if __name__ == "__main__":
    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())
