"""Webhook subscribers and the deliveries of events to them (SQL).

A subscriber is a URL, the event types it wants (patterns such as `stage.*`) and a secret to sign
with. The relay (worker/webhook_relay.py) fans the feed out to each subscriber, in the feed's
commit order (activities/data/events.py), into one delivery per event it wants, and posts them: each
opportunity's in their numbers' order, the next only once the one before arrived. Several relays
share the work: a subscriber is fanned out by one at a time (`FOR UPDATE SKIP LOCKED`), and a
delivery being posted is claimed for a lease, after which another relay may post it again (a
duplicate on the wire, never a gap). A delivery that fails every attempt is dead, and stops its
subscriber there until `retry`.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import secrets
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from activities.data.events import cloud_event
from workflows.event_data import EVENTS
from workflows.refusals import Refused

SECRET_PREFIX = "whsec_"
MAX_URL = 2_000


# What a subscriber is ------------------------------------------------------------------------


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"not a web address: {url!r}; write it as https://host/path")
    if parts.username or parts.password:
        raise Refused("a webhook address takes no user name or password; the secret signs each event instead")
    if len(url) > MAX_URL:
        raise Refused(f"the address has {len(url)} characters; at most {MAX_URL}")
    return url


def event_patterns(text: str) -> list[str]:
    """`stage.*,opportunity.won` → its patterns; each names at least one event type."""
    patterns = [p.strip().removeprefix("com.corpsale.") for p in text.split(",") if p.strip()]
    if not patterns:
        raise Refused("name the events to send: --events 'stage.*,opportunity.won', or '*' for all")
    for p in patterns:
        if not fnmatch.filter(EVENTS, p):
            raise Refused(f"no event type matches {p!r}; there are: {', '.join(EVENTS)}")
    return patterns


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signing_key(secret: str) -> bytes:
    """The key a secret stands for (Standard Webhooks: `whsec_` and base64 of 24 to 64 bytes)."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not 24 <= len(key) <= 64:
        raise Refused(
            "a secret is whsec_ and the base64 of 24 to 64 random bytes; leave out --secret and one is made"
        )
    return key


# The CLI's commands --------------------------------------------------------------------------


async def add(conn: asyncpg.Connection, url: str, events: list[str], secret: str, by: str) -> None:
    """A subscriber of the events from now on (`replay` sends earlier ones)."""
    signing_key(secret)
    # From now: the events of transactions still running, or yet to come.
    added = await conn.fetchval(
        "INSERT INTO webhooks (url, events, secret, created_by, read_tx)"
        " VALUES ($1, $2, $3, $4, pg_snapshot_xmin(pg_current_snapshot())) ON CONFLICT (url) DO NOTHING"
        " RETURNING true",
        check_url(url),
        events,
        secret,
        by,
    )
    if not added:
        raise Refused(f"{url} is a subscriber already: `corpsale webhooks show {url}`, or remove it first")


async def _id(conn: asyncpg.Connection, url: str) -> int:
    found: int | None = await conn.fetchval("SELECT id FROM webhooks WHERE url = $1", url)
    if found is None:
        raise Refused(f"no subscriber {url}; `corpsale webhooks list` shows them")
    return found


_SUMMARY = """
SELECT w.url, w.events, w.created_at, w.created_by, w.stopped,
       CASE WHEN w.stopped IS NOT NULL THEN 'stopped' WHEN w.paused THEN 'paused' ELSE 'active' END AS state,
       count(*) FILTER (WHERE d.state = 'delivered') AS delivered,
       count(*) FILTER (WHERE d.state = 'pending') AS pending,
       count(*) FILTER (WHERE d.state = 'dead') AS dead,
       max(d.delivered_at) AS last_delivered_at
FROM webhooks w LEFT JOIN deliveries d ON d.webhook_id = w.id
WHERE $1::text IS NULL OR w.url = $1
GROUP BY w.id ORDER BY w.id
"""


async def list_all(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(_SUMMARY, None)]


async def show(conn: asyncpg.Connection, url: str) -> dict[str, Any]:
    """A subscriber, its counts, and the deliveries that have not arrived yet (oldest first)."""
    webhook_id = await _id(conn, url)
    summary = dict(await conn.fetchrow(_SUMMARY, url))
    waiting = await conn.fetch(
        "SELECT e.id AS event_id, e.type, d.opportunity_id, d.sequence, d.state, d.attempts,"
        " d.next_at, d.last_error FROM deliveries d JOIN events e ON e.position = d.position"
        " WHERE d.webhook_id = $1 AND d.state <> 'delivered'"
        " ORDER BY d.state = 'pending', d.position LIMIT 20",
        webhook_id,
    )
    return {**summary, "waiting": [dict(r) for r in waiting]}


async def remove(conn: asyncpg.Connection, url: str) -> None:
    await conn.execute("DELETE FROM webhooks WHERE id = $1", await _id(conn, url))


