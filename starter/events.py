"""`corpsale events`: the feed of business events (CloudEvents 1.0), for services that would
rather read than be called: every event after a position, of one opportunity or all, and with
--follow the new ones as they come."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from activities.data import events
from starter.common import command_parser, positive_int, with_db

POLL_SECONDS = 1.0


def _line(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    # what the event is about: a task event its task (by id, as in every task event), else the stage
    detail = data.get("task_id") or data.get("stage") or data.get("title") or data.get("to") or ""
    return (
        f"{event['position']:>8}  {event['time']}  {event['subject']}  #{event['sequence']:<4}"
        f" {event['type'].removeprefix(events.TYPE_PREFIX):<22} {detail}"
    )


async def cmd_events(args: argparse.Namespace) -> None:
    async def feed(conn: Any) -> None:
        since = args.since
        while True:
            found = await events.read(conn, since, args.opportunity, args.limit)
            for event in found:
                print(json.dumps(event, ensure_ascii=False) if args.json else _line(event), flush=True)
            since = found[-1]["position"] if found else since
            if not args.follow:
                return
            if len(found) < args.limit:
                await asyncio.sleep(POLL_SECONDS)

    await with_db(feed)


def add_commands(sub: Any) -> None:
    p = command_parser(
        sub,
        "events",
        help="the business events (CloudEvents 1.0): opportunities started, stages entered, tasks, closings",
        description="Every business event after a position, oldest first: its position (the feed's"
        " cursor), time, opportunity, number within the opportunity and type. Each has a stable id;"
        " an opportunity's are numbered without gaps.",
    )
    p.add_argument("--since", type=int, default=0, help="after this position (default: from the first)")
    p.add_argument("--opportunity", help="one opportunity's events only")
    p.add_argument("--limit", type=positive_int, default=1000, help="at most this many at a time (1000)")
    p.add_argument("--follow", action="store_true", help="wait for new events and print them as they come")
    p.add_argument("--json", action="store_true", help="one CloudEvent (JSON) per line")
    p.set_defaults(run=cmd_events)
