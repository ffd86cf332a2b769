"""The consistency checker (`corpsale check`): compares every process run with PostgreSQL and
reports what breaks the rules: a lost or duplicated history row, task or notification; an open
task of a closed opportunity; a stage that differs between the run and the database; a run
stuck on a failing workflow task; an open opportunity whose process is gone; an open task whose
workflow (its reminders) is not running, or a task ended over a minute ago whose workflow still
runs; a lead that reached the sale over a minute ago and still has no process (R3); a webhook
subscriber stopped at an event it did not take after its last attempt; a process's writes that no
worker confirms (R28).

It first gives the writes of the processes it checks a few seconds to be confirmed (until then
their rows may be ahead of their runs' history, activities/data/journal.py), and checks an opportunity
whose writes are still not confirmed for that alone."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.data import consistency, journal, leads, webhooks
from workflows import contract as c
from workflows import patches
from workflows.contract import StateView

# What a task workflow is given to end after its task has (visibility catches up meanwhile).
TASK_SETTLE = timedelta(minutes=1)
# How long the checker waits for the writes of the processes it checks to be confirmed.
WRITES_SETTLE = timedelta(seconds=15)


@dataclass
class Violation:
    opportunity_id: str
    kind: str
    detail: str


@dataclass
class Report:
    opportunities: int = 0
    runs: int = 0
    violations: list[Violation] = field(default_factory=list)
    # Open runs that take a patch's old branch, by patch (docs/versioning.md: when none do, the
    # patch can be retired).
    old_branches: dict[str, int] = field(default_factory=dict)

    def add(self, opportunity_id: str, kind: str, detail: str) -> None:
        self.violations.append(Violation(opportunity_id, kind, detail))

    def totals(self) -> dict[str, int]:
        return dict(Counter(v.kind for v in self.violations))

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "totals": self.totals()}


def _check_rows(report: Report, row: asyncpg.Record) -> None:
    opp = row["id"]
    visits = list(row["visits"] or [])
    if visits != list(range(1, len(visits) + 1)):
        report.add(opp, "history row lost or duplicated", f"visit numbers {visits}")
    open_visits = row["unfinished_visits"]
    if open_visits > (0 if row["closed"] else 1):
        report.add(opp, "history row not closed", f"{open_visits} visits without left_at")
    if row["closed"] and row["open_tasks"]:
        report.add(opp, "open task of a closed opportunity", ", ".join(row["open_tasks"]))
    if row["assigned"] != row["tasks"] or row["assigned_rows"] != row["assigned"]:
        report.add(
            opp,
            "notification lost or duplicated",
            f"{row['tasks']} tasks, {row['assigned_rows']} task notifications",
        )
    numbers = list(row["event_numbers"] or [])
    if numbers != list(range(1, len(numbers) + 1)):
        report.add(opp, "event numbers with a gap or a double", f"{numbers}")
    if row["events_missing"]:
        report.add(opp, "event lost", ", ".join(row["events_missing"]))


async def _check_run(report: Report, client: Client, row: asyncpg.Record) -> None:
    opp = row["id"]
    handle = client.get_workflow_handle(c.workflow_id(opp))
    try:
        desc = await handle.describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        if row["stage"] is not None and not row["closed"]:
            report.add(opp, "process lost", f"open in {row['stage']!r} but no process run exists")
        return
    report.runs += 1
    running = desc.status == WorkflowExecutionStatus.RUNNING
    if not running and not row["closed"]:
        report.add(
            opp,
            "process lost",
            f"open in {row['stage']!r}; its run is {desc.status.name if desc.status else 'unknown'}",
        )
        return
    pending = desc.raw_description.pending_workflow_task
    if running and pending.attempt > 1:
        report.add(opp, "run stuck", f"workflow task attempt {pending.attempt}")
        return
    if not running:
        return
    await _check_task_workflows(report, client, opp, list(row["open_tasks"] or []))
    try:
        state: StateView = await handle.query(
            c.QUERY_STATE, result_type=StateView, rpc_timeout=timedelta(seconds=10)
        )
    except (RPCError, WorkflowQueryFailedError) as err:
        report.add(opp, "run not answering", f"the state query failed: {err}")
        return
    await _count_old_branches(report, handle)
    if state.entering:
        return  # between two runs at a stage boundary: the next run is about to enter
    if state.stage != row["stage"]:
        report.add(opp, "stage differs", f"run: {state.stage!r}, database: {row['stage']!r}")
    run_open = sorted(t.task_id for t in state.open_tasks)
    if run_open != list(row["open_tasks"] or []):
        report.add(opp, "open tasks differ", f"run: {run_open}, database: {row['open_tasks']}")


async def _count_old_branches(report: Report, handle: WorkflowHandle[Any, Any]) -> None:
    """Count the patches the run does not have (a run started before them). A run that does not
    answer the query (a worker of a release from before it) is counted as taking every old one."""
    try:
        has: dict[str, bool] = await handle.query(
            c.QUERY_PATCHES, result_type=dict[str, bool], rpc_timeout=timedelta(seconds=10)
        )
    except (RPCError, WorkflowQueryFailedError):
        has = {}
    for patch in patches.old_branches(has):
        report.old_branches[patch] = report.old_branches.get(patch, 0) + 1


async def _check_task_workflows(report: Report, client: Client, opp: str, open_tasks: list[str]) -> None:
    """Each open task's workflow runs: it is what sends the task's reminders (R20)."""
    for task_id in open_tasks:
        try:
            desc = await client.get_workflow_handle(c.task_workflow_id(task_id)).describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            report.add(opp, "task workflow lost", f"{task_id} is open but has no workflow")
            continue
        if desc.status != WorkflowExecutionStatus.RUNNING:
            status = desc.status.name if desc.status else "unknown"
            report.add(opp, "task workflow lost", f"{task_id} is open but its workflow is {status}")


async def _check_ended_tasks(report: Report, client: Client, rows: list[asyncpg.Record]) -> None:
    """No task workflow runs on long after its task ended (it would send stale reminders)."""
    ended = {t: row["id"] for row in rows for t in row["ended_tasks"] or []}
    if not ended:
        return
    query = f"WorkflowType = '{c.TASK_WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'"
    async for wf in client.list_workflows(query):
        task_id = wf.id.removeprefix(c.task_workflow_id(""))
        if task_id in ended:
            report.add(ended[task_id], "task workflow left running", f"{task_id} ended, its workflow runs")


async def check(client: Client, conn: asyncpg.Connection, opportunity_ids: list[str] | None = None) -> Report:
    """Check every opportunity, or those given."""
    report = Report()
    unsettled = await _settled(conn, opportunity_ids)
    rows = await consistency.opportunity_rows(conn, opportunity_ids, TASK_SETTLE)
    for row in rows:
        report.opportunities += 1
        if row["id"] in unsettled:
            w = unsettled[row["id"]]
            since = f" since {w['since']:%Y-%m-%d %H:%M:%S} UTC" if w["since"] else ""
            report.add(
                row["id"],
                "writes not confirmed",
                f"{w['writes']} writes not confirmed{since}, {w['ops']} task workflow operations not"
                " carried out: is a worker of its task queue running?",
            )
            continue
        _check_rows(report, row)
        await _check_run(report, client, row)
    await _check_ended_tasks(report, client, [r for r in rows if r["id"] not in unsettled])
    await _check_leads(report, conn, opportunity_ids)
    for row in await webhooks.stopped(conn):  # a dead delivery: its subscriber gets nothing more
        if opportunity_ids is None or row["opportunity_id"] in opportunity_ids:
            detail = f"{row['url']} stopped {row['stopped']}; `corpsale webhooks retry {row['url']}` goes on"
            report.add(row["opportunity_id"], "webhook stopped", detail)
    return report


async def _settled(conn: asyncpg.Connection, opportunity_ids: list[str] | None) -> dict[str, asyncpg.Record]:
    """Wait a little for the writes of these opportunities' processes to be confirmed; those
    that are not by then."""
    deadline = asyncio.get_running_loop().time() + WRITES_SETTLE.total_seconds()
    while True:
        waiting = {r["opportunity_id"]: r for r in await journal.unconfirmed(conn, opportunity_ids)}
        if not waiting or asyncio.get_running_loop().time() > deadline:
            return waiting
        await asyncio.sleep(0.2)


async def _check_leads(report: Report, conn: asyncpg.Connection, opportunity_ids: list[str] | None) -> None:
    for row in await consistency.late_leads(conn):
        if opportunity_ids is not None and leads.opportunity_id_for(row["lead_id"]) not in opportunity_ids:
            continue
        if row["last_error"] is not None:
            report.add(
                leads.opportunity_id_for(row["lead_id"]),
                "lead start failed",
                f"lead {row['lead_id']}: {row['last_error']}",
            )
            continue
        report.add(
            leads.opportunity_id_for(row["lead_id"]),
            "lead not started",
            f"lead {row['lead_id']} reached the sale {row['waiting'].total_seconds():.0f} s ago and has no"
            " process yet: is a worker with the lead relay (CORPSALE_LEAD_RELAY) running?",
        )
