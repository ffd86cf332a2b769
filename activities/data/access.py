"""Who may do what, from PostgreSQL (R24): the check a process makes of each command (a signed
actor where one is required, then the rules of workflows/permissions.py with what the people
directory says), and the administration of the service keys that sign commands."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import asyncpg

from activities.data.errors import Refused
from workflows import signing
from workflows.permissions import Asked, Directory, may, refusal
from workflows.steps import Authorize

REQUIRE_SIGNED = "RequireSignedCommands"


class AccessRefused(Refused):
    """A key administration step that is not allowed; the text says why."""


async def authorize(conn: asyncpg.Connection, check: Authorize) -> str | None:
    """None if the command may go ahead, else why not (one line)."""
    signature = check.payload.get("signature")
    if signature is not None:
        problem = await _signature_problem(conn, check, signature)
        if problem is not None:
            return problem
        return await may_do(conn, check.asked)
    # Unsigned (the usual case): the setting and the people in one round trip.
    rows = await conn.fetch(
        "SELECT s.value AS require_signed, s.teams, p.name, p.role, p.manager"
        " FROM (SELECT (SELECT value FROM system_settings WHERE name = $2) AS value, " + _teams(3) + ") AS s"
        " LEFT JOIN people p ON p.name = ANY($1::text[])",
        check.asked.people(),
        REQUIRE_SIGNED,
        _team_member(check.asked),
    )
    if rows[0]["require_signed"]:
        return (
            f"Unsigned commands are refused here (setting {REQUIRE_SIGNED}): sign it with a service"
            " key (`corpsale services add`; docs/contract.md, Signed commands)."
        )
    people = {r["name"]: r for r in rows if r["name"] is not None}
    return _judge(check.asked, people, rows[0]["teams"])


def _teams(param: int) -> str:
    """The actor's teams, from parameter `param`: the actor for a command on a team's task, else
    NULL (then none, at the cost of an index probe)."""
    return f"(SELECT coalesce(array_agg(team), '{{}}') FROM team_members WHERE person = ${param}) AS teams"


def _team_member(asked: Asked) -> str | None:
    return asked.actor if asked.team is not None else None


async def may_do(conn: asyncpg.Connection, asked: Asked) -> str | None:
    """None if the people directory and the rules let the actor do it, else why not."""
    rows = await conn.fetch(
        "SELECT s.teams, p.name, p.role, p.manager FROM (SELECT " + _teams(2) + ") AS s"
        " LEFT JOIN people p ON p.name = ANY($1::text[])",
        asked.people(),
        _team_member(asked),
    )
    return _judge(asked, {r["name"]: r for r in rows if r["name"] is not None}, rows[0]["teams"])


def _judge(asked: Asked, people: dict[str, asyncpg.Record], teams: list[str]) -> str | None:
    actor = asked.actor
    directory = Directory(
        admin=actor in people and people[actor]["role"] == "admin",
        manages=frozenset(name for name, r in people.items() if actor and r["manager"] == actor),
        teams=frozenset(teams),
    )
    return None if may(asked, directory) else refusal(asked)


async def _signature_problem(
    conn: asyncpg.Connection, check: Authorize, signature: dict[str, Any]
) -> str | None:
    service = signature.get("service")
    key = await conn.fetchrow(
        "SELECT secret, person, revoked_at FROM service_keys WHERE service = $1", service
    )
    if key is None or key["revoked_at"] is not None:
        state = "revoked" if key is not None else "not registered"
        return f"Service {service!r} is {state}: its signatures are refused (`corpsale services`)."
    if not signing.matches(key["secret"], check.workflow_id, check.command, check.payload):
        return (
            f"The signature of {service!r} does not match the command: sign the command as sent, with"
            " the workflow id and command name (docs/contract.md, Signed commands)."
        )
    signed_at = datetime.fromisoformat(str(signature.get("signed_at")).replace("Z", "+00:00"))
    if check.at - signed_at > signing.MAX_AGE:
        return f"The signature of {service!r} is from {signed_at:%Y-%m-%d %H:%M} UTC, too old: sign it anew."
    if signed_at - check.at > signing.MAX_AHEAD:
        return (
            f"The signature of {service!r} is dated {signed_at:%Y-%m-%d %H:%M} UTC, ahead of the"
            f" process's clock ({check.at:%Y-%m-%d %H:%M} UTC): sign it with the time it is sent"
            " (check the signer's clock)."
        )
    person, actor = key["person"], check.asked.actor
    if person is not None and actor != person and not await is_admin(conn, person):
        return f"The key {service!r} is {person}'s: it signs only as {person}, not as {actor or 'nobody'}."
    return None


async def add_service(conn: asyncpg.Connection, service: str, person: str | None) -> str:
    """Register a service (or a person's own key) and return its secret, shown only this once."""
    secret = secrets.token_urlsafe(32)
    status = await conn.execute(
        "INSERT INTO service_keys (service, secret, person) VALUES ($1, $2, $3)"
        " ON CONFLICT (service) DO UPDATE SET secret = EXCLUDED.secret, person = EXCLUDED.person,"
        " created_at = now(), revoked_at = NULL WHERE service_keys.revoked_at IS NOT NULL",
        service,
        secret,
        person,
    )
    if status == "INSERT 0 0":
        raise AccessRefused(
            f"service {service!r} has a key already; revoke it first (`corpsale services revoke {service}`)"
        )
    return secret


async def list_services(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT service, person, created_at, revoked_at FROM service_keys ORDER BY service"
    )
    return [dict(r) for r in rows]


async def revoke_service(conn: asyncpg.Connection, service: str) -> None:
    status = await conn.execute(
        "UPDATE service_keys SET revoked_at = now() WHERE service = $1 AND revoked_at IS NULL", service
    )
    if status == "UPDATE 0":
        raise AccessRefused(f"no key of service {service!r} in use")


async def is_admin(conn: asyncpg.Connection, person: str) -> bool:
    return bool(await conn.fetchval("SELECT role = 'admin' FROM people WHERE name = $1", person))
