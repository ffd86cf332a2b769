"""Administration of the Opportunity stages lookup: list, add, change, remove, with the checks
that keep the model whole. Running processes take up an added stage when a command names it.

Names are stored and looked up in NFKC without surrounding whitespace, and a new name that looks
like an existing one (character by character the same or homoglyphs in Unicode's TR39 confusables
data, as confusable-homoglyphs ships it, with or without case) is refused: two stages that read
the same in a list send opportunities to the wrong one."""

from __future__ import annotations

import unicodedata
from functools import cache
from typing import Any

import asyncpg
from confusable_homoglyphs import confusables  # type: ignore[import-untyped]  # no type information
from pydantic import ValidationError

from activities.data import definitions
from activities.data.errors import Refused
from activities.data.repository import load_stages
from workflows.definition import Process, ProcessDefinition, Stage


class EditRefused(Refused):
    """An edit the model does not allow; the text says why and what to do instead."""


def stage_name(name: str) -> str:
    """A stage name as the lookup stores and compares it: NFKC, without surrounding whitespace."""
    return unicodedata.normalize("NFKC", name).strip()


# The data wraps right-to-left characters in these marks so that it prints legibly.
_DIRECTION_MARKS = str.maketrans("", "", "\u200e\u200f")


@cache
def _look_alike_classes() -> dict[str, str]:
    """Every character the confusables data pairs with another, mapped to one member of its class
    of look-alikes. The data pairs each character with its prototype ("1" and "I" with "l"), so the
    classes join the pairs transitively, as a TR39 skeleton would. Pairs with a sequence ("m" and
    "rn") are left out: names are compared character by character."""
    parent: dict[str, str] = {}

    def root(char: str) -> str:
        while parent.setdefault(char, char) != char:
            char = parent[char]
        return char

    for char, homoglyphs in confusables.confusables_data.items():
        for homoglyph in homoglyphs:
            pair = char.translate(_DIRECTION_MARKS), homoglyph["c"].translate(_DIRECTION_MARKS)
            if len(pair[0]) == len(pair[1]) == 1:
                first, second = sorted(map(root, pair))
                parent[second] = first
    return {char: root(char) for char in parent}


def _glyphs(name: str) -> list[str]:
    """`name` as it reads: decomposed (the data pairs Cyrillic ie with "e", and so Cyrillic io with
    "ë"), each character as its class of look-alikes."""
    classes = _look_alike_classes()
    return [classes.get(char, char) for char in unicodedata.normalize("NFKD", name)]


def _looks_like(name: str, other: str) -> bool:
    """The same length and, at every position, the same character or look-alikes; as written or
    once case is ignored ("I" looks like "l", and "PROPOSAL" like "Proposal" only without case)."""
    return _glyphs(name) == _glyphs(other) or _glyphs(name.casefold()) == _glyphs(other.casefold())


def _first_difference(name: str, other: str) -> str:
    """Where `name` departs from `other`, as " (U+03A1 GREEK CAPITAL LETTER RHO at position 1)"."""
    pairs = enumerate(zip(name, other, strict=False))
    index = next((i for i, (mine, theirs) in pairs if mine != theirs), min(len(name), len(other)))
    if index == len(name):
        return ""
    char = name[index]
    return f" (U+{ord(char):04X} {unicodedata.name(char, 'unnamed character')} at position {index + 1})"


def _refuse_look_alike(name: str, others: list[Stage]) -> None:
    for other in others:
        if _looks_like(name, other.name):
            raise EditRefused(
                f"stage {name!r} looks like the existing stage {other.name!r}"
                f"{_first_difference(name, stage_name(other.name))}; choose another name"
            )


def _normalised(stage: Stage) -> Stage:
    try:
        return Stage.model_validate({**stage.model_dump(), "name": stage_name(stage.name)})
    except ValidationError as err:
        raise EditRefused(f"stage name {stage.name!r}: {err.errors()[0]['msg']}") from None


def _named(stages: list[Stage], name: str) -> Stage | None:
    """The stage an operator means: the exact name, else the one equal to it in NFKC (a name typed
    decomposed, or with a space around it)."""
    exact = next((s for s in stages if s.name == name), None)
    return exact or next((s for s in stages if stage_name(s.name) == stage_name(name)), None)


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
    if after is not None and (before is None or after.name != before.name):
        _refuse_look_alike(after.name, stages)
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
    stages = await load_stages(conn)
    found = _named(stages, name)
    if found is None:
        names = ", ".join(s.name for s in stages)
        raise EditRefused(f"no stage {name!r}; the stages are: {names}")
    return found


async def add_stage(conn: asyncpg.Connection, stage: Stage) -> None:
    stage = _normalised(stage)
    async with conn.transaction():
        await conn.execute("LOCK TABLE stages IN SHARE ROW EXCLUSIVE MODE")
        if _named(await load_stages(conn), stage.name) is not None:
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
        if after.name != before.name:
            after = _normalised(after)
        if after.final != before.final:
            open_here = await conn.fetchval(
                "SELECT count(*) FROM opportunities WHERE stage = $1 AND closed_at IS NULL", before.name
            )
            if open_here:
                raise EditRefused(
                    f"{open_here} open opportunities are at {before.name!r}: move them first, then make it"
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
            before.name,
        )
        if used:
            raise EditRefused(
                f"stage {before.name!r} is in use (opportunities or their history name it); it stays"
            )
        await _save(conn, before, None)
