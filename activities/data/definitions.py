"""The process library (R16): named sales processes (`corporate-sale`, `small-business-sale`, ...),
each with published versions of its definition, numbered per process.

A version, once published, never changes. A run takes the latest version of its process when it
starts and keeps it to its end (the definition travels in the run's state, also across
continue-as-new), so publishing changes what new runs do and nothing else. Publishing checks the
definition against the lookups it runs with; content equal to the latest version of its process
publishes nothing; a file naming a process the library does not have yet adds that process.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from pydantic import ValidationError

from activities.data import teams
from activities.data.errors import Refused
from activities.data.repository import close_reasons, load_stages
from workflows.definition import Process, ProcessDefinition, StageTasks, bundled_definitions
from workflows.fields import DEFAULT_PROCESS

BUNDLED_BY = "bundled with the product"
TOO_DEEP = (
    "the file is nested too deeply to be a definition (a definition nests a few levels);"
    " start from `corpsale definition export`"
)


class DefinitionRefused(Refused):
    """A definition that cannot be published; the text lists every problem found."""


class UnknownVersion(Refused, LookupError):
    """No such version in the process library."""


class UnknownProcess(UnknownVersion):
    """No such process in the process library."""


def _decode(row: asyncpg.Record) -> ProcessDefinition:
    doc = row["definition"]
    return ProcessDefinition.model_validate(json.loads(doc) if isinstance(doc, str) else doc)


async def publish_bundled(conn: asyncpg.Connection) -> list[str]:
    """Publish each process bundled with the product into its empty library (a new database, a
    process new in this release), or over an older bundled version (an upgrade), unless someone
    has published a version of their own since: theirs stays in force. Returns what it published
    (`process vN`)."""
    # As publish() does: no publisher between this read and the insert.
    await conn.execute("LOCK TABLE process_definitions IN SHARE ROW EXCLUSIVE MODE")
    published = []
    for definition in bundled_definitions():
        await conn.execute(
            "INSERT INTO sale_processes (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", definition.process
        )
        newest = await conn.fetchrow(
            "SELECT version, published_by FROM process_definitions WHERE process = $1"
            " ORDER BY version DESC LIMIT 1",
            definition.process,
        )
        if newest is not None and (
            newest["published_by"] != BUNDLED_BY or newest["version"] >= definition.version
        ):
            continue
        await insert_version(conn, definition, BUNDLED_BY)
        published.append(f"{definition.process} v{definition.version}")
    return published


async def insert_version(conn: asyncpg.Connection, definition: ProcessDefinition, published_by: str) -> None:
    """Store a version as it is (publish() checks and numbers it first)."""
    await conn.execute(
        "INSERT INTO process_definitions (process, version, name, definition, published_by)"
        " VALUES ($1, $2, $3, $4::jsonb, $5)",
        definition.process,
        definition.version,
        definition.name,
        definition.model_dump_json(),
        published_by,
    )


async def processes(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every process of the library: whether it is the default, its latest version and name, how
    many versions it has, and its open deals."""
    rows = await conn.fetch(
        "SELECT p.name AS process, p.is_default AS default, d.version AS latest, d.name,"
        " (SELECT count(*) FROM process_definitions v WHERE v.process = p.name) AS versions,"
        " (SELECT count(*) FROM opportunities o WHERE o.process = p.name AND o.closed_at IS NULL"
        "  AND o.stage IS NOT NULL) AS open_deals"
        " FROM sale_processes p LEFT JOIN LATERAL (SELECT version, name FROM process_definitions"
        "  WHERE process = p.name ORDER BY version DESC LIMIT 1) d ON true"
        " ORDER BY p.is_default DESC, p.name"
    )
    return [dict(r) for r in rows]


async def known(conn: asyncpg.Connection, process: str) -> None:
    """UnknownProcess unless the library has `process`."""
    if not await conn.fetchval("SELECT true FROM sale_processes WHERE name = $1", process):
        names = [r["name"] for r in await conn.fetch("SELECT name FROM sale_processes ORDER BY name")]
        raise UnknownProcess(
            f"no process {process!r} in the process library; its processes: {', '.join(names)}"
        )


