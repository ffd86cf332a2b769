"""A deal that lives for years (R21): `python -m bench.long_lived [--moves 5000] [--updates 5000]`.

One opportunity, with an ad-hoc task kept open throughout, is bounced through `--moves` stage
changes and `--updates` data updates (alternating, each an update through `SaleClient`, which
sends a "not now" again itself) on the real worker and PostgreSQL. Reported: the time, how many
runs the process went through, the longest run history, the updates any one run accepted, and
the checks that every command was applied once (a stage visit per move, the last data written,
the ad-hoc task still open in the same workflow run). Results go to bench/results/ (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from activities.data.db import create_pool, migrate
from bench.harness import ROOT, Progress, dev_server, stop_on_signals, worker_process
from starter.client import SaleClient
from worker.database import embedded_server
from workflows import contract as c

STAGES = ["Presentation", "Proposal", "Contracting", "Qualification"]


@dataclass
class LongLived:
    moves: int
    updates: int
    seconds: float = 0.0
    commands_per_s: float = 0.0
    runs: int = 0
    longest_run_events: int = 0
    most_updates_in_a_run: int = 0
    visits: int = 0
    adhoc_task_open_in_its_first_run: bool = False
    applied_once: bool = False


async def _runs(client: Client, workflow_id: str) -> tuple[int, int, int]:
    """Runs of the process, its longest history, and the most updates one run accepted."""
    runs, longest, most_updates = 0, 0, 0
    accepted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        history = await client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
        runs += 1
        longest = max(longest, len(history.events))
        most_updates = max(most_updates, sum(e.event_type == accepted for e in history.events))
    return runs, longest, most_updates


async def _started(client: Client, workflow_id: str) -> str:
    """The run id of a task workflow, once the journal relay has started it (about a second after
    the write that made the task is confirmed)."""
    for _ in range(300):
        with contextlib.suppress(RPCError):
            return (await client.get_workflow_handle(workflow_id).describe()).run_id
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{workflow_id} was not started within 30 s")


async def measure(moves: int, updates: int, database_url: str) -> LongLived:
    figures = LongLived(moves=moves, updates=updates)
    queue, opp = f"bench-long-{uuid.uuid4().hex[:8]}", f"bench-long-{uuid.uuid4().hex[:8]}"
    async with dev_server("memory") as client, worker_process("worker.main", client, queue, database_url):
        sale = SaleClient(client, queue)
        new = c.NewOpportunity(title="A deal for years", customer="Initech", owner="alice")
        await sale.start(opp, actor="bench", new=new)
        await asyncio.sleep(1)
        await sale.add_task(opp, c.AddTask(title="Kept open", actor="bench", request_id="kept"))
        adhoc = c.task_workflow_id(f"{opp}:adhoc1")
        task_run = await _started(client, adhoc)
        progress = Progress("stage changes and updates", moves + updates)
        began = time.perf_counter()
        for i in range(max(moves, updates)):
            if i < moves:
                move = c.ChangeStage(stage=STAGES[i % len(STAGES)], actor="bench", request_id=f"m{i}")
                await sale.change_stage(opp, move)
                progress.step()
            if i < updates:
                data = c.UpdateOpportunity(meeting_notes=f"call {i}", actor="bench", request_id=f"u{i}")
                await sale.update_opportunity(opp, data)
                progress.step()
        figures.seconds = round(time.perf_counter() - began, 1)
        figures.commands_per_s = round((moves + updates) / figures.seconds, 1)
        runs = await _runs(client, c.workflow_id(opp))
        figures.runs, figures.longest_run_events, figures.most_updates_in_a_run = runs
        task = await client.get_workflow_handle(adhoc).describe()
        state = await sale.state(opp)
        figures.adhoc_task_open_in_its_first_run = (
            task.run_id == task_run
            and task.status == WorkflowExecutionStatus.RUNNING
            and [t.task_id for t in state.open_tasks if t.adhoc] == [f"{opp}:adhoc1"]
        )
    pool = await create_pool(database_url)
    try:
        visits = "SELECT count(*) FROM stage_visits WHERE opportunity_id = $1"
        figures.visits = await pool.fetchval(visits, opp)
        notes = await pool.fetchval("SELECT meeting_notes FROM opportunities WHERE id = $1", opp)
        assigned = await pool.fetchval(
            "SELECT count(*) = count(DISTINCT task_id) FROM notifications"
            " WHERE opportunity_id = $1 AND kind = 'task_assigned'",
            opp,
        )
    finally:
        await pool.close()
    figures.applied_once = (
        figures.visits == moves + 1 and (updates == 0 or notes == f"call {updates - 1}") and bool(assigned)
    )
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--moves", type=int, default=5_000)
    parser.add_argument("--updates", type=int, default=5_000)
    args = parser.parse_args()
    stop_on_signals()
    with tempfile.TemporaryDirectory(prefix="corpsale-bench-pg-") as data, embedded_server(Path(data)) as pg:
        url = pg.get_uri()
        pool = await create_pool(url)
        await migrate(pool)
        await pool.close()
        figures = await measure(args.moves, args.updates, url)
    out = ROOT / "bench" / "results" / f"long-lived-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    print(json.dumps(asdict(figures), indent=2))
    if not (figures.applied_once and figures.adhoc_task_open_in_its_first_run):
        sys.exit("a command was lost or applied twice, or the open task did not carry over")


if __name__ == "__main__":
    asyncio.run(main())
