"""`corpsale` commands that drive a process: start, move, complete, update, add-task, snooze,
reassign, and close-details (a won deal's figures, after it closed). Commands go to the process as
updates through SaleClient, with a request id (reads of an opportunity: starter/opportunities.py)."""

from __future__ import annotations

import argparse
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from starter.client import CommandRefused, CommandUnanswered, NoProcess, SaleClient, start_process
from starter.common import (
    CliError,
    acting_as,
    add_command,
    command_timeout,
    explained,
    no_process,
    parse_fields,
    parse_model,
    parse_moment,
    parse_span,
    service_key,
    stage_name,
    state_when_ready,
    task_by_key,
    temporal,
    with_db,
)
from starter.output import print_json, print_state
from worker.config import current
from workflows import contract as c
from workflows.contract import NewOpportunity
from workflows.state import ProcessInput


async def cmd_start(args: argparse.Namespace) -> None:
    from activities.data import definitions, repository

    client = await temporal(sending_to=args.task_queue or current().task_queue)
    process: str | None = args.process
    if args.process is not None:  # a process the library has, or a clear refusal before anything runs
        await with_db(lambda conn: definitions.known(conn, args.process))
    if args.existing:
        opportunity_id, new = args.existing, None
        found = await with_db(lambda conn: repository.opportunity_stage(conn, opportunity_id))
        if found is None:
            raise CliError(
                f"no opportunity {opportunity_id!r}; create one with"
                " `corpsale start --title ... --customer ... --owner ...`"
            )
        if found["closed_at"] is not None:
            raise CliError(
                f"opportunity {opportunity_id!r} is closed in {found['stage']!r}; a final stage is never left"
            )
        process = process or found["process"]
    else:
        missing = [f"--{n}" for n in ("title", "customer", "owner") if not getattr(args, n)]
        if missing:
            raise CliError(f"a new opportunity needs {', '.join(missing)} (or use --existing ID)")
        opportunity_id = args.id or f"opp-{uuid.uuid4().hex[:12]}"
        fields = parse_fields(args.set or [], args.data)
        new = parse_model(
            NewOpportunity, {**fields, "title": args.title, "customer": args.customer, "owner": args.owner}
        )
        process = process or await with_db(definitions.default_process)
    actor = await acting_as(args.actor)
    start = parse_model(  # the process named: the Web UI shows it (`SaleProcess`)
        ProcessInput, {"opportunity_id": opportunity_id, "actor": actor, "new": new, "process": process}
    )
    try:
        await start_process(client, start, task_queue=args.task_queue or current().task_queue)
    except CommandRefused as err:
        raise CliError(str(err)) from None
    state = await state_when_ready(client, opportunity_id)
    if state is None:
        raise CliError(
            f"started {c.workflow_id(opportunity_id)}, but no worker has picked it up"
            f" yet: is a worker polling task queue {args.task_queue or current().task_queue!r}?"
        )
    print_json(state) if args.json else print_state(state)


async def _send(args: argparse.Namespace, update: str, payload: dict[str, Any]) -> None:
    """A command as an update, with a request id (made up unless --request-id gives one), sent
    again with it while the process answers "not now"."""
    queue = current().task_queue
    sale = SaleClient(await temporal(sending_to=queue), queue, key=service_key())
    payload = {k: v for k, v in payload.items() if v is not None}
    if "actor" in payload:
        payload["actor"] = await acting_as(payload["actor"])
    try:
        state = await sale.execute(args.opportunity, update, payload, timeout=command_timeout())
    except CommandUnanswered as err:
        raise CliError(str(err).replace("with request id", "with --request-id")) from None
    except NoProcess:
        raise await no_process(args.opportunity) from None
    except CommandRefused as err:
        raise CliError(str(err)) from None
    except (WorkflowUpdateFailedError, RPCError) as err:
        raise await explained(err, args.opportunity) from None
    print_json(state) if args.json else print_state(state)


async def cmd_move(args: argparse.Namespace) -> None:
    await _send(
        args,
        c.UPDATE_CHANGE_STAGE,
        {
            "stage": await stage_name(args.stage),
            "actor": args.actor,
            "reason": args.reason,
            "restart": args.restart or None,
            "override": args.override or None,
            "actual_income": args.income,
            "hours_spent": args.hours,
            "competitor": args.competitor,
            "request_id": args.request_id,
        },
    )


