"""`corpsale webhooks`: the services that are sent the business events (admins only: they are
sent every opportunity's). add, list, show, remove, pause, resume, retry (a stopped one) and
replay (events again, with their ids)."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from activities.data import access, webhooks
from activities.data.errors import Refused
from starter.common import (
    CliError,
    acting_as,
    add_command,
    command_parser,
    default_actor,
    parse_moment,
    with_db,
)
from starter.output import print_json, print_rows

T = TypeVar("T")


async def _as_admin(args: argparse.Namespace, work: Callable[[Any], Awaitable[T]]) -> T:
    me = await acting_as(args.actor)

    async def checked(conn: Any) -> T:
        if not await access.is_admin(conn, me):
            raise CliError(
                f"{me!r} is not an admin: only an admin manages webhooks (they get every deal's events)"
            )
        return await work(conn)

    return await with_db(checked)


async def cmd_add(args: argparse.Namespace) -> None:
    try:  # what is wrong with the command itself, before anything else
        patterns = webhooks.event_patterns(args.events)
        webhooks.check_url(args.url)
        secret = args.secret or webhooks.new_secret()
        webhooks.signing_key(secret)
    except Refused as err:
        raise CliError(str(err)) from None
    me = args.actor
    await _as_admin(args, lambda conn: webhooks.add(conn, args.url, patterns, secret, me))
    print(f"{args.url} gets {', '.join(patterns)} from now on")
    if not args.secret:
        print(f"its secret (verify each event's signature with it; shown once): {secret}")


async def cmd_list(args: argparse.Namespace) -> None:
    rows = await _as_admin(args, webhooks.list_all)
    for r in rows:
        r["events"] = ",".join(r["events"])
    columns = ["url", "events", "state", "delivered", "pending", "dead", "last_delivered_at"]
    print_rows(rows, columns, as_json=args.json, empty="no webhooks yet: `corpsale webhooks add URL`")


async def cmd_show(args: argparse.Namespace) -> None:
    found = await _as_admin(args, lambda conn: webhooks.show(conn, args.url))
    if args.json:
        print_json(found)
        return
    print(f"{found['url']}: {found['state']}, events {', '.join(found['events'])}")
    print(f"  delivered {found['delivered']}, pending {found['pending']}, dead {found['dead']}")
    if found["stopped"]:
        print(
            f"  stopped {found['stopped']}; once it answers again: `corpsale webhooks retry {found['url']}`"
        )
    for w in found["waiting"]:
        error = f": {w['last_error']}" if w["last_error"] else ""
        print(
            f"  {w['state']:<7} {w['event_id']} ({w['type']}, {w['opportunity_id']} #{w['sequence']}),"
            f" {w['attempts']} attempts{error}"
        )


async def cmd_remove(args: argparse.Namespace) -> None:
    await _as_admin(args, lambda conn: webhooks.remove(conn, args.url))
    print(f"{args.url} removed; it gets no more events")


async def cmd_pause(args: argparse.Namespace) -> None:
    await _as_admin(args, lambda conn: webhooks.set_paused(conn, args.url, True))
    print(f"{args.url} paused: its events wait until `corpsale webhooks resume {args.url}`")


async def cmd_resume(args: argparse.Namespace) -> None:
    await _as_admin(args, lambda conn: webhooks.set_paused(conn, args.url, False))
    print(f"{args.url} resumed: it gets the events that waited, then the new ones")


async def cmd_retry(args: argparse.Namespace) -> None:
    dead = await _as_admin(args, lambda conn: webhooks.retry(conn, args.url))
    print(f"{args.url}: delivery goes on ({dead} dead event{'s' if dead != 1 else ''} to send again)")


async def cmd_replay(args: argparse.Namespace) -> None:
    since = parse_moment(args.since)
    count = await _as_admin(args, lambda conn: webhooks.replay(conn, args.url, since))
    print(f"{args.url}: {count} event{'s' if count != 1 else ''} since {since.isoformat()} to send again")


def add_commands(sub: Any) -> None:
    hooks = command_parser(
        sub,
        "webhooks",
        help="services sent each business event (signed CloudEvents), in order per opportunity",
        description="Subscribers are posted each event they want as CloudEvents JSON, signed"
        " (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature), each opportunity's in"
        " order, retried with backoff until they answer 2xx. Admins only.",
    ).add_subparsers(dest="webhooks_command", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], Awaitable[None]], help_: str) -> Any:
        p = add_command(hooks, name, help_, json_out=False)
        p.add_argument("--actor", default=default_actor(), help="who does it (default: you); an admin")
        p.set_defaults(run=run)
        return p

    p = command("add", cmd_add, "send the events to a URL from now on")
    p.add_argument("url", help="where to post them (http or https)")
    p.add_argument(
        "--events",
        default="*",
        help="event types, or patterns: 'stage.*,opportunity.won' (default: all)",
    )
    p.add_argument("--secret", help="whsec_ and base64 of 24-64 bytes (default: a new one, printed)")
    p = command("list", cmd_list, "the subscribers, their state and counts")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command("show", cmd_show, "a subscriber, and the events it has not taken yet")
    p.add_argument("url", help="the subscriber's address")
    p.add_argument("--json", action="store_true", help="print JSON")
    for name, run, text in (
        ("remove", cmd_remove, "send it nothing more"),
        ("pause", cmd_pause, "hold its events until resumed"),
        ("resume", cmd_resume, "send it the events that waited, and on"),
        ("retry", cmd_retry, "go on at the event it stopped at (after its last attempt failed)"),
    ):
        command(name, run, text).add_argument("url", help="the subscriber's address")
    p = command("replay", cmd_replay, "send its events since a time again, with their ids")
    p.add_argument("url", help="the subscriber's address")
    p.add_argument("--since", required=True, help="from this date or date-time on (2030-05-04T10:00Z)")
