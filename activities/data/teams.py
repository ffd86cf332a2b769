"""Teams and their members (SQL; migrations/026): who sees a team's tasks, who may claim them,
and whom an unclaimed one escalates to (the team's lead)."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from activities.data.errors import Refused
from workflows.fields import TEAM_PREFIX

NAME = re.compile(r"^[a-z0-9][a-z0-9\-]{0,62}$")


class TeamRefused(Refused):
    """A team edit that cannot be made; the text says why."""


async def add_team(
    conn: asyncpg.Connection, name: str, members: list[str], lead: str | None
) -> dict[str, Any]:
    """Create the team, or add members to it (and set its lead, when given)."""
    if not NAME.match(name):
        raise TeamRefused(f"a team's name is lowercase letters, digits and dashes (as `legal`), not {name!r}")
    people = [m.strip() for m in members if m.strip()]
    if any(m.startswith(TEAM_PREFIX) for m in [*people, lead or ""]):
        raise TeamRefused(f"a member or lead is a person, not a team ({TEAM_PREFIX}...)")
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO teams (name, lead) VALUES ($1, $2) ON CONFLICT (name)"
            " DO UPDATE SET lead = coalesce(EXCLUDED.lead, teams.lead)",
            name,
            lead,
        )
        await conn.executemany(
            "INSERT INTO team_members (team, person) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(name, p) for p in people],
        )
    found = await team(conn, name)
    assert found is not None
    return found


async def remove_member(conn: asyncpg.Connection, name: str, person: str) -> None:
    if (
        await conn.execute("DELETE FROM team_members WHERE team = $1 AND person = $2", name, person)
        == "DELETE 0"
    ):
        raise TeamRefused(f"{person!r} is not a member of team {name!r}")


async def team(conn: asyncpg.Connection, name: str) -> dict[str, Any] | None:
    found = await list_teams(conn, name)
    return found[0] if found else None


async def list_teams(conn: asyncpg.Connection, name: str | None = None) -> list[dict[str, Any]]:
    """Every team (or the one named): its lead, members, and its tasks that wait for a claim."""
    rows = await conn.fetch(
        "SELECT t.name, t.lead, coalesce(array_agg(m.person ORDER BY m.person)"
        " FILTER (WHERE m.person IS NOT NULL), '{}') AS members,"
        " (SELECT count(*) FROM tasks k WHERE k.owner = 'team:' || t.name AND k.status = 'open') AS unclaimed"
        " FROM teams t LEFT JOIN team_members m ON m.team = t.name WHERE $1::text IS NULL OR t.name = $1"
        " GROUP BY t.name ORDER BY t.name",
        name,
    )
    return [dict(r) for r in rows]


async def missing(conn: asyncpg.Connection, names: set[str]) -> list[str]:
    """Those of `names` that are not teams."""
    found = {
        r["name"]
        for r in await conn.fetch("SELECT name FROM teams WHERE name = ANY($1::text[])", list(names))
    }
    return sorted(names - found)