async def cmd_complete(args: argparse.Namespace) -> None:
    args.task_id = await task_by_key(args.opportunity, args.task_id)
    if c.FOLLOW_UP_MARK in args.task_id:
        await _complete_follow_up(args)
        return
    await _send(
        args,
        c.UPDATE_COMPLETE_TASK,
        {
            "task_id": args.task_id,
            "outcome": args.outcome,
            "actor": args.actor,
            "comment": args.comment,
            "actual_income": args.income,
            "hours_spent": args.hours,
            "request_id": args.request_id,
        },
    )


async def _complete_follow_up(args: argparse.Namespace) -> None:
    """A won opportunity's follow-up task: its process has ended, so the row is completed here."""
    from activities.data import follow_up

    done = await with_db(
        lambda conn: follow_up.complete(
            conn,
            args.opportunity,
            args.task_id,
            actor=args.actor,
            outcome=args.outcome,
            comment=args.comment,
        )
    )
    # Its workflow (the task's reminders, R20) ends with it; follow-up tasks of runs from before
    # tasks had workflows of their own have none.
    client = await temporal(sending_to=current().task_queue)
    task = client.get_workflow_handle(c.task_workflow_id(args.task_id))
    with contextlib.suppress(RPCError):
        await task.signal(c.TASK_COMPLETED_SIGNAL, done["outcome"])
    if args.json:
        print_json(done)
    else:
        print(f"{done['task_id']}: completed ({done['outcome']})" + ("" if done["changed"] else " already"))


async def cmd_update(args: argparse.Namespace) -> None:
    fields = parse_fields(args.set or [], args.data)
    if not fields:
        raise CliError("nothing to update: give --set FIELD=VALUE or --data JSON")
    await _send(
        args, c.UPDATE_UPDATE_OPPORTUNITY, {**fields, "actor": args.actor, "request_id": args.request_id}
    )


async def cmd_add_task(args: argparse.Namespace) -> None:
    await _send(
        args,
        c.UPDATE_ADD_TASK,
        {
            "title": args.title,
            "owner": args.owner,
            "due_at": parse_moment(args.due).isoformat() if args.due else None,
            "actor": args.actor,
            "request_id": args.request_id,
        },
    )


async def cmd_snooze(args: argparse.Namespace) -> None:
    due_at = parse_moment(args.until) if args.until else datetime.now(UTC) + parse_span(args.for_)
    await _send(
        args,
        c.UPDATE_SNOOZE_TASK,
        {
            "task_id": await task_by_key(args.opportunity, args.task_id),
            "due_at": due_at.isoformat(),
            "actor": args.actor,
            "reason": args.reason,
            "request_id": args.request_id,
        },
    )


async def cmd_claim(args: argparse.Namespace) -> None:
    """`claim TASK` (a task's whole id) or `claim OPP TASK` (its key will do); `release` alike."""
    if len(args.task) > 2:
        raise CliError("give the task's id, or the opportunity's id and the task's id or key")
    if len(args.task) == 1:
        task_id = args.task[0]
        if ":v" not in task_id:
            raise CliError(
                f"{task_id!r} is not a task's id (`OPP:vN:KEY`); give the opportunity too: OPP TASK"
            )
        args.opportunity = task_id.rsplit(":v", 1)[0]
    else:
        args.opportunity, task_id = args.task[0], await task_by_key(args.task[0], args.task[1])
    update = c.UPDATE_RELEASE_TASK if args.release else c.UPDATE_CLAIM_TASK
    payload = {"task_id": task_id, "actor": args.actor, "request_id": args.request_id}
    await _send(args, update, payload | ({"reason": args.reason} if args.release else {}))


async def cmd_close_details(args: argparse.Namespace) -> None:
    """A won deal's income and hours, recorded after it closed by itself."""
    from activities.data import closed

    figures = parse_model(closed.WonFigures, {"actual_income": args.income, "hours_spent": args.hours})
    actor = await acting_as(args.actor)
    row = await with_db(
        lambda conn: closed.record_won(
            conn, args.opportunity, income=figures.actual_income, hours=figures.hours_spent, actor=actor
        )
    )
    if args.json:
        print_json(row)
    else:
        print(f"{row['id']} ({row['stage']}): income {row['actual_income']}, hours {row['hours_spent']}")


async def cmd_reassign(args: argparse.Namespace) -> None:
    await _send(
        args,
        c.UPDATE_REASSIGN,
        {"owner": args.owner, "actor": args.actor, "reason": args.reason, "request_id": args.request_id},
    )


# The CLI's command and help line for each command of the contract's table.
SPEC = {spec.name: (spec.cli, spec.help) for spec in c.COMMANDS}


