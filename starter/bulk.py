"""`corpsale bulk`: one command to many opportunities, as a workflow that survives a crash.

`bulk reassign|move|close-lost --where QUERY ...` fixes the selection (open opportunities that
match every term of QUERY) when it starts, prints the run's id and shows a progress bar;
Ctrl-C detaches (the run goes on), `bulk status ID` re-attaches, `bulk cancel ID` stops it.
Each opportunity gets the same exactly-once command as one sent alone, from the operator who
started the run; what the process refused is listed with its reason at the end."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowQueryFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.data import bulk, lookups
from activities.data.errors import Refused
from starter.common import CliError, acting_as, add_command, command_parser, default_actor, temporal, with_db
from starter.output import print_json
from workflows import contract as c
from workflows.fields import DEFAULT_PROCESS
from workflows.operations import BulkInput, BulkProgress, BulkSelect, MigrationPlan, Selection

POLL = 0.5
LINE_EVERY = 10.0  # seconds between two progress lines where stderr is not a terminal


def _selection(text: str) -> Selection:
    try:
        return bulk.parse_where(text)
    except Refused as err:
        raise CliError(str(err)) from None


async def _start(args: argparse.Namespace, command: str, update: str, payload: dict[str, Any]) -> None:
    selection = _selection(args.where)
    actor = await acting_as(args.actor)
    payload = {**payload, "actor": actor}
    if args.dry_run:
        chosen = await with_db(lambda conn: bulk.preview(conn, selection))
        print(f"{_open(len(chosen))} {_match(len(chosen))} {args.where!r}:", " ".join(chosen[:50]))
        if len(chosen) > 50:
            print(f"... and {len(chosen) - 50} more")
        return
    bulk_id = uuid.uuid4().hex[:12]
    run = BulkSelect(
        bulk_id=bulk_id, command=command, payload=payload, query=args.where, selection=selection, actor=actor
    )
    client = await temporal(sending_to=_task_queue())
    handle = await client.start_workflow(
        c.BULK_WORKFLOW_TYPE,
        BulkInput(run=run, update=update, in_flight=args.in_flight),
        id=c.bulk_workflow_id(bulk_id),
        task_queue=_task_queue(),
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        static_summary=f"bulk {command} of {args.where}",
    )
    print(f"bulk run {bulk_id}: {command} for {args.where!r}, by {actor}", flush=True)
    if args.detach:
        print(f"detached: `corpsale bulk status {bulk_id}` follows it")
        return
    await _follow(client, handle, bulk_id)


def _open(n: int) -> str:
    return f"{n} open opportunit{'y' if n == 1 else 'ies'}"


def _match(n: int) -> str:
    return "matches" if n == 1 else "match"


def _task_queue() -> str:
    from worker.config import current

    return current().task_queue


def _bar(p: BulkProgress) -> str:
    n = p.counts
    sent = n.done + n.refused + n.skipped
    total = p.total or 0
    filled = int(30 * sent / total) if total else 0
    return (
        f"[{'#' * filled}{'.' * (30 - filled)}] {sent}/{total if p.total is not None else '?'}"
        f"  done {n.done}, refused {n.refused}, skipped {n.skipped}  ({p.state})"
    )


class _Shown:
    """Where the progress goes: on a terminal, a bar drawn over itself; elsewhere (a log, a
    pipe), a line when the progress has changed, the first after LINE_EVERY seconds and then at
    most one as often, so a short run prints only its report, and no frame of a run under way
    comes after the run has ended."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: str | None = None
        self.at = time.monotonic()

    def show(self, progress: BulkProgress) -> None:
        frame = _bar(progress)
        if self.tty:
            print(f"\r{frame}", end="", file=sys.stderr, flush=True)
        elif frame != self.last and time.monotonic() - self.at >= LINE_EVERY:
            print(frame, file=sys.stderr, flush=True)
            self.at = time.monotonic()
        self.last = frame

    def end(self) -> None:
        if self.tty and self.last is not None:
            print(file=sys.stderr)


async def _progress(handle: WorkflowHandle[Any, Any]) -> BulkProgress:
    progress: BulkProgress = await handle.query(
        c.QUERY_BULK_PROGRESS, result_type=BulkProgress, rpc_timeout=timedelta(seconds=10)
    )
    return progress


async def _follow(client: Client, handle: WorkflowHandle[Any, Any], bulk_id: str) -> None:
    """A progress bar until the run ends; Ctrl-C leaves it running."""
    shown = _Shown()
    try:
        while True:
            desc = await handle.describe()
            if desc.status != WorkflowExecutionStatus.RUNNING:
                break
            shown.show(await _progress(handle))
            await asyncio.sleep(POLL)
    except (KeyboardInterrupt, asyncio.CancelledError):
        shown.end()
        print(
            f"detached: the run goes on; `corpsale bulk status {bulk_id}` follows it again", file=sys.stderr
        )
        raise
    shown.end()
    await _report(bulk_id, desc.status)