async def set_paused(conn: asyncpg.Connection, url: str, paused: bool) -> None:
    """A paused subscriber gets nothing, and keeps every event for when it is resumed."""
    await conn.execute("UPDATE webhooks SET paused = $2 WHERE id = $1", await _id(conn, url), paused)


async def retry(conn: asyncpg.Connection, url: str) -> int:
    """Take a stopped subscriber up again at the event it stopped at; returns how many were dead."""
    webhook_id = await _id(conn, url)
    async with conn.transaction():
        status = await conn.execute(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = now(), claim = NULL"
            " WHERE webhook_id = $1 AND state = 'dead'",
            webhook_id,
        )
        await conn.execute("UPDATE webhooks SET stopped = NULL WHERE id = $1", webhook_id)
    return int(status.split()[-1])


async def replay(conn: asyncpg.Connection, url: str, since: datetime) -> int:
    """Send a subscriber's events from `since` on again (with their ids), each opportunity's in
    order; returns how many."""
    patterns = await conn.fetchval("SELECT events FROM webhooks WHERE id = $1", await _id(conn, url))
    status = await conn.execute(
        "INSERT INTO deliveries (webhook_id, position, opportunity_id, sequence)"
        " SELECT w.id, e.position, e.opportunity_id, e.sequence FROM webhooks w JOIN events e"
        " ON e.type LIKE ANY($3::text[]) AND (e.tx, e.position) <= (w.read_tx, w.read_position)"
        " WHERE w.url = $1 AND e.time >= $2"  # later ones than its place in the feed: fanned out anyway
        " ON CONFLICT (webhook_id, position) DO UPDATE SET state = 'pending', attempts = 0,"
        " next_at = now(), claim = NULL, last_error = NULL, delivered_at = NULL",
        url,
        since,
        [_like(p) for p in patterns],
    )
    return int(status.split()[-1])


# The relay's steps ---------------------------------------------------------------------------