def add_commands(sub: Any) -> None:
    def command(name: str, help_: str, **kinds: bool) -> argparse.ArgumentParser:
        return add_command(sub, name, help_, **kinds)

    p = command("start", "start the process for a new opportunity or an existing one", actor=True)
    p.add_argument("--existing", metavar="ID", help="start for this existing opportunity")
    p.add_argument("--id", help="id of the new opportunity (default: generated)")
    p.add_argument("--title", help="what the deal is, for a new opportunity")
    p.add_argument("--customer", help="the customer, for a new opportunity")
    p.add_argument("--owner", help="the responsible employee")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="another data field")
    p.add_argument("--data", help="data fields as a JSON object")
    p.add_argument(
        "--process",
        help="the sales process to run (`corpsale processes`; default: the deal's own or the default)",
    )
    p.add_argument(
        "--task-queue",
        help="the workers' task queue (default: $CORPSALE_TASK_QUEUE or corporate-sale)",
    )
    p.set_defaults(run=cmd_start)

    p = command(*SPEC[c.SIGNAL_CHANGE_STAGE], actor=True, opportunity=True)
    p.add_argument("stage", metavar="STAGE")
    p.add_argument("--reason", help="why; closing as lost takes one of `corpsale close-reasons`")
    p.add_argument("--restart", action="store_true", help="restart the current stage")
    p.add_argument(
        "--override",
        action="store_true",
        help="enter the stage although its entry requirements are not met (the owner's manager or an"
        " admin; give --reason)",
    )
    p.add_argument("--income", help="actual income, when closing as won")
    p.add_argument("--hours", help="hours spent, when closing as won")
    p.add_argument("--competitor", help="who won, when closing as lost")
    p.set_defaults(run=cmd_move)

    p = command(*SPEC[c.SIGNAL_COMPLETE_TASK], actor=True, opportunity=True)
    p.add_argument("task_id", metavar="TASK", help="the task's id, or its key where one open task has it")
    p.add_argument("--outcome", help="default: the task's first outcome")
    p.add_argument("--comment", help="a note that goes with the completion")
    p.add_argument("--income", help="actual income, when this completion closes the opportunity as won")
    p.add_argument("--hours", help="hours spent, when this completion closes the opportunity as won")
    p.set_defaults(run=cmd_complete)

    p = command(*SPEC[c.SIGNAL_UPDATE_OPPORTUNITY], actor=True, opportunity=True)
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="a data field (repeatable)")
    p.add_argument("--data", help="fields as a JSON object")
    p.set_defaults(run=cmd_update)

    p = command(*SPEC[c.SIGNAL_ADD_TASK], actor=True, opportunity=True)
    p.add_argument("title", metavar="TITLE")
    p.add_argument("--owner", help="default: the opportunity's owner")
    p.add_argument("--due", help="when it is due, ISO 8601 (default: in a day)")
    p.set_defaults(run=cmd_add_task)

    p = command(*SPEC[c.SIGNAL_SNOOZE_TASK], actor=True, opportunity=True)
    p.add_argument("task_id", metavar="TASK", help="the task's id, or its key where one open task has it")
    until = p.add_mutually_exclusive_group(required=True)
    until.add_argument("--until", help="the new due time, ISO 8601 (2030-05-04T10:00Z)")
    until.add_argument("--for", dest="for_", metavar="SPAN", help="from now: 30m, 4h, 2d, 1w")
    p.add_argument("--reason", help="why, for the task owner's notice")
    p.set_defaults(run=cmd_snooze)

    for name, release in ((c.SIGNAL_CLAIM_TASK, False), (c.SIGNAL_RELEASE_TASK, True)):
        p = command(*SPEC[name], actor=True)
        p.add_argument(
            "task", nargs="+", metavar="TASK", help="the task's id, or OPP and the task's id or key"
        )
        if release:
            p.add_argument("--reason", help="why, for the team's notice")
        p.set_defaults(run=cmd_claim, release=release)

    p = command(*SPEC[c.SIGNAL_REASSIGN], actor=True, opportunity=True)
    p.add_argument("owner", metavar="OWNER")
    p.add_argument("--reason", help="why, for both owners' notices")
    p.set_defaults(run=cmd_reassign)

    p = command(
        "close-details",
        "record a won deal's actual income and hours after it closed",
        actor=True,
        opportunity=True,
    )
    p.add_argument("--income", help="the actual income")
    p.add_argument("--hours", help="the hours spent on the deal")
    p.set_defaults(run=cmd_close_details)
