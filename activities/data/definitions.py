"""The process library (R16): published versions of the process definition.

A version, once published, never changes. A run takes the latest version when it starts and
keeps it to its end (the definition travels in the run's state, also across continue-as-new),
so publishing changes what new runs do and nothing else. Publishing checks the definition
against the lookups it runs with; content equal to the latest version publishes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from pydantic import ValidationError

from activities.data.errors import Refused
from activities.data.repository import close_reasons, load_stages
from workflows.definition import Process, ProcessDefinition, StageTasks, load_default_definition

BUNDLED_BY = "bundled with the product"
TOO_DEEP = (
    "the file is nested too deeply to be a definition (a definition nests a few levels);"
    " start from `corpsale definition export`"
)


class DefinitionRefused(Refused):
    """A definition that cannot be published; the text lists every problem found."""


class UnknownVersion(Refused, LookupError):
    """No such version in the process library."""


def _decode(row: asyncpg.Record) -> ProcessDefinition:
    doc = row["definition"]
    return ProcessDefinition.model_validate(json.loads(doc) if isinstance(doc, str) else doc)


async def publish_bundled(conn: asyncpg.Connection) -> int | None:
    """Publish the definition bundled with the product into an empty library (a new database),
    or over an older bundled one (an upgrade), unless someone has published a version of their
    own since: theirs stays in force. Returns the version published, if any."""
    definition = load_default_definition()
    # As publish() does: no publisher between this read and the insert.
    await conn.execute("LOCK TABLE process_definitions IN SHARE ROW EXCLUSIVE MODE")
    newest = await conn.fetchrow(
        "SELECT version, published_by FROM process_definitions ORDER BY version DESC LIMIT 1"
    )
    if newest is not None and (
        newest["published_by"] != BUNDLED_BY or newest["version"] >= definition.version
    ):
        return None
    await insert_version(conn, definition, BUNDLED_BY)
    return definition.version


async def insert_version(conn: asyncpg.Connection, definition: ProcessDefinition, published_by: str) -> None:
    """Store a version as it is (publish() checks and numbers it first)."""
    await conn.execute(
        "INSERT INTO process_definitions (version, name, definition, published_by)"
        " VALUES ($1, $2, $3::jsonb, $4)",
        definition.version,
        definition.name,
        definition.model_dump_json(),
        published_by,
    )


async def latest(conn: asyncpg.Connection) -> ProcessDefinition:
    row = await conn.fetchrow("SELECT definition FROM process_definitions ORDER BY version DESC LIMIT 1")
    if row is None:
        raise UnknownVersion("the process library is empty: the migrations publish the bundled definition")
    return _decode(row)


async def version(conn: asyncpg.Connection, number: int) -> ProcessDefinition:
    row = await conn.fetchrow("SELECT definition FROM process_definitions WHERE version = $1", number)
    if row is None:
        known = [r["version"] for r in await conn.fetch("SELECT version FROM process_definitions ORDER BY 1")]
        raise UnknownVersion(f"no version {number} in the process library; its versions: {known}")
    return _decode(row)


async def stage_guide(conn: asyncpg.Connection, number: int | None, stage: str) -> StageTasks | None:
    """What a version of the definition (the latest, without one) gives `stage`: its goal,
    guidance and key fields, with its tasks."""
    try:
        definition = await version(conn, number) if number else await latest(conn)
    except UnknownVersion:
        return None
    return next((part for part in definition.stages if part.stage == stage), None)


async def list_versions(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every version, newest first, with the open opportunities whose run follows it."""
    rows = await conn.fetch(
        "SELECT d.version, d.name, d.published_at, d.published_by,"
        " (SELECT count(*) FROM stage_visits v JOIN opportunities o ON o.id = v.opportunity_id"
        "  WHERE v.definition_version = d.version AND v.left_at IS NULL AND o.closed_at IS NULL)"
        " AS open_opportunities"
        " FROM process_definitions d ORDER BY d.version DESC"
    )
    return [dict(r) for r in rows]


