"""`corpsale teams ...`: the teams whose queues take tasks of the definition (`"assignee":
"team:legal"`, `"approver": "team:legal"`): who is in each, who leads it (an unclaimed task past its
time escalates to the lead), and how many of its tasks wait for a claim."""

from __future__ import annotations

import argparse
from typing import Any

from activities.data import teams
from starter.common import CliError, command_parser, listing_group, with_db
from starter.output import print_json, print_rows


async def cmd_list(args: argparse.Namespace) -> None:
    rows = await with_db(teams.list_teams)
    shown = [{**r, "members": ", ".join(r["members"])} for r in rows]
    print_rows(rows if args.json else shown, ["name", "lead", "members", "unclaimed"], as_json=args.json,
               empty="no teams: `corpsale teams add NAME --members A,B --lead C`")  # fmt: skip


async def cmd_add(args: argparse.Namespace) -> None:
    members = [m for part in args.members or [] for m in part.split(",")]
    if not members and args.lead is None:
        raise CliError("name the members (--members ann,joe), the lead (--lead maria), or both")
    team = await with_db(lambda conn: teams.add_team(conn, args.name, members, args.lead))
    if args.json:
        print_json(team)
        return
    print(f"team {team['name']}: {', '.join(team['members']) or 'no members'}; lead {team['lead'] or 'none'}")


async def cmd_remove(args: argparse.Namespace) -> None:
    await with_db(lambda conn: teams.remove_member(conn, args.name, args.person))
    print(f"{args.person} left team {args.name}")


def add_commands(sub: Any) -> None:
    commands = listing_group(
        sub,
        "teams",
        help="teams and their queues: list, add, remove",
        description=__doc__,
        run=cmd_list,
        what="each team: its lead, members and unclaimed tasks",
    )

    p = command_parser(commands, "add", help="create a team, or add members to it and set its lead")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--members", action="append", metavar="A,B", help="people who take its tasks")
    p.add_argument("--lead", help="whom its unclaimed tasks escalate to")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_add)

    p = command_parser(commands, "remove", help="take a person out of a team")
    p.add_argument("name", metavar="NAME")
    p.add_argument("person", metavar="PERSON")
    p.set_defaults(run=cmd_remove)
