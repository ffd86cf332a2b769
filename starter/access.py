"""`corpsale services`: the keys of the services that sign commands, and the checks the
CLI makes of who reads an inbox."""

from __future__ import annotations

import argparse
from typing import Any

from activities.data import access
from starter.common import CliError, acting_as, command_parser, default_actor, with_db
from starter.output import print_json, print_rows


async def cmd_services(args: argparse.Namespace) -> None:
    rows = await with_db(access.list_services)
    columns = ["service", "person", "created_at", "revoked_at"]
    print_rows(rows, columns, as_json=args.json, empty="no service keys yet: `corpsale services add NAME`")


async def _as_admin(args: argparse.Namespace) -> None:
    me = await acting_as(args.actor)
    if not await with_db(lambda conn: access.is_admin(conn, me)):
        raise CliError(f"{me!r} is not an admin: only an admin registers and revokes service keys")


async def cmd_services_add(args: argparse.Namespace) -> None:
    await _as_admin(args)
    secret = await with_db(lambda conn: access.add_service(conn, args.service, args.person))
    key = f"{args.service}:{secret}"
    if args.json:
        print_json({"service": args.service, "person": args.person, "key": key})
        return
    print(f"key of {args.service!r}" + (f" (signs only as {args.person})" if args.person else "") + ":")
    print(key)
    print("It is shown this once. The service signs with it; for the CLI: export CORPSALE_SERVICE_KEY=<key>")


async def cmd_services_revoke(args: argparse.Namespace) -> None:
    await _as_admin(args)
    await with_db(lambda conn: access.revoke_service(conn, args.service))
    print(f"{args.service}: revoked; its signatures are refused from now on")


async def may_read_inbox(actor: str, person: str) -> None:
    """An inbox is read by its person or an admin."""
    me = await acting_as(actor)
    if me != person and not await with_db(lambda conn: access.is_admin(conn, me)):
        raise CliError(f"{me!r} may not read {person!r}'s notifications: only {person} or an admin may")


def add_commands(sub: Any) -> None:
    services = command_parser(sub, "services", help="the keys of the services that sign commands")
    services.add_argument("--json", action="store_true", help="print JSON")
    services.set_defaults(run=cmd_services)
    commands = services.add_subparsers(dest="services_command", metavar="SERVICES_COMMAND")
    actor_help = "who does it (default: $CORPSALE_ACTOR or your user name); an admin"
    p = command_parser(commands, "add", help="register a service and print its key (once)")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("--person", help="a person's own key: it signs only as them (as anyone if an admin)")
    p.add_argument("--actor", default=default_actor(), help=actor_help)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_services_add)
    p = command_parser(commands, "revoke", help="refuse a service's signatures from now on")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("--actor", default=default_actor(), help=actor_help)
    p.set_defaults(run=cmd_services_revoke)
