"""What a person sees: `corpsale inbox` and `read` (the notification center), `agenda` and `ics`
(their calendar of tasks), and `people` (who manages whom: escalations go to the manager)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from activities.data import access, center
from starter.access import may_read_inbox
from starter.common import (
    CliError,
    acting_as,
    command_parser,
    default_actor,
    parse_moment,
    positive_int,
    with_db,
)
from starter.output import print_json, print_rows, print_table

PRODID = "-//corporate-sale//tasks//EN"
READER_HELP = "who reads (default: $CORPSALE_ACTOR or your user name): the person or an admin"
UID_DOMAIN = "corporate-sale"


def _moment(text: str | None, default: datetime) -> datetime:
    return default if text is None else parse_moment(text)


def _today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


# People -------------------------------------------------------------------------------------


async def cmd_people(args: argparse.Namespace) -> None:
    rows = await with_db(center.list_people)
    columns = ["name", "role", "manager", "email", "open_tasks"]
    print_rows(
        rows, columns, as_json=args.json, empty="no people yet: `corpsale people set NAME --manager MANAGER`"
    )


async def cmd_people_set(args: argparse.Namespace) -> None:
    me = await acting_as(args.actor)
    name = args.name if args.name is not None else me  # without a name: yourself
    if args.role is not None:  # who is admin is for admins to say (the first one says it of themself)
        admins = [p["name"] for p in await with_db(center.list_people) if p["role"] == "admin"]
        if admins and not await with_db(lambda conn: access.is_admin(conn, me)):
            raise CliError(
                f"{me!r} is not an admin: only an admin gives roles; the admins: {', '.join(admins)}"
            )
    await with_db(
        lambda conn: center.set_person(
            conn,
            name,
            manager=args.manager,
            email=args.email,
            clear_manager=args.no_manager,
            role=args.role,
        )
    )
    await cmd_people(args)


async def cmd_people_remove(args: argparse.Namespace) -> None:
    await with_db(lambda conn: center.remove_person(conn, args.name))
    await cmd_people(args)


# The notification center --------------------------------------------------------------------


async def cmd_inbox(args: argparse.Namespace) -> None:
    await may_read_inbox(args.actor, args.person)
    rows = await with_db(lambda conn: center.inbox(conn, args.person, unread=args.unread, limit=args.limit))
    if args.json:
        print_json(rows)
        return
    if not rows:
        print(f"no {'unread ' if args.unread else ''}notifications for {args.person}")
        return
    unread = sum(r["read_at"] is None for r in rows)
    print(f"{args.person}: {unread} unread")
    for r in rows:
        r["new"] = "•" if r["read_at"] is None else ""
    print_table(rows, ["new", "created_at", "kind", "message", "id"])


async def cmd_read(args: argparse.Namespace) -> None:
    if not args.ids and not args.all:
        raise CliError(
            "name the notifications to mark read (their ids, from `corpsale inbox`), or give --all"
        )
    await may_read_inbox(args.actor, args.person)
    ids = None if args.all else list(args.ids)
    marked = await with_db(lambda conn: center.mark_read(conn, args.person, ids, datetime.now(UTC)))
    if args.json:
        print_json({"marked_read": marked})
    else:
        print(f"{marked} notification{'s' if marked != 1 else ''} marked read")


# The calendar -------------------------------------------------------------------------------


async def cmd_agenda(args: argparse.Namespace) -> None:
    start = _moment(args.start, _today())
    try:
        end = _moment(args.end, start + timedelta(days=14))
    except OverflowError:
        raise CliError(f"--from {args.start} is too far in the future") from None
    if end <= start:
        raise CliError(f"--to ({end:%Y-%m-%d %H:%M}) must come after --from ({start:%Y-%m-%d %H:%M})")
    now = datetime.now(UTC)
    rows = await with_db(
        lambda conn: center.agenda(conn, args.person, start, end, include_closed=args.all, now=now)
    )
    if args.json:
        print_json(rows)
        return
    span = f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    if not rows:
        print(f"{args.person}: no {'' if args.all else 'open '}tasks from {span}")
        return
    print(f"{args.person}: {len(rows)} task{'s' if len(rows) != 1 else ''} from {span}")
    for r in rows:
        r["what"] = f"{r['title']} ({r['opportunity']}, {r['customer']})"
        r["late"] = "overdue" if r["overdue"] else ""
    columns = ["due_at", "late", "start_at", "what", "stage", "id"]
    print_table(rows, columns + (["status"] if args.all else []))


def ics(person: str, rows: list[dict[str, Any]], *, events: bool, now: datetime) -> bytes:
    """The tasks as an iCalendar file: a VTODO each (or with `events`, a VEVENT in the half hour
    before the task is due), with a UID from the task id, so that importing again updates."""
    from icalendar import Calendar, Event, Todo

    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("x-wr-calname", f"Tasks of {person}")
    for r in rows:
        item = Event() if events else Todo()
        item.add("uid", f"{r['id']}@{UID_DOMAIN}")
        item.add("dtstamp", now)
        item.add("summary", r["title"])
        item.add("description", f"{r['opportunity']} ({r['customer']}), stage {r['stage']}. Task {r['id']}.")
        item.add("categories", [r["stage"]])
        item.add("sequence", 0 if r["status"] == "open" else 1)  # a finished task supersedes the open one
        if events:
            item.add("dtstart", r["due_at"] - timedelta(minutes=30))
            item.add("dtend", r["due_at"])
            item.add("status", "CANCELLED" if r["status"] == "canceled" else "CONFIRMED")
        else:
            item.add("dtstart", r["start_at"])
            item.add("due", r["due_at"])
            item.add(
                "status",
                {"open": "NEEDS-ACTION", "completed": "COMPLETED", "canceled": "CANCELLED"}[r["status"]],
            )
            if r["completed_at"] is not None:
                item.add("completed", r["completed_at"])
        cal.add_component(item)
    data: bytes = cal.to_ical()
    return data


async def cmd_ics(args: argparse.Namespace) -> None:
    """Every open task, and the tasks finished in the last --days days (so that a calendar that
    imported them open shows them done or canceled)."""
    now = datetime.now(UTC)
    rows = await with_db(
        lambda conn: center.agenda(
            conn,
            args.person,
            datetime(1900, 1, 1, tzinfo=UTC),
            datetime(9999, 1, 1, tzinfo=UTC),
            include_closed=True,
            now=now,
        )
    )
    since = now - timedelta(days=args.days)
    rows = [
        r for r in rows if r["status"] == "open" or (r["completed_at"] or r["canceled_at"] or now) >= since
    ]
    data = ics(args.person, rows, events=args.events, now=now)
    if args.out == "-":
        sys.stdout.buffer.write(data)
    else:
        try:
            await asyncio.to_thread(Path(args.out).write_bytes, data)
        except OSError as err:
            raise CliError(f"cannot write {args.out}: {err.strerror}") from None
        print(f"{args.out}: {len(rows)} task{'s' if len(rows) != 1 else ''} of {args.person}")


def add_commands(sub: Any) -> None:
    p = command_parser(sub, "inbox", help="a person's notifications: unread first, newest first")
    p.add_argument("person", metavar="PERSON")
    p.add_argument("--unread", action="store_true", help="only the unread ones")
    p.add_argument("--limit", type=positive_int, default=50, help="at most this many (50)")
    p.add_argument("--actor", default=default_actor(), help=READER_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_inbox)

    p = command_parser(sub, "read", help="mark a person's notifications read")
    p.add_argument("person", metavar="PERSON")
    p.add_argument("ids", nargs="*", metavar="NOTIFICATION_ID")
    p.add_argument("--all", action="store_true", help="all of them")
    p.add_argument("--actor", default=default_actor(), help=READER_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_read)

    p = command_parser(sub, "agenda", help="a person's tasks in a date range (default: two weeks from today)")
    p.add_argument("person", metavar="PERSON")
    p.add_argument("--from", dest="start", metavar="WHEN", help="ISO 8601 date or date-time (UTC if no zone)")
    p.add_argument("--to", dest="end", metavar="WHEN", help="ISO 8601 date or date-time (UTC if no zone)")
    p.add_argument("--all", action="store_true", help="completed and canceled tasks too")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_agenda)

    p = command_parser(
        sub, "ics", help="a person's tasks as an iCalendar file (.ics) to import or subscribe to"
    )
    p.add_argument("person", metavar="PERSON")
    p.add_argument("--out", default="-", metavar="FILE", help="default: standard output")
    p.add_argument("--events", action="store_true", help="events at the due time, not to-dos")
    p.add_argument(
        "--days", type=positive_int, default=30, help="finished tasks of the last DAYS days too (30)"
    )
    p.set_defaults(run=cmd_ics)

    people = command_parser(sub, "people", help="people and their managers (escalations go to the manager)")
    people.add_argument("--json", action="store_true", help="print JSON")
    people.set_defaults(run=cmd_people)
    commands = people.add_subparsers(dest="people_command", metavar="PEOPLE_COMMAND")
    p = command_parser(commands, "set", help="add a person, or change their manager, email or role")
    p.add_argument("name", metavar="NAME", nargs="?", help="default: you (your user name)")
    p.add_argument("--manager", help="whom they report to: escalations go there")
    p.add_argument("--no-manager", action="store_true", help="remove their manager")
    p.add_argument("--email", help="their e-mail address")
    p.add_argument(
        "--role", choices=["member", "admin"], help="admins may do anything; only an admin gives roles"
    )
    p.add_argument("--actor", default=default_actor(), help="who gives the role (default: you)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_people_set)
    p = command_parser(commands, "remove", help="remove a person nobody reports to")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_people_remove)