async def default_process(conn: asyncpg.Connection) -> str:
    name: str | None = await conn.fetchval("SELECT name FROM sale_processes WHERE is_default")
    return name or DEFAULT_PROCESS


async def latest(conn: asyncpg.Connection, process: str = DEFAULT_PROCESS) -> ProcessDefinition:
    row = await conn.fetchrow(
        "SELECT definition FROM process_definitions WHERE process = $1 ORDER BY version DESC LIMIT 1", process
    )
    if row is None:
        await known(conn, process)
        raise UnknownVersion(
            f"the {process} process has no version: publish one (`corpsale definition publish`)"
        )
    return _decode(row)


async def version(conn: asyncpg.Connection, number: int, process: str = DEFAULT_PROCESS) -> ProcessDefinition:
    row = await conn.fetchrow(
        "SELECT definition FROM process_definitions WHERE process = $1 AND version = $2", process, number
    )
    if row is None:
        await known(conn, process)
        versions = [
            r["version"]
            for r in await conn.fetch(
                "SELECT version FROM process_definitions WHERE process = $1 ORDER BY 1", process
            )
        ]
        raise UnknownVersion(f"no version {number} of the {process} process; its versions: {versions}")
    return _decode(row)


async def stage_guide(
    conn: asyncpg.Connection, number: int | None, stage: str, process: str = DEFAULT_PROCESS
) -> StageTasks | None:
    """What a version of a process's definition (the latest, without one) gives `stage`: its
    goal, guidance and key fields, with its tasks."""
    try:
        definition = await version(conn, number, process) if number else await latest(conn, process)
    except UnknownVersion:
        return None
    return next((part for part in definition.stages if part.stage == stage), None)


async def list_versions(conn: asyncpg.Connection, process: str | None = None) -> list[dict[str, Any]]:
    """Every version (of one process, or of all), newest first, with the open opportunities whose
    run follows it."""
    rows = await conn.fetch(
        "SELECT d.process, d.version, d.name, d.published_at, d.published_by,"
        " (SELECT count(*) FROM stage_visits v JOIN opportunities o ON o.id = v.opportunity_id"
        "  WHERE v.process = d.process AND v.definition_version = d.version AND v.left_at IS NULL"
        "  AND o.closed_at IS NULL) AS open_opportunities"
        " FROM process_definitions d WHERE $1::text IS NULL OR d.process = $1"
        " ORDER BY d.process <> (SELECT name FROM sale_processes WHERE is_default), d.process,"
        " d.version DESC",
        process,
    )
    if not rows and process is not None:
        await known(conn, process)
    return [dict(r) for r in rows]


async def in_use(conn: asyncpg.Connection) -> list[ProcessDefinition]:
    """The versions a lookup edit must keep working: each process's latest (new runs take it) and
    every version an open opportunity's run follows."""
    rows = await conn.fetch(
        "SELECT definition FROM process_definitions d WHERE version = (SELECT max(version) FROM"
        " process_definitions l WHERE l.process = d.process) OR (process, version) IN (SELECT"
        " v.process, v.definition_version FROM stage_visits v JOIN opportunities o ON o.id ="
        " v.opportunity_id WHERE v.left_at IS NULL AND o.closed_at IS NULL) ORDER BY process, version DESC"
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
    missing = await teams.missing(conn, process.teams())
    found += [f"team {name!r} does not exist: create it first (`corpsale teams add {name} --members ...`)"
              for name in missing]  # fmt: skip
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
    """The file as the version of its process it would be published as; DefinitionRefused if it
    cannot be."""
    definition = parse(text, 1)
    newest = await conn.fetchval(
        "SELECT max(version) FROM process_definitions WHERE process = $1", definition.process
    )
    definition = definition.model_copy(update={"version": (newest or 0) + 1})
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
        if definition.version > 1 and same(current := await latest(conn, definition.process), definition):
            return current, False
        await conn.execute(  # a process new to the library comes with its first version
            "INSERT INTO sale_processes (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", definition.process
        )
        await insert_version(conn, definition, actor)
        return definition, True
