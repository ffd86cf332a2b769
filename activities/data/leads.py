"""Leads, the system settings and the lead outbox (R3): all their SQL.

A trigger (migration 002) writes an outbox row in the transaction that moves a lead into a stage
that starts the sale while StartOppBusinessProcess is on. The lead relay (worker/lead_relay.py)
reads the rows with these functions.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict

from activities.data.errors import Refused
from activities.data.process_rules import PROCESS_FOR_LEAD
from workflows.fields import Identifier, Money, Name, Text

START_SETTING = "StartOppBusinessProcess"


class LeadError(Refused):
    """A lead command the data does not allow: the text says what to do instead."""


class NewLead(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier
    title: Name
    customer: Name
    owner: Name
    contact: Name | None = None
    need: Text | None = None
    budget: Money | None = None
    stage: Name = "New"
    lead_type: Name | None = None  # what kind of lead (`smb`, `enterprise`, ...): the process rules read it


def opportunity_id_for(lead_id: str) -> str:
    """The opportunity a lead becomes: one per lead, by construction."""
    return f"lead-{lead_id}"


async def lead_stages(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT name, sort_order, starts_sale FROM lead_stages ORDER BY sort_order")
    return [dict(r) for r in rows]


async def _check_stage(conn: asyncpg.Connection, stage: str) -> None:
    names = [s["name"] for s in await lead_stages(conn)]
    if stage not in names:
        raise LeadError(f"no lead stage {stage!r}; the lead stages are: {', '.join(names)}")


async def add_lead(conn: asyncpg.Connection, lead: NewLead) -> dict[str, Any]:
    await _check_stage(conn, lead.stage)
    row = await conn.fetchrow(
        "INSERT INTO leads (id, title, customer, owner, contact, need, budget, stage, lead_type)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING RETURNING *",
        lead.id,
        lead.title,
        lead.customer,
        lead.owner,
        lead.contact,
        lead.need,
        lead.budget,
        lead.stage,
        lead.lead_type,
    )
    if row is None:
        raise LeadError(f"lead {lead.id!r} exists already; move it with `corpsale lead move`")
    return dict(row)


async def move_lead(conn: asyncpg.Connection, lead_id: str, stage: str) -> dict[str, Any]:
    await _check_stage(conn, stage)
    row = await conn.fetchrow(
        "UPDATE leads SET stage = $2, updated_at = now() WHERE id = $1 RETURNING *", lead_id, stage
    )
    if row is None:
        raise LeadError(f"no lead {lead_id!r}")
    return dict(row)


async def get_lead(conn: asyncpg.Connection, lead_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT l.*, (SELECT count(*) FROM lead_outbox o WHERE o.lead_id = l.id"
        " AND o.processed_at IS NULL AND o.failed_at IS NULL) AS starts_pending,"
        " (SELECT o.last_error FROM lead_outbox o WHERE o.lead_id = l.id AND o.processed_at IS NULL"
        "  AND o.failed_at IS NOT NULL ORDER BY o.id DESC LIMIT 1) AS start_failed"
        " FROM leads l WHERE l.id = $1",
        lead_id,
    )
    return dict(row) if row else None


async def list_leads(conn: asyncpg.Connection, stage: str | None, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM leads WHERE $1::text IS NULL OR stage = $1 ORDER BY created_at, id LIMIT $2",
        stage,
        limit,
    )
    return [dict(r) for r in rows]


async def settings(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT name, value, description, updated_at FROM system_settings ORDER BY name")
    return [dict(r) for r in rows]


async def set_setting(conn: asyncpg.Connection, name: str, value: bool) -> dict[str, Any]:
    row = await conn.fetchrow(
        "UPDATE system_settings SET value = $2, updated_at = now() WHERE name = $1 RETURNING *", name, value
    )
    if row is None:
        known = ", ".join(s["name"] for s in await settings(conn))
        raise LeadError(f"no setting {name!r}; the settings are: {known}")
    return dict(row)


# The relay's side ------------------------------------------------------------------------------


async def claim_pending(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Outbox rows not yet relayed, with their leads; locked for this transaction (another relay
    skips them)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT o.id AS outbox_id, l.* FROM lead_outbox o JOIN leads l ON l.id = o.lead_id"
        " WHERE o.processed_at IS NULL AND o.failed_at IS NULL"
        " ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
        limit,
    )
    return rows


async def opportunity_from_lead(conn: asyncpg.Connection, lead: asyncpg.Record) -> tuple[str, str]:
    """Create the lead's opportunity (customer, contact, owner, need and budget carried over; the
    sales process its rules pick, activities/data/process_rules.py) and point the lead at it; a
    second call changes nothing. Returns the opportunity id and its process."""
    opportunity_id: str = lead["opportunity_id"] or opportunity_id_for(lead["id"])
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO opportunities (id, title, customer, contact, owner, need, budget, process)"
            f" VALUES ($3, $4, $5, $6, $7, $8, $2, {PROCESS_FOR_LEAD}) ON CONFLICT (id) DO NOTHING",
            lead["lead_type"],
            lead["budget"],
            opportunity_id,
            lead["title"],
            lead["customer"],
            lead["contact"],
            lead["owner"],
            lead["need"],
        )
        await conn.execute(
            "UPDATE leads SET opportunity_id = $2, updated_at = now()"
            " WHERE id = $1 AND opportunity_id IS NULL",
            lead["id"],
            opportunity_id,
        )
        process: str = await conn.fetchval("SELECT process FROM opportunities WHERE id = $1", opportunity_id)
    return opportunity_id, process


async def mark_relayed(conn: asyncpg.Connection, outbox_id: int) -> None:
    await conn.execute("UPDATE lead_outbox SET processed_at = now() WHERE id = $1", outbox_id)


async def mark_failed(conn: asyncpg.Connection, outbox_id: int, problem: str) -> None:
    """Set the row aside: the lead cannot become an opportunity as it is."""
    await conn.execute(
        "UPDATE lead_outbox SET failed_at = now(), last_error = $2 WHERE id = $1", outbox_id, problem
    )


async def retry(conn: asyncpg.Connection, lead_id: str) -> int:
    """Take up the lead's failed start again (after its data was corrected)."""
    status = await conn.execute(
        "UPDATE lead_outbox SET failed_at = NULL, last_error = NULL"
        " WHERE lead_id = $1 AND processed_at IS NULL AND failed_at IS NOT NULL",
        lead_id,
    )
    retried = int(status.split()[-1])
    if not retried:
        raise LeadError(f"lead {lead_id!r} has no failed start to retry")
    return retried