async def _report(bulk_id: str, status: WorkflowExecutionStatus | None, as_json: bool = False) -> None:
    found = await with_db(lambda conn: _run_and_counts(conn, bulk_id))
    if found is None:
        raise CliError(f"no bulk run {bulk_id!r} has selected its opportunities (yet)")
    run, counts = found
    ended = {
        WorkflowExecutionStatus.COMPLETED: "done",
        WorkflowExecutionStatus.CANCELED: "canceled",
        WorkflowExecutionStatus.RUNNING: "running",
    }.get(status, status.name.lower() if status else "unknown")  # type: ignore[arg-type]
    if as_json:
        print_json({**run, "state": ended, "counts": counts.model_dump()})
        return
    sent = counts.done + counts.refused + counts.skipped
    print(
        f"bulk run {bulk_id} ({run['command']} for {run['query']!r}, by {run['created_by']}): {ended};"
        f" {run['total']} selected, {sent} sent: {counts.done} done, {counts.refused} refused,"
        f" {counts.skipped} skipped, {counts.pending} not sent"
    )
    for item in run["not_done"]:
        print(f"  {item['status']:<8} {item['opportunity_id']}: {item['reason']}")


async def _run_and_counts(conn: Any, bulk_id: str) -> tuple[dict[str, Any], Any] | None:
    run = await bulk.run_of(conn, bulk_id)
    return None if run is None else (run, await bulk.counts(conn, bulk_id))


async def _handle(bulk_id: str) -> tuple[Client, WorkflowHandle[Any, Any], WorkflowExecutionStatus | None]:
    client = await temporal()
    handle = client.get_workflow_handle(c.bulk_workflow_id(bulk_id))
    try:
        desc = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"no bulk run {bulk_id!r}; its id is printed when it starts") from None
        raise
    return client, handle, desc.status


async def cmd_status(args: argparse.Namespace) -> None:
    client, handle, status = await _handle(args.id)
    if args.follow and status == WorkflowExecutionStatus.RUNNING:
        await _follow(client, handle, args.id)
        return
    await _report(args.id, status, args.json)


async def cmd_cancel(args: argparse.Namespace) -> None:
    _, handle, status = await _handle(args.id)
    if status != WorkflowExecutionStatus.RUNNING:
        raise CliError(f"bulk run {args.id} has ended ({status.name.lower() if status else 'unknown'})")
    await with_db(lambda conn: bulk.cancel(conn, args.id))  # its page under way stops at once
    await handle.cancel()
    print(f"bulk run {args.id}: canceled; it sends nothing more (`corpsale bulk status {args.id}`)")


async def cmd_reassign(args: argparse.Namespace) -> None:
    payload = {"owner": args.to, **({"reason": args.reason} if args.reason else {})}
    await _start(args, c.SIGNAL_REASSIGN, c.UPDATE_REASSIGN, payload)


async def cmd_move(args: argparse.Namespace) -> None:
    payload = {"stage": args.to, **({"reason": args.reason} if args.reason else {})}
    await _start(args, c.SIGNAL_CHANGE_STAGE, c.UPDATE_CHANGE_STAGE, payload)


async def cmd_close_lost(args: argparse.Namespace) -> None:
    stages = await with_db(lookups.list_stages)
    lost = next((s["name"] for s in stages if s["is_final"] and not s["is_successful"]), None)
    if lost is None:
        raise CliError("the stages lookup has no final stage for a lost deal")
    payload = {
        "stage": lost,
        "reason": args.reason,
        **({"competitor": args.competitor} if args.competitor else {}),
    }
    await _start(args, c.SIGNAL_CHANGE_STAGE, c.UPDATE_CHANGE_STAGE, payload)


async def cmd_migrate(args: argparse.Namespace) -> None:
    """`corpsale definition migrate --to N`: a dry run asks each selected process what the move
    would do (the `migration_plan` query); without it, a bulk run sends each `migrate_definition`."""
    selection = _selection(args.where)
    if selection.process is None:  # the target process's deals, unless --where names others
        selection = selection.model_copy(update={"process": args.process})
        args.where = " ".join(filter(None, [args.where, f"process={args.process}"]))
    try:
        target, chosen = await with_db(
            lambda conn: _target_and_selection(conn, args.process, args.to, selection)
        )
    except LookupError as err:
        raise CliError(f"{err}; `corpsale definition versions` lists them") from None
    if not args.dry_run:
        await _start(args, c.MIGRATE, c.UPDATE_MIGRATE, {"version": args.to, "process": args.process})
        return
    client, gate = await temporal(), asyncio.Semaphore(20)

    async def plan_of(opportunity_id: str) -> MigrationPlan | str:
        async with gate:
            try:
                plan: MigrationPlan = await client.get_workflow_handle(c.workflow_id(opportunity_id)).query(
                    c.QUERY_MIGRATION_PLAN,
                    target,
                    result_type=MigrationPlan,
                    rpc_timeout=timedelta(seconds=10),
                )
            except (RPCError, WorkflowQueryFailedError) as err:
                return f"its process is not running ({err})"
            return plan

    plans = dict(zip(chosen, await asyncio.gather(*(plan_of(o) for o in chosen)), strict=True))
    if args.json:
        print_json({o: p.model_dump(mode="json") if isinstance(p, MigrationPlan) else {"skipped": p}
                    for o, p in plans.items()})  # fmt: skip
        return
    onto = f"version {args.to}" if args.process == DEFAULT_PROCESS else f"{args.process} version {args.to}"
    print(f"{_open(len(chosen))} {_match(len(chosen))} {args.where!r}; onto {onto} (a dry run):")
    for opp, plan in plans.items():
        print(f"  {opp}: {_described(plan)}")


