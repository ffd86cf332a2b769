"""`corpsale processes ...`: the sales processes of the library, which one is the default, and the
rules that pick the process of a lead's deal."""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from typing import Any

from activities.data import definitions, process_rules
from starter.common import command_parser, listing_group, positive_int, with_db
from starter.output import print_json, print_rows, print_table


async def cmd_list(args: argparse.Namespace) -> None:
    """The processes of the library, with their versions and open deals."""
    rows = await with_db(definitions.processes)
    if args.json:
        print_json(rows)
        return
    shown = [{**r, "default": "yes" if r["default"] else ""} for r in rows]
    print_table(shown, ["process", "name", "latest", "versions", "open_deals", "default"])


async def cmd_default(args: argparse.Namespace) -> None:
    await with_db(lambda conn: process_rules.set_default(conn, args.process))
    print(f"{args.process} is the default: a start that names no process, and a lead no rule picks, runs it")


async def cmd_rules(args: argparse.Namespace) -> None:
    async def read(conn: Any) -> tuple[list[dict[str, Any]], str]:
        return await process_rules.rules(conn), await definitions.default_process(conn)

    rows, default = await with_db(read)
    if args.json:
        print_json({"rules": rows, "default": default})
        return
    print_rows(rows, ["id", "process", "lead_type", "budget_under"], as_json=False, empty="no rules")
    print(f"a lead no rule matches: {default} (the default)")


def _money(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"an amount above 0, not {text!r}")
    return value


async def cmd_add_rule(args: argparse.Namespace) -> None:
    row = await with_db(lambda conn: process_rules.add_rule(conn, args.process, args.type, args.budget_under))
    if args.json:
        print_json(row)
        return
    when = [f"type {row['lead_type']}"] * bool(row["lead_type"]) + [
        f"budget under {row['budget_under']}"
    ] * bool(row["budget_under"])
    print(
        f"rule {row['id']}: a lead of {' and '.join(when)} runs {row['process']} (after the rules before it)"
    )


async def cmd_remove_rule(args: argparse.Namespace) -> None:
    await with_db(lambda conn: process_rules.remove_rule(conn, args.id))
    print(f"rule {args.id} removed")


def add_commands(sub: Any) -> None:
    commands = listing_group(
        sub,
        "processes",
        help="the sales processes: list, default, rules, add-rule, remove-rule",
        description=__doc__,
        run=cmd_list,
        what="each process: its latest version, versions, open deals",
    )

    p = command_parser(commands, "default", help="make a process the default of starts that name none")
    p.add_argument("process", metavar="PROCESS")
    p.set_defaults(run=cmd_default)

    p = command_parser(commands, "rules", help="the rules that pick a lead's process, in order")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_rules)

    p = command_parser(commands, "add-rule", help="a lead of this type or budget runs this process")
    p.add_argument("process", metavar="PROCESS")
    p.add_argument("--type", help="the lead's type is this (`corpsale lead add --type`)")
    p.add_argument("--budget-under", type=_money, metavar="AMOUNT", help="the lead's budget is below this")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_add_rule)

    p = command_parser(commands, "remove-rule", help="remove a rule by its id")
    p.add_argument("id", type=positive_int, metavar="RULE_ID")
    p.set_defaults(run=cmd_remove_rule)
