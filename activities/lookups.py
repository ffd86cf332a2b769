"""Administration of the Opportunity stages lookup: list, add, change, remove, with the checks
that keep the model whole. Running processes take up an added stage when a command names it."""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic import ValidationError

from activities import definitions
from activities.errors import Refused
from activities.repository import load_stages
from workflows.definition import Process, ProcessDefinition, Stage


class EditRefused(Refused):
    """An edit the model does not allow; the text says why and what to do instead."""


async def list_stages(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT s.name, s.sort_order, s.is_final, s.is_successful, s.probability,"
        " (SELECT count(*) FROM opportunities o WHERE o.stage = s.name AND o.closed_at IS NULL)"
        " AS open_opportunities"
        " FROM stages s ORDER BY s.sort_order"
    )
    return [dict(r) for r in rows]


def _check(stages: list[Stage], in_use: list[ProcessDefinition]) -> None:
    """The lookup as it would be after the edit: refuse what breaks the process (the latest
    definition, and every version an open opportunity's run follows)."""
    for s in stages:
        if s.successful is not None and not s.final:
            raise EditRefused(f"stage {s.name!r}: only a final stage is successful or not")
    if not any(s.final and s.successful for s in stages):
        raise EditRefused("the lookup needs a final, successful stage (where won opportunities end)")
    if not any(s.final and not s.successful for s in stages):
        raise EditRefused("the lookup needs a final, unsuccessful stage (where lost opportunities end)")
    if min(stages, key=lambda s: s.order).final:
        raise EditRefused("the first stage by order cannot be final: new opportunities start there")
    orders = [s.order for s in stages]
    if len(set(orders)) != len(orders):
        raise EditRefused(f"two stages would have the same order; orders in use: {sorted(orders)}")
    for definition in in_use:
        try:
            Process(definition=definition, stages=tuple(stages))
        except ValidationError as err:
            problem = err.errors()[0]["msg"].removeprefix("Value error, ")
            raise EditRefused(
                f"the process definition (version {definition.version}) would not fit: {problem}"
            ) from None


async def _save(conn: asyncpg.Connection, before: Stage | None, after: Stage | None) -> None:
    stages = [s for s in await load_stages(conn) if before is None or s.name != before.name]
    _check([*stages, after] if after else stages, await definitions.in_use(conn))
    if before is not None and after is None:
        await conn.execute("DELETE FROM stages WHERE name = $1", before.name)
        return
    assert after is not None
    await conn.execute(
        "INSERT INTO stages (name, sort_order, is_final, is_successful, probability)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET sort_order = EXCLUDED.sort_order,"
        " is_final = EXCLUDED.is_final, is_successful = EXCLUDED.is_successful,"
        " probability = EXCLUDED.probability",
        after.name,
        after.order,
        after.final,
        after.successful,
        after.probability,
    )


async def _current(conn: asyncpg.Connection, name: str) -> Stage:
    found = [s for s in await load_stages(conn) if s.name == name]
    if not found:
        names = ", ".join(s.name for s in await load_stages(conn))
        raise EditRefused(f"no stage {name!r}; the stages are: {names}")
    return found[0]


async def add_stage(conn: asyncpg.Connection, stage: Stage) -> None:
    async with conn.transaction():
        await conn.execute("LOCK TABLE stages IN SHARE ROW EXCLUSIVE MODE")
        if any(s.name == stage.name for s in await load_stages(conn)):
            raise EditRefused(f"stage {stage.name!r} exists already; change it with `corpsale stages set`")
        await _save(conn, None, stage)


async def change_stage(conn: asyncpg.Connection, name: str, **changes: Any) -> Stage:
    async with conn.transaction():
        await conn.execute("LOCK TABLE stages IN SHARE ROW EXCLUSIVE MODE")
        before = await _current(conn, name)
        try:
            after = before.model_copy(update=changes)
            after = Stage.model_validate(after.model_dump())
        except ValidationError as err:
            raise EditRefused(f"stage {name!r}: {err.errors()[0]['msg']}") from None
        if after.final != before.final:
            open_here = await conn.fetchval(
                "SELECT count(*) FROM opportunities WHERE stage = $1 AND closed_at IS NULL", name
            )
            if open_here:
                raise EditRefused(
                    f"{open_here} open opportunities are at {name!r}: move them first, then make it"
                    f" {'final' if after.final else 'open'}"
                )
        await _save(conn, before, after)
        return after


async def remove_stage(conn: asyncpg.Connection, name: str) -> None:
    async with conn.transaction():
        await conn.execute("LOCK TABLE stages IN SHARE ROW EXCLUSIVE MODE")
        before = await _current(conn, name)
        used = await conn.fetchval(
            "SELECT (SELECT count(*) FROM opportunities WHERE stage = $1)"
            " + (SELECT count(*) FROM stage_visits WHERE stage = $1)",
            name,
        )
        if used:
            raise EditRefused(f"stage {name!r} is in use (opportunities or their history name it); it stays")
        await _save(conn, before, None)