async def _target_and_selection(
    conn: Any, process: str, version: int, selection: Selection
) -> tuple[Any, list[str]]:
    from activities.data import definitions

    return await definitions.version(conn, version, process), await bulk.preview(conn, selection)


def _described(plan: MigrationPlan | str) -> str:
    if isinstance(plan, str):
        return f"skipped: {plan}"
    if plan.refused:
        return f"refused: {plan.refused}"

    def keys(tasks: list[Any], due: bool = False) -> str:
        return (
            ", ".join(
                t.key + (f" (due {t.due_at:%Y-%m-%d %H:%M})" if due and t.due_at else "") for t in tasks
            )
            or "none"
        )

    were, onto = (
        (f"version {plan.from_version}", f"{plan.to_version}")
        if plan.from_process == plan.to_process
        else (f"{plan.from_process} {plan.from_version}", f"{plan.to_process} {plan.to_version}")
    )
    return (
        f"{plan.stage}, {were} → {onto}: keeps {keys(plan.kept)};"
        f" cancels {keys(plan.canceled)}; opens {keys(plan.opened, due=True)}"
    )


WHERE_HELP = (
    "which open opportunities: stage=Proposal owner=alice process=corporate-sale version=4 quiet>=90 (days),"
    " all must hold"
)


def add_migrate(commands: Any) -> None:
    """`corpsale definition migrate` (a subcommand of `definition`)."""
    p = add_command(commands, "migrate", "move running processes onto a definition version", json_out=True)
    p.add_argument("--to", type=int, required=True, help="the version (`corpsale definition versions`)")
    p.add_argument(
        "--process", default=DEFAULT_PROCESS, help=f"the sales process of that version ({DEFAULT_PROCESS})"
    )
    p.add_argument(
        "--where",
        default="",
        help=WHERE_HELP
        + " (default: every open opportunity of --process; process=OTHER moves others onto it)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what it would do to each; change nothing")
    p.add_argument(
        "--actor", default=default_actor(), help="whom the commands are from (default: you; an admin)"
    )
    p.add_argument("--in-flight", type=int, default=10, choices=range(1, 101), metavar="N",
                   help="commands on their way at once (1-100, default 10)")  # fmt: skip
    p.add_argument("--detach", action="store_true", help="print the run's id and leave it running")
    p.set_defaults(run=cmd_migrate)


def add_commands(sub: Any) -> None:
    group = command_parser(
        sub,
        "bulk",
        help="one command to many opportunities, as a workflow that survives a crash",
        description="Send one command to every open opportunity a query selects (fixed when the"
        " run starts), through a workflow: each gets it exactly once, also after a crash.",
    ).add_subparsers(dest="bulk_command", required=True)

    def command(name: str, help_: str, run: Any) -> argparse.ArgumentParser:
        p = add_command(group, name, help_, json_out=False)
        p.add_argument("--where", required=True, help=WHERE_HELP)
        p.add_argument("--actor", default=default_actor(), help="whom the commands are from (default: you)")
        p.add_argument("--in-flight", type=int, default=10, choices=range(1, 101), metavar="N",
                       help="commands on their way at once (1-100, default 10)")  # fmt: skip
        p.add_argument("--detach", action="store_true", help="print the run's id and leave it running")
        p.add_argument(
            "--dry-run", action="store_true", help="list the opportunities it would take; send nothing"
        )
        p.set_defaults(run=run)
        return p

    p = command("reassign", "give the selected opportunities and their open tasks to someone", cmd_reassign)
    p.add_argument("--to", required=True, help="the new owner")
    p.add_argument("--reason", help="why (recorded with each)")
    p = command("move", "move the selected opportunities to a stage", cmd_move)
    p.add_argument("--to", required=True, help="the stage")
    p.add_argument("--reason", help="why (recorded with each visit)")
    p = command("close-lost", "close the selected opportunities as lost", cmd_close_lost)
    p.add_argument("--reason", required=True, help="a reason from the close-reason lookup")
    p.add_argument("--competitor", help="who won the deal")
    p = add_command(group, "status", "a bulk run's progress and result", json_out=True)
    p.add_argument("id", help="the bulk run's id")
    p.add_argument("--follow", action="store_true", help="show its progress until it ends")
    p.set_defaults(run=cmd_status)
    p = add_command(group, "cancel", "stop a bulk run: it sends nothing more", json_out=False)
    p.add_argument("id", help="the bulk run's id")
    p.set_defaults(run=cmd_cancel)
