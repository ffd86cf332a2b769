"""`corpsale stages ...`: the Opportunity stages lookup (list, add, set, remove). Stages are data:
an operator adds "Closed rejected" or changes a probability without a code change, and running
processes take an added stage up when a command names it."""

from __future__ import annotations

import argparse
from typing import Any

from activities.data import lookups
from starter.common import CliError, command_parser, parse_model, positive_int, with_db
from starter.output import print_json, print_table
from workflows.definition import Stage


def _successful(args: argparse.Namespace) -> bool | None:
    return {"won": True, "lost": False, None: None}[args.final_kind]


async def cmd_stages_list(args: argparse.Namespace) -> None:
    rows = await with_db(lookups.list_stages)
    if args.json:
        print_json(rows)
        return
    for r in rows:
        r["kind"] = ("final, won" if r["is_successful"] else "final, lost") if r["is_final"] else "open"
    print_table(rows, ["sort_order", "name", "kind", "probability", "open_opportunities"])


async def cmd_stages_add(args: argparse.Namespace) -> None:
    stage = parse_model(
        Stage,
        {
            "name": args.name,
            "order": args.order,
            "final": args.final_kind is not None,
            "successful": _successful(args),
            "probability": args.probability,
        },
    )
    await with_db(lambda conn: lookups.add_stage(conn, stage))
    await cmd_stages_list(args)


async def cmd_stages_set(args: argparse.Namespace) -> None:
    changes: dict[str, Any] = {}
    if args.order is not None:
        changes["order"] = args.order
    if args.probability is not None:
        changes["probability"] = args.probability
    if args.final_kind == "open":
        changes.update(final=False, successful=None)
    elif args.final_kind is not None:
        changes.update(final=True, successful=args.final_kind == "won")
    if not changes:
        raise CliError("nothing to change: give --order, --probability or --final won|lost|open")
    await with_db(lambda conn: lookups.change_stage(conn, args.name, **changes))
    await cmd_stages_list(args)


async def cmd_stages_remove(args: argparse.Namespace) -> None:
    await with_db(lambda conn: lookups.remove_stage(conn, args.name))
    await cmd_stages_list(args)


def add_commands(sub: Any) -> None:
    stages = command_parser(
        sub, "stages", help="the Opportunity stages lookup", description=(__doc__ or "").strip()
    )
    commands = stages.add_subparsers(dest="stages_command", metavar="STAGES_COMMAND")
    stages.add_argument("--json", action="store_true", help="print JSON")
    stages.set_defaults(run=cmd_stages_list)

    p = command_parser(commands, "add", help="add a stage")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--order", type=positive_int, required=True, help="its place (distinct)")
    p.add_argument("--probability", type=int, required=True, help="win probability, 0-100")
    p.add_argument("--final", dest="final_kind", choices=["won", "lost"], help="a final stage, won or lost")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_stages_add)

    p = command_parser(commands, "set", help="change a stage")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--order", type=positive_int, help="its place (distinct)")
    p.add_argument("--probability", type=int, help="win probability, 0-100")
    p.add_argument("--final", dest="final_kind", choices=["won", "lost", "open"], help="open: not final")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_stages_set)

    p = command_parser(commands, "remove", help="remove a stage no opportunity ever used")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_stages_remove)
