"""A task of a team's queue claimed by a member or released back (SQL): its owner moves, the team
hears of it, its event, and its workflow's owner once the write is confirmed. In the caller's
journaled transaction (workflows/claims.py decides; activities/data/writes.py registers it)."""

from __future__ import annotations

import asyncpg

from activities.data import events, task_ops
from workflows.fields import TEAM_PREFIX
from workflows.steps import ClaimRow, TaskOp


async def claim_task(conn: asyncpg.Connection, row: ClaimRow) -> None:
    """Run again, it changes nothing more: the owner moves only from the one it expects, and the
    rows' ids are the task's and its claim's number."""
    released = row.to_owner.startswith(TEAM_PREFIX)
    await conn.execute(  # its team stays (migrations/026): a release gives it back to that queue
        "UPDATE tasks SET owner = $3 WHERE id = $1 AND owner = $2 AND status = 'open'",
        row.task_id,
        row.from_owner,
        row.to_owner,
    )
    kind = "task.released" if released else "task.claimed"
    row_id = f"{row.task_id}:{'released' if released else 'claimed'}{row.number}"
    data: dict[str, str | None] = {"task_id": row.task_id, "team": row.team, "actor": row.actor}
    if released:
        data |= {"released_by": row.from_owner, "reason": row.reason}
    else:
        data |= {"claimed_by": row.to_owner}
    await events.emit(conn, row.opportunity_id, row_id, kind, row.at, data)
    if released:
        message = f"{row.title} is back in team {row.team}'s queue ({row.from_owner} released it)"
        if row.reason:
            message += f": {row.reason}"
    else:
        message = f"{row.to_owner} claimed {row.title} (team {row.team}): it is theirs now"
    # Every member but the one who acted hears of it.
    await conn.execute(
        "INSERT INTO notifications (id, recipient, opportunity_id, task_id, kind, message, created_at)"
        " SELECT $1 || '@' || m.person, m.person, $2, $3, $4, $5, $6 FROM team_members m"
        " WHERE m.team = $7 AND m.person <> $8 ON CONFLICT (id) DO NOTHING",
        row_id,
        row.opportunity_id,
        row.task_id,
        "task_released" if released else "task_claimed",
        message,
        row.at,
        row.team,
        row.actor,
    )
    owner = TaskOp(kind="owner", task_id=row.task_id, args={"owner": row.to_owner})
    await task_ops.stage_ops(conn, row.opportunity_id, [owner])
