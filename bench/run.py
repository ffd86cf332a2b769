"""The benchmark: `python -m bench.run [--n 100 --n 1000] [--persistence memory file]`.

For each size N and each dev-server persistence it pushes N opportunities concurrently through
the happy path (9 task completions to Closed won) with the real worker and PostgreSQL, then the
same calls through the bare baseline workflows (bench/baseline.py), and reports both and their
ratio. Results go to bench/results/ (JSON) and docs/benchmarks.md (a table).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.db import create_pool, migrate
from bench.baseline import STAGE_TASKS, BaselineProcess
from worker.database import embedded_server
from workflows import contract as c
from workflows.definition import load_default_definition
from workflows.opportunity import AMOUNT_ATTR, OWNER_ATTR, STAGE_ATTR, CorporateSaleWorkflow
from workflows.state import ProcessInput

ROOT = Path(__file__).parent.parent
HAPPY_PATH = [s for s in load_default_definition().stages]
SQLITE_PRAGMAS = ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]


@dataclass
class Figures:
    kind: str
    n: int
    persistence: str
    seconds: float = 0.0
    opportunities_per_s: float = 0.0
    completions_per_s: float = 0.0
    transition_ms: dict[str, float] = field(default_factory=dict)
    history_events: int = 0
    worker_peak_rss_mib: float = 0.0


class Progress:
    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self._shown = label, total, 0, 0.0

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self._shown > 0.5 or self.done == self.total:
            self._shown = now
            width = 30
            filled = width * self.done // self.total
            print(
                f"\r  {self.label:<34} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}",
                end="",
                file=sys.stderr,
                flush=True,
            )
            if self.done == self.total:
                print(file=sys.stderr)


def percentiles(samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        return {}
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1)}


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.proc, self.peak = psutil.Process(pid), 0
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            await asyncio.sleep(0.25)

    def stop(self) -> float:
        self._task.cancel()
        return round(self.peak / 2**20, 1)


async def start_worker(module: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def drive(
    label: str, n: int, concurrency: int, one: Callable[[int, list[float]], Awaitable[None]]
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    progress = Progress(label, n)
    gate = asyncio.Semaphore(concurrency)

    async def bounded(i: int) -> None:
        async with gate:
            await one(i, latencies)
        progress.step()

    began = time.perf_counter()
    await asyncio.gather(*(bounded(i) for i in range(n)))
    return time.perf_counter() - began, latencies


async def product_run(
    client: Client, queue: str, run_id: str, n: int, conc: int
) -> tuple[float, list[float]]:
    async def one(i: int, latencies: list[float]) -> None:
        opp = f"bench-{run_id}-{i}"
        handle = await client.start_workflow(
            CorporateSaleWorkflow.run,
            ProcessInput(
                opportunity_id=opp,
                actor="bench",
                new=c.NewOpportunity(title=f"Deal {i}", customer="Bench Ltd", owner=f"owner-{i % 20}"),
            ),
            id=c.workflow_id(opp),
            task_queue=queue,
        )
        for visit, stage in enumerate(HAPPY_PATH, start=1):
            for k, task in enumerate(stage.tasks):
                began = time.perf_counter()
                await handle.execute_update(
                    c.UPDATE_COMPLETE_TASK,
                    {"task_id": f"{opp}:v{visit}:{task.key}", "actor": "bench"},
                )
                if k == len(stage.tasks) - 1:  # the stage's last task: the answer comes
                    latencies.append((time.perf_counter() - began) * 1000)  # after the move
        await handle.result()

    return await drive("corporate sale", n, conc, one)


async def baseline_run(
    client: Client, queue: str, run_id: str, n: int, conc: int
) -> tuple[float, list[float]]:
    async def one(i: int, latencies: list[float]) -> None:
        wid = f"baseline-{run_id}-{i}"
        handle = await client.start_workflow(BaselineProcess.run, id=wid, task_queue=queue)
        for stage, count in enumerate(STAGE_TASKS):
            for t in range(count):
                began = time.perf_counter()
                await handle.execute_update(BaselineProcess.complete, f"{wid}-s{stage}-t{t}")
                if t == count - 1:
                    latencies.append((time.perf_counter() - began) * 1000)
        await handle.result()

    return await drive("baseline", n, conc, one)


async def history_events(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events)


async def measure(n: int, persistence: str, conc: int, database_url: str) -> list[Figures]:
    run_id = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="corpsale-bench-") as tmp:
        extra = SQLITE_PRAGMAS if persistence == "file" else []
        async with await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
            dev_server_database_filename=str(Path(tmp) / "temporal.db") if persistence == "file" else None,
            dev_server_extra_args=extra,
            search_attributes=[STAGE_ATTR, OWNER_ATTR, AMOUNT_ATTR],
            data_converter=pydantic_data_converter,
        ) as env:
            client = env.client
            results = []
            for kind, module, run in (
                ("corporate sale", "worker.main", product_run),
                ("baseline", "bench.baseline_worker", baseline_run),
            ):
                queue = f"bench-{kind.replace(' ', '-')}-{run_id}"
                worker_env = {
                    **os.environ,
                    "TEMPORAL_ADDRESS": client.service_client.config.target_host,
                    "DATABASE_URL": database_url,
                    "CORPSALE_TASK_QUEUE": queue,
                    "PYTHONPATH": str(ROOT),
                }
                proc = await start_worker(module, worker_env)
                rss = RssSampler(proc.pid)
                try:
                    seconds, latencies = await run(client, queue, run_id, n, conc)
                finally:
                    peak = rss.stop()
                    proc.terminate()
                    await proc.wait()
                prefix = "bench" if kind == "corporate sale" else "baseline"
                events = await history_events(
                    client,
                    c.workflow_id(f"{prefix}-{run_id}-0") if prefix == "bench" else f"baseline-{run_id}-0",
                )
                results.append(
                    Figures(
                        kind=kind,
                        n=n,
                        persistence=persistence,
                        seconds=round(seconds, 2),
                        opportunities_per_s=round(n / seconds, 2),
                        completions_per_s=round(9 * n / seconds, 1),
                        transition_ms=percentiles(latencies),
                        history_events=events,
                        worker_peak_rss_mib=peak,
                    )
                )
            return results


async def check_database(database_url: str, expected: int) -> None:
    """The figures count only if the work is really in PostgreSQL."""
    pool = await create_pool(database_url)
    try:
        won = await pool.fetchval(
            "SELECT count(*) FROM opportunities WHERE id LIKE 'bench-%' AND stage = 'Closed won'"
        )
        tasks = await pool.fetchval(
            "SELECT count(*) FROM tasks WHERE opportunity_id LIKE 'bench-%' AND status = 'completed'"
        )
        if (won, tasks) != (expected, 9 * expected):
            raise SystemExit(
                f"database check failed: {won} won, {tasks} tasks; expected {expected} and {9 * expected}"
            )
    finally:
        await pool.close()


def write_report(results: list[Figures], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"bench-{stamp}.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    lines = [
        "| run | N | persistence | opp/s | completions/s | ratio to baseline | transition p50 / p95 / p99 ms"
        " | history events | worker peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        base = next(
            b for b in results if b.kind == "baseline" and (b.n, b.persistence) == (r.n, r.persistence)
        )
        ratio = f"{r.opportunities_per_s / base.opportunities_per_s:.2f}" if r.kind != "baseline" else "1"
        t = r.transition_ms
        lines.append(
            f"| {r.kind} | {r.n} | {r.persistence} | {r.opportunities_per_s} | {r.completions_per_s}"
            f" | {ratio} | {t.get('p50')} / {t.get('p95')} / {t.get('p99')} | {r.history_events}"
            f" | {r.worker_peak_rss_mib} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    doc = ROOT / "docs" / "benchmarks.md"
    marker = "<!-- results -->"
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{marker}\n"
    head, _, earlier = text.partition(marker)
    run = f"\n### {stamp}: `python -m bench.run {' '.join(sys.argv[1:])}`\n\n{table}\n"
    doc.write_text(f"{head}{marker}{run}{earlier}")  # newest first; earlier runs stay


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="opportunities (repeatable)")
    parser.add_argument("--persistence", nargs="+", choices=["memory", "file"], default=["memory", "file"])
    parser.add_argument("--concurrency", type=int, default=200, help="opportunities in flight")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    sizes = args.n or [100, 1000]
    results: list[Figures] = []
    with (
        tempfile.TemporaryDirectory(prefix="corpsale-bench-pg-") as pg,
        embedded_server(Path(pg)) as server,
    ):
        database_url = server.get_uri()
        pool = await create_pool(database_url)
        await migrate(pool)
        await pool.close()
        done = 0
        for n in sizes:
            for persistence in args.persistence:
                print(f"N = {n}, dev server {persistence}:", file=sys.stderr)
                results += await measure(n, persistence, args.concurrency, database_url)
                done += n
                await check_database(database_url, done)
    write_report(results, args.out)


if __name__ == "__main__":
    asyncio.run(main())
