"""Bulk commands against one at a time: `python -m bench.bulk [--n 1000] [--in-flight 10]`.

In one run (a dev server in memory, an embedded PostgreSQL, one worker), it opens N
opportunities for one owner, reassigns them all with one bulk run (a workflow sending
`--in-flight` commands at once), then reassigns them back one at a time from a client (each
command waits for its answer, as a script's loop does), and reports opportunities per second
for both. Every opportunity must end with the owner of the last pass, reassigned once per pass.
The table goes to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid

import asyncpg
from temporalio.client import Client

from bench.harness import (
    Progress,
    dev_server,
    embedded_database,
    record,
    stop_on_signals,
    worker_process,
)
from starter.client import SaleClient
from workflows import contract as c
from workflows.contract import NewOpportunity, Reassign
from workflows.operations import BulkInput, BulkProgress, BulkSelect, Selection


async def _open(client: Client, queue: str, owner: str, n: int) -> list[str]:
    sale = SaleClient(client, queue)
    progress, gate = Progress("open opportunities", n), asyncio.Semaphore(50)

    async def one(i: int) -> str:
        opp = f"bulk-{owner}-{i:05}"
        async with gate:
            await sale.start(
                opp, actor="bench", new=NewOpportunity(title=f"Deal {i}", customer="Bench", owner=owner)
            )
            progress.step()
        return opp

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _entered(pool: asyncpg.Pool, owner: str, n: int) -> None:
    """Until every process has entered its first stage (its tasks are in PostgreSQL)."""
    sql = "SELECT count(*) FROM opportunities WHERE owner = $1 AND stage IS NOT NULL"
    for _ in range(3600):
        if await pool.fetchval(sql, owner) >= n:
            return
        await asyncio.sleep(1)
    raise SystemExit("the opportunities did not all enter their first stage within an hour")


async def _bulk(client: Client, queue: str, owner: str, heir: str, in_flight: int) -> float:
    bulk_id = uuid.uuid4().hex[:12]
    run = BulkSelect(
        bulk_id=bulk_id,
        command=c.SIGNAL_REASSIGN,
        payload={"owner": heir, "actor": "bench"},
        query=f"owner={owner}",
        selection=Selection(owner=owner),
        actor="bench",
    )
    began = time.perf_counter()
    handle = await client.start_workflow(
        c.BULK_WORKFLOW_TYPE,
        BulkInput(run=run, update=c.UPDATE_REASSIGN, in_flight=in_flight),
        id=c.bulk_workflow_id(bulk_id),
        task_queue=queue,
        result_type=BulkProgress,
    )
    progress = await handle.result()
    seconds = time.perf_counter() - began
    if progress.counts.done != progress.total:
        raise SystemExit(f"the bulk run did not reassign every opportunity: {progress.counts}")
    return seconds


async def _one_at_a_time(client: Client, queue: str, opps: list[str], heir: str) -> float:
    sale, progress = SaleClient(client, queue), Progress("one at a time", len(opps))
    began = time.perf_counter()
    for opp in opps:
        await sale.send(opp, Reassign(owner=heir, actor="bench"))
        progress.step()
    return time.perf_counter() - began


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="opportunities")
    parser.add_argument("--in-flight", type=int, default=10, help="the bulk run's commands at once")
    args = parser.parse_args()
    stop_on_signals()
    owner, heir = f"a{uuid.uuid4().hex[:6]}", f"b{uuid.uuid4().hex[:6]}"
    async with embedded_database() as (database_url, pool):
        # The commands are the operator's, an admin's: each process checks who may (R24).
        await pool.execute("INSERT INTO people (name, role) VALUES ('bench', 'admin') ON CONFLICT DO NOTHING")
        async with dev_server("memory") as client:
            queue = f"bench-bulk-{owner}"
            async with worker_process("worker.main", client, queue, database_url):
                opps = await _open(client, queue, owner, args.n)
                await _entered(pool, owner, args.n)
                print("bulk reassign ...", file=sys.stderr)
                bulk_s = await _bulk(client, queue, owner, heir, args.in_flight)
                single_s = await _one_at_a_time(client, queue, opps, owner)
        reassigned = "SELECT count(*) FROM events WHERE opportunity_id = ANY($1) AND type = $2"
        moved = await pool.fetchval(reassigned, opps, "opportunity.reassigned")
        owned = "SELECT count(*) FROM opportunities WHERE id = ANY($1) AND owner = $2"
        back = await pool.fetchval(owned, opps, owner)
        if (moved, back) != (2 * args.n, args.n):
            raise SystemExit(f"check failed: {moved} reassignments, {back} back with {owner}")
    table = "\n".join(
        [
            "| how | opportunities | seconds | opportunities/s |",
            "| --- | --- | --- | --- |",
            f"| one bulk run, {args.in_flight} in flight | {args.n} | {bulk_s:.1f} | {args.n / bulk_s:.1f} |",
            f"| one at a time from a client | {args.n} | {single_s:.1f} | {args.n / single_s:.1f} |",
        ]
    )
    record("<!-- bulk -->", "Bulk commands (issue 17)", table)


if __name__ == "__main__":
    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())
