"""What a journaled write drafts as its step runs, its business events and its task workflow
operations, gathered here and written with the write's journal entry in one statement
(`journal_record`, migrations/019) instead of a round trip each. Outside a journaled write (a run
from before the journal, a transaction of its own) there is nothing to gather: `of` answers None
and the caller writes at once."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg


@dataclass
class Drafts:
    conn: asyncpg.Connection
    events: list[dict[str, Any]] = field(default_factory=list)
    ops: list[dict[str, Any]] = field(default_factory=list)

    def event(self, event_id: str, kind: str, at: datetime | None, data: dict[str, Any]) -> None:
        """An event, its time `at` (the database's now when None), as `emit_event` takes it."""
        time = None if at is None else at.astimezone(UTC).isoformat()
        self.events.append({"id": event_id, "type": kind, "time": time, "data": data})

    def op(self, kind: str, task_id: str, args: dict[str, Any]) -> None:
        self.ops.append({"kind": kind, "task_id": task_id, "args": args})

    def as_json(self) -> tuple[str, str]:
        """The events and the operations as `journal_record` takes them (`to_json`)."""
        return to_json(self.events), to_json(self.ops)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):  # RFC 3339, as the CloudEvent's own time
        return (value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)  # a decimal: its text, exact


def to_json(value: Any) -> str:
    """Event data (and task operations) as JSON: a time in RFC 3339 (`2030-05-04T10:00:00+00:00`),
    a date as `2030-05-04`, a decimal as its text, so that one format reads every event."""
    return json.dumps(value, default=_plain)


_gathering: ContextVar[Drafts | None] = ContextVar("corpsale_drafts", default=None)


def of(conn: asyncpg.Connection) -> Drafts | None:
    """The drafts of the journaled write under way on `conn`, if one is."""
    drafts = _gathering.get()
    return drafts if drafts is not None and drafts.conn is conn else None


@contextlib.contextmanager
def gathering(conn: asyncpg.Connection) -> Iterator[Drafts]:
    """Gather what the step drafts on `conn` until the block ends."""
    drafts = Drafts(conn)
    token = _gathering.set(drafts)
    try:
        yield drafts
    finally:
        _gathering.reset(token)
