"""The consistency checker's reads (`corpsale check`, starter/check.py): per opportunity, what
its rows say of its visits, tasks, notifications and events; and the leads whose process is late."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

_ROWS = """
SELECT o.id, o.stage, coalesce(s.is_final, false) AS closed,
       (SELECT array_agg(visit_no ORDER BY visit_no) FROM stage_visits v
         WHERE v.opportunity_id = o.id) AS visits,
       (SELECT count(*) FROM stage_visits v WHERE v.opportunity_id = o.id
         AND v.left_at IS NULL) AS unfinished_visits,
       (SELECT array_agg(id ORDER BY id) FROM tasks t
         WHERE t.opportunity_id = o.id AND t.status = 'open' AND t.kind <> 'follow-up') AS open_tasks,
       (SELECT count(*) FROM tasks t WHERE t.opportunity_id = o.id) AS tasks,
       (SELECT count(DISTINCT n.task_id) FROM notifications n WHERE n.opportunity_id = o.id
         AND n.kind = 'task_assigned') AS assigned,
       (SELECT count(*) FROM notifications n WHERE n.opportunity_id = o.id
         AND n.kind = 'task_assigned') AS assigned_rows,
       (SELECT array_agg(id ORDER BY id) FROM tasks t WHERE t.opportunity_id = o.id
         AND t.status <> 'open' AND coalesce(t.completed_at, t.canceled_at) < now() - $2::interval)
         AS ended_tasks,
       (SELECT array_agg(sequence ORDER BY sequence) FROM events e WHERE e.opportunity_id = o.id)
         AS event_numbers,
       -- What has no event of its own, of what came since the opportunity's first stage.entered
       -- event (rows from before the events outbox have none).
       (SELECT array_agg(what ORDER BY what) FROM (
          SELECT v.id || ':entered' AS what FROM stage_visits v
           WHERE v.opportunity_id = o.id AND v.visit_no >= f.visit
          UNION ALL SELECT t.id || ':created' FROM tasks t
           WHERE t.opportunity_id = o.id AND substring(t.visit_id FROM ':v([0-9]+)$')::int >= f.visit
          UNION ALL SELECT t.id || ':' || t.status FROM tasks t
           WHERE t.opportunity_id = o.id AND t.status <> 'open'
             AND substring(t.visit_id FROM ':v([0-9]+)$')::int >= f.visit
        ) AS expected WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = expected.what)
       ) AS events_missing
FROM opportunities o LEFT JOIN stages s ON s.name = o.stage
LEFT JOIN LATERAL (
    SELECT min((e.data->>'visit')::int) AS visit FROM events e
     WHERE e.opportunity_id = o.id AND e.type = 'stage.entered'
) f ON true
WHERE $1::text[] IS NULL OR o.id = ANY($1::text[])
ORDER BY o.id
"""


async def opportunity_rows(
    conn: asyncpg.Connection, opportunity_ids: list[str] | None, settle: timedelta
) -> list[asyncpg.Record]:
    """Every opportunity (or those given), with what the checker compares; `ended_tasks`: tasks
    that ended over `settle` ago."""
    rows: list[asyncpg.Record] = await conn.fetch(_ROWS, opportunity_ids, settle)
    return rows


async def late_leads(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Outbox rows of leads that reached the sale over a minute ago (or failed) without a process."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT lead_id, now() - created_at AS waiting, last_error FROM lead_outbox"
        " WHERE processed_at IS NULL AND (created_at < now() - interval '1 minute' OR failed_at IS NOT NULL)"
        " ORDER BY id"
    )
    return rows