async def in_use(conn: asyncpg.Connection) -> list[ProcessDefinition]:
    """The versions a lookup edit must keep working: the latest (new runs take it) and every
    version an open opportunity's run follows."""
    rows = await conn.fetch(
        "SELECT definition FROM process_definitions WHERE version = (SELECT max(version) FROM"
        " process_definitions) OR version IN (SELECT v.definition_version FROM stage_visits v"
        " JOIN opportunities o ON o.id = v.opportunity_id WHERE v.left_at IS NULL AND"
        " o.closed_at IS NULL) ORDER BY version DESC"
    )
    return [_decode(r) for r in rows]


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(map(str, loc)) or "the document"


def parse(text: str, number: int) -> ProcessDefinition:
    """A definition file (JSON) as the model, numbered `number`: the file's own `version`, if it
    has one, is replaced, since publishing numbers versions. Every problem is reported at once."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise DefinitionRefused("a definition is a JSON object with name, stages and follow_up")
        return ProcessDefinition.model_validate({**doc, "version": number})
    except json.JSONDecodeError as err:
        raise DefinitionRefused(f"not JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except ValidationError as err:
        problems = [f"{_where(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()]
        raise DefinitionRefused("; ".join(problems)) from None
    except RecursionError:  # a definition nests a few levels; this is no definition, not a crash
        raise DefinitionRefused(TOO_DEEP) from None


async def problems(conn: asyncpg.Connection, definition: ProcessDefinition) -> list[str]:
    """What keeps `definition` from running with the lookups as they are now."""
    found: list[str] = []
    stages = await load_stages(conn)
    try:
        process = Process(definition=definition, stages=tuple(stages))
    except ValidationError as err:
        return [e["msg"].removeprefix("Value error, ") for e in err.errors()]
    reasons = set(await close_reasons(conn))
    for stage in definition.stages:
        for task in stage.tasks:
            for o in task.outcomes:
                where = f"task {task.key!r} outcome {o.name!r}"
                closes_lost = o.stage is not None and process.is_lost(o.stage)
                if o.close_reason is not None and not closes_lost:
                    found.append(f"{where}: a close_reason is only for an outcome that closes as lost")
                elif closes_lost and o.close_reason is None:
                    found.append(f"{where} closes as lost: give it a close_reason (`corpsale close-reasons`)")
                elif o.close_reason is not None and o.close_reason not in reasons:
                    found.append(
                        f"{where}: {o.close_reason!r} is not a close reason (`corpsale close-reasons`)"
                    )
    return found


async def validate(conn: asyncpg.Connection, text: str) -> ProcessDefinition:
    """The file as the version it would be published as; DefinitionRefused if it cannot be."""
    newest = await conn.fetchval("SELECT max(version) FROM process_definitions")
    definition = parse(text, (newest or 0) + 1)
    found = await problems(conn, definition)
    if found:
        raise DefinitionRefused("; ".join(found))
    return definition


def same(a: ProcessDefinition, b: ProcessDefinition) -> bool:
    """Equal apart from their numbers: publishing one over the other makes no version."""
    return a.model_dump(exclude={"version"}) == b.model_dump(exclude={"version"})


async def publish(conn: asyncpg.Connection, text: str, actor: str) -> tuple[ProcessDefinition, bool]:
    """Publish the file as the next version. Returns the version in force and whether it is
    new: a file equal to the latest version (apart from its number) publishes nothing, so
    publishing the same file twice makes one version."""
    async with conn.transaction():
        # One publisher at a time: versions are consecutive and the equality check holds.
        await conn.execute("LOCK TABLE process_definitions IN SHARE ROW EXCLUSIVE MODE")
        definition = await validate(conn, text)
        current = await latest(conn)
        if same(current, definition):
            return current, False
        await insert_version(conn, definition, actor)
        return definition, True
