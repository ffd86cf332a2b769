"""`corpsale lead ...` and `corpsale setting ...`: leads and the system settings.

A lead moved into "Awaiting sale" while StartOppBusinessProcess is on becomes an opportunity
whose process the worker's lead relay starts (also when no worker runs at that moment: then at
the next start of one)."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from typing import Any

from activities.data import leads
from starter.common import (
    CliError,
    command_parser,
    command_timeout,
    parse_model,
    positive_int,
    state_when_ready,
    temporal,
    with_db,
)
from starter.output import print_json, print_rows, when

LEAD_OPTIONS = ("title", "customer", "owner", "contact", "need", "budget", "stage")


def _print_lead(lead: dict[str, Any]) -> None:
    print(f"Lead {lead['id']}: {lead['title']} — {lead['customer']}, owner {lead['owner']}")
    print(f"  stage {lead['stage']}")
    for name in ("contact", "need", "budget", "lead_type"):
        if lead.get(name) is not None:
            print(f"  {name}: {lead[name]}")
    if lead.get("opportunity_id"):
        print(f"  opportunity {lead['opportunity_id']} (`corpsale state {lead['opportunity_id']}`)")
    elif lead.get("start_failed"):
        print(f"  its process could not start: {lead['start_failed']}")
    elif lead.get("starts_pending"):
        print(f"  its opportunity {leads.opportunity_id_for(lead['id'])} is being created by the worker")


async def cmd_lead_add(args: argparse.Namespace) -> None:
    lead = parse_model(
        leads.NewLead,
        {
            "id": args.id or f"L{uuid.uuid4().hex[:10]}",
            **{
                k: getattr(args, k)
                for k in ("title", "customer", "owner", "contact", "need", "budget", "stage", "lead_type")
            },
        },
    )
    row = await with_db(lambda conn: leads.add_lead(conn, lead))
    print_json(row) if args.json else _print_lead(row)


async def cmd_lead_move(args: argparse.Namespace) -> None:
    async def move(conn: Any) -> dict[str, Any]:
        await leads.move_lead(conn, args.lead, args.stage)
        return await _lead(conn, args.lead)

    row = await with_db(move)
    if args.wait and row.get("starts_pending"):
        row = await _started(args.lead)
    print_json(row) if args.json else _print_lead(row)


async def _started(lead_id: str) -> dict[str, Any]:
    """The lead once the worker has made it an opportunity whose process runs (or set it aside)."""
    deadline = asyncio.get_running_loop().time() + command_timeout()
    while True:
        row = await with_db(lambda conn: _lead(conn, lead_id))
        if row.get("start_failed"):
            return row
        if row.get("opportunity_id"):
            await state_when_ready(await temporal(), row["opportunity_id"])
            return row
        if asyncio.get_running_loop().time() > deadline:
            raise CliError(
                f"lead {lead_id!r} has not become an opportunity within {command_timeout():.0f} s: is a"
                " worker with the lead relay running (CORPSALE_LEAD_RELAY)?"
            )
        await asyncio.sleep(0.2)


async def _lead(conn: Any, lead_id: str) -> dict[str, Any]:
    row = await leads.get_lead(conn, lead_id)
    if row is None:
        raise leads.LeadError(f"no lead {lead_id!r}")
    return row


async def cmd_lead_show(args: argparse.Namespace) -> None:
    row = await with_db(lambda conn: _lead(conn, args.lead))
    print_json(row) if args.json else _print_lead(row)


async def cmd_lead_retry(args: argparse.Namespace) -> None:
    async def retry(conn: Any) -> dict[str, Any]:
        await leads.retry(conn, args.lead)
        return await _lead(conn, args.lead)

    row = await with_db(retry)
    print_json(row) if args.json else _print_lead(row)


async def cmd_lead_list(args: argparse.Namespace) -> None:
    rows = await with_db(lambda conn: leads.list_leads(conn, args.stage, args.limit))
    columns = ["id", "title", "customer", "owner", "stage", "opportunity_id"]
    print_rows(rows, columns, as_json=args.json, empty="no leads")


async def cmd_setting(args: argparse.Namespace) -> None:
    if args.value is not None:
        if args.name is None:
            raise CliError("give the setting's name and value, for example `corpsale setting X on`")
        value = {"on": True, "off": False}[args.value]
        row = await with_db(lambda conn: leads.set_setting(conn, args.name, value))
        rows = [row]
    else:
        rows = await with_db(leads.settings)
        if args.name is not None:
            rows = [r for r in rows if r["name"] == args.name]
            if not rows:
                raise CliError(f"no setting {args.name!r}")
    if args.json:
        print_json(rows)
        return
    for r in rows:
        state = "on" if r["value"] else "off"
        print(f"{r['name']}: {state}  ({r['description']}; changed {when(r['updated_at'])})")


def add_commands(sub: Any) -> None:
    """The `lead` and `setting` commands, on the CLI's sub-parsers."""
    lead = command_parser(
        sub, "lead", help="leads: add, move, show, retry, list", description=__doc__.splitlines()[0]
    )
    commands = lead.add_subparsers(dest="lead_command", required=True, metavar="LEAD_COMMAND")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = command_parser(commands, name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    p = command("add", "add a lead")
    p.add_argument("--id", help="the lead's id (default: generated)")
    p.add_argument("--title", required=True, help="what the deal would be")
    p.add_argument("--customer", required=True, help="the prospect")
    p.add_argument("--owner", required=True, help="the responsible employee")
    p.add_argument("--contact", help="the customer's contact person")
    p.add_argument("--need", help="what the customer needs")
    p.add_argument("--budget", help="the customer's budget")
    p.add_argument("--stage", default="New", help="where it starts (New)")
    p.add_argument("--type", dest="lead_type", help="what kind of lead: the process rules may read it")
    p.set_defaults(run=cmd_lead_add)

    p = command("move", "move a lead to a stage; 'Awaiting sale' starts the sale when the setting is on")
    p.add_argument("lead", metavar="LEAD_ID")
    p.add_argument("stage", metavar="STAGE")
    p.add_argument(
        "--wait", action="store_true", help="wait until the worker has started the opportunity's process"
    )
    p.set_defaults(run=cmd_lead_move)

    p = command("show", "a lead, and the opportunity it became")
    p.add_argument("lead", metavar="LEAD_ID")
    p.set_defaults(run=cmd_lead_show)

    p = command("retry", "start the process of a lead whose start failed, once the lead is corrected")
    p.add_argument("lead", metavar="LEAD_ID")
    p.set_defaults(run=cmd_lead_retry)

    p = command("list", "list leads")
    p.add_argument("--stage", help="only leads at this stage")
    p.add_argument("--limit", type=positive_int, default=100, help="at most this many (100)")
    p.set_defaults(run=cmd_lead_list)

    p = command_parser(
        sub,
        "setting",
        help="show or change a system setting",
        description="Show the system settings, or change one: `corpsale setting StartOppBusinessProcess on`.",
    )
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("value", nargs="?", choices=["on", "off"], metavar="on|off")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_setting)