async def any_subscriber(conn: asyncpg.Connection) -> bool:
    """Whether anyone subscribes (without one, no event is due anywhere: a delivery goes with its
    subscriber)."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM webhooks)"))


async def fan_out(conn: asyncpg.Connection, batch: int) -> tuple[int, int]:
    """Give each subscriber (not taken by another relay) a delivery of each new event it wants,
    and move its place in the feed on; returns the most events one subscriber went through, and
    how many subscribers it served."""
    most = 0
    async with conn.transaction():
        subscribers = await conn.fetch("SELECT id, events FROM webhooks ORDER BY id FOR UPDATE SKIP LOCKED")
        for w in subscribers:
            scanned = await conn.fetchval(
                """
                WITH batch AS (
                    SELECT e.tx, e.position, e.opportunity_id, e.sequence, e.type
                    FROM events e, webhooks w
                    WHERE w.id = $1 AND (e.tx, e.position) > (w.read_tx, w.read_position)
                      AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
                    ORDER BY e.tx, e.position LIMIT $3
                ), added AS (
                    INSERT INTO deliveries (webhook_id, position, opportunity_id, sequence)
                    SELECT $1, position, opportunity_id, sequence FROM batch WHERE type LIKE ANY($2::text[])
                    ON CONFLICT DO NOTHING
                ), last AS (
                    SELECT tx, position FROM batch ORDER BY tx DESC, position DESC LIMIT 1
                ), moved AS (
                    UPDATE webhooks SET read_tx = last.tx, read_position = last.position FROM last
                    WHERE webhooks.id = $1
                )
                SELECT count(*) FROM batch
                """,
                w["id"],
                [_like(p) for p in w["events"]],
                batch,
            )
            most = max(most, scanned)
    return most, len(subscribers)


async def claim(
    conn: asyncpg.Connection,
    seconds_per_post: float,
    each: int,
    limit: int,
    posting: dict[int, int],
    chain: int = 20,
) -> tuple[uuid.UUID, list[list[dict[str, Any]]]]:
    """Claim, for `seconds_per_post` a post, the next events to post: per subscriber neither paused nor
    stopped, up to `each` opportunities in flight (`posting`: how many are already), `limit` in
    all; per opportunity its next undelivered event and up to `chain` after it, to be posted one
    after the other. Returns the claim's token and the chains: each the attempts (the subscriber,
    its url and secret, the attempts made so far and the event as CloudEvents), in order. A
    subscriber's deliveries are found through its own index entries: one with many waiting
    (paused, stopped) costs the others nothing."""
    token = uuid.uuid4()
    rows = await conn.fetch(
        """
        WITH heads AS (
            SELECT next.webhook_id, next.opportunity_id, next.sequence
            FROM (SELECT id FROM webhooks WHERE NOT paused AND stopped IS NULL) AS w CROSS JOIN LATERAL (
                SELECT d.webhook_id, d.opportunity_id, d.sequence, d.next_at FROM deliveries d
                WHERE d.webhook_id = w.id AND d.state = 'pending' AND d.next_at <= now()
                  AND NOT EXISTS (
                      SELECT 1 FROM deliveries b WHERE b.webhook_id = d.webhook_id
                      AND b.opportunity_id = d.opportunity_id AND b.sequence < d.sequence
                      AND b.state <> 'delivered')
                ORDER BY d.next_at, d.position
                LIMIT greatest(0, $2 - coalesce(
                    (SELECT p.n FROM unnest($4::bigint[], $6::int[]) AS p (id, n) WHERE p.id = w.id), 0))
                FOR UPDATE OF d SKIP LOCKED
            ) AS next
            ORDER BY next.next_at LIMIT $3
        ), chained AS (  -- the head and what follows it, up to the first that is not due
            SELECT f.webhook_id, f.position, count(*) OVER (PARTITION BY f.webhook_id, f.opportunity_id) AS n
            FROM heads h JOIN deliveries f
              ON f.webhook_id = h.webhook_id AND f.opportunity_id = h.opportunity_id AND f.state = 'pending'
             AND f.sequence BETWEEN h.sequence AND h.sequence + $7 AND f.next_at <= now()
            WHERE NOT EXISTS (
                SELECT 1 FROM deliveries g WHERE g.webhook_id = f.webhook_id
                AND g.opportunity_id = f.opportunity_id AND g.sequence > h.sequence
                AND g.sequence < f.sequence AND g.state <> 'delivered' AND g.next_at > now())
        ), claimed AS (
            -- leased for as long as the whole chain can take, a time-out per post
            UPDATE deliveries d SET claim = $1, next_at = now() + make_interval(secs => $5 * c.n + 5)
            FROM chained c WHERE (d.webhook_id, d.position) = (c.webhook_id, c.position)
            RETURNING d.webhook_id, d.position, d.attempts
        )
        SELECT c.webhook_id, c.attempts, w.url, w.secret,
               e.position, e.id, e.opportunity_id, e.sequence, e.type, e.time, e.data, e.process
        FROM claimed c JOIN webhooks w ON w.id = c.webhook_id JOIN events e ON e.position = c.position
        ORDER BY c.webhook_id, e.opportunity_id, e.sequence
        """,
        token,
        each,
        limit,
        list(posting),
        seconds_per_post,
        list(posting.values()),
        chain,
    )
    chains: list[list[dict[str, Any]]] = []
    for r in rows:
        attempt = {k: r[k] for k in ("webhook_id", "attempts", "url", "secret")} | {"event": cloud_event(r)}
        line = (r["webhook_id"], r["opportunity_id"])
        if chains and (chains[-1][0]["webhook_id"], chains[-1][0]["event"]["subject"]) == line:
            chains[-1].append(attempt)
        else:
            chains.append([attempt])
    return token, chains


async def delivered(conn: asyncpg.Connection, taken: list[tuple[int, int, uuid.UUID]]) -> None:
    """Mark deliveries (subscriber, position, claim) taken; one claimed again since is left."""
    if not taken:
        return
    webhook_ids, positions, claims = zip(*taken, strict=True)
    await conn.execute(
        "UPDATE deliveries d SET state = 'delivered', delivered_at = now(), claim = NULL, last_error = NULL"
        " FROM unnest($1::bigint[], $2::bigint[], $3::uuid[]) AS t (webhook_id, position, claim)"
        " WHERE (d.webhook_id, d.position, d.claim) = (t.webhook_id, t.position, t.claim)",
        list(webhook_ids),
        list(positions),
        list(claims),
    )


async def failed(
    conn: asyncpg.Connection,
    webhook_id: int,
    position: int,
    token: uuid.UUID,
    error: str,
    retry_in: float | None,
    rest: list[int],
) -> None:
    """An attempt that failed: try again in `retry_in` seconds, or (None) it is dead and its
    subscriber stops there. The rest of its chain (`rest`: positions) is let go, due at once (it
    waits for this one all the same)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = $4, claim = NULL,"
            " state = CASE WHEN $5::float8 IS NULL THEN 'dead' ELSE 'pending' END,"
            " next_at = now() + make_interval(secs => coalesce($5::float8, 0))"
            " WHERE (webhook_id, position) = ($1, $2) AND claim = $3"
            " RETURNING attempts, (SELECT id FROM events WHERE position = $2) AS event_id",
            webhook_id,
            position,
            token,
            error[:500],
            retry_in,
        )
        await conn.execute(
            "UPDATE deliveries SET claim = NULL, next_at = now()"
            " WHERE webhook_id = $1 AND position = ANY($2::bigint[]) AND claim = $3",
            webhook_id,
            rest,
            token,
        )
        if row is not None and retry_in is None:
            await conn.execute(
                "UPDATE webhooks SET stopped = $2 WHERE id = $1",
                webhook_id,
                f"at event {row['event_id']} after {row['attempts']} attempts: {error[:200]}",
            )


async def stopped(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The subscribers stopped at a dead delivery, with its opportunity."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT w.url, w.stopped, d.opportunity_id FROM webhooks w JOIN deliveries d"
        " ON d.webhook_id = w.id AND d.state = 'dead' WHERE w.stopped IS NOT NULL ORDER BY w.id, d.position"
    )
    return rows
