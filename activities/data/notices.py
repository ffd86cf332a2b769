"""What the process tells people, as rows of their notification center (SQL): a new task, a
stage change someone else made, a task's reminder, overdue notice and escalation, a stale deal,
a passed close date, a move waiting at a gate. Each row's id makes it once, however often its
step runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from workflows.fields import TEAM_PREFIX
from workflows.steps import CloseDateNotice, EnterStage, GateNotice, NewTask, StaleNotice, TaskNotice


async def notify_stage_changed(conn: asyncpg.Connection, step: EnterStage, visit_id: str, left: str) -> None:
    """The owner hears of a stage change someone else made (their own they know of)."""
    why = f" ({step.reason})" if step.reason else ""
    await conn.execute(
        "INSERT INTO notifications (id, recipient, opportunity_id, kind, message, created_at)"
        " SELECT $1, $2, id, 'stage_changed', $3 || title || $4, $5 FROM opportunities WHERE id = $6"
        " ON CONFLICT (id) DO NOTHING",
        f"{visit_id}:stage_changed",
        step.owner,
        f"{step.actor} moved ",
        f" from {left} to {step.stage}{why}",
        step.at,
        step.opportunity_id,
    )


NOTICES = {
    "reminder": "Reminder: {title} is due {due}",
    "overdue": "Overdue: {title} was due {due}",
    "escalation": "Escalation: {owner}'s task {title} has been overdue since {due}",
}


async def notify_task(conn: asyncpg.Connection, notice: TaskNotice) -> bool:
    """A task timer's notification, if the task is still open: to its owner as it is now (a
    team's unclaimed task: to each member), and for an escalation to the owner's manager (to the
    owner when nobody is on record as it; a team's unclaimed task: to the team's lead)."""
    async with conn.transaction():
        task = await conn.fetchrow(
            "SELECT t.opportunity_id, t.title, t.owner, t.due_at, t.status, p.manager, g.lead,"
            " (SELECT array_agg(m.person ORDER BY m.person) FROM team_members m WHERE 'team:' || m.team"
            "  = t.owner) AS members"
            " FROM tasks t LEFT JOIN people p ON p.name = t.owner"
            " LEFT JOIN teams g ON 'team:' || g.name = t.owner WHERE t.id = $1",
            notice.task_id,
        )
        if task is None or task["status"] != "open":
            return False
        message = NOTICES[notice.kind].format(
            title=task["title"], owner=task["owner"], due=f"{task['due_at']:%Y-%m-%d %H:%M} UTC"
        )
        queue = task["owner"].startswith(TEAM_PREFIX)
        recipients = [task["owner"]]
        if notice.kind == "escalation" and queue:
            recipients = [task["lead"]] if task["lead"] else task["members"] or [task["owner"]]
            message = (
                f"Escalation: nobody of {task['owner']} has claimed {task['title']},"
                f" overdue since {task['due_at']:%Y-%m-%d %H:%M} UTC"
            )
            if not task["lead"]:
                message += f" (team {task['owner'][5:]} has no lead: `corpsale teams add NAME --lead PERSON`)"
        elif notice.kind == "escalation":
            if task["manager"]:
                recipients = [task["manager"]]
            else:
                message += f" (no manager on record for {task['owner']}: `corpsale people set`)"
        elif queue and task["members"]:
            recipients = task["members"]
        base = f"{notice.task_id}:{notice.kind}" + (f":{notice.plan}" if notice.plan else "")
        await conn.executemany(
            "INSERT INTO notifications (id, recipient, opportunity_id, task_id, kind, message, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            [
                (base + (f"@{who}" if queue else ""), who, task["opportunity_id"], notice.task_id,
                 notice.kind, message, notice.at)
                for who in recipients
            ],
        )  # fmt: skip
        return True


async def notify_stale(conn: asyncpg.Connection, notice: StaleNotice) -> None:
    """A stale-deal notice to the opportunity's owner (R20)."""
    days = (notice.at - notice.quiet_since).total_seconds() / 86400
    quiet = f"{days:.0f} days" if days >= 1 else f"{(notice.at - notice.quiet_since).total_seconds():.0f} s"
    await conn.execute(
        "INSERT INTO notifications (id, recipient, opportunity_id, kind, message, created_at)"
        " SELECT $1, owner, id, 'stale_deal', 'Stale deal: ' || title || $2, $3 FROM opportunities"
        " WHERE id = $4 ON CONFLICT (id) DO NOTHING",
        f"{notice.opportunity_id}:v{notice.visit_no}:stale{notice.number}",
        f" has had no completed task in {notice.stage} for {quiet}",
        notice.at,
        notice.opportunity_id,
    )


async def notify_close_date(conn: asyncpg.Connection, notice: CloseDateNotice) -> None:
    """The owner hears that the deal's expected close date has passed, once per date."""
    await conn.execute(
        "INSERT INTO notifications (id, recipient, opportunity_id, kind, message, created_at)"
        " SELECT $1, owner, id, 'close_date_passed', 'Expected close date passed: ' || title || $2, $3"
        " FROM opportunities WHERE id = $4 ON CONFLICT (id) DO NOTHING",
        f"{notice.opportunity_id}:close-date:{notice.expected_close_date}",
        f" was expected to close on {notice.expected_close_date}; move the date or close the deal",
        notice.at,
        notice.opportunity_id,
    )


async def notify_gate(conn: asyncpg.Connection, notice: GateNotice) -> None:
    """Every task done, the next stage's gate not met: the owner is told what to fill in, once
    per visit (the notice's id)."""
    await conn.execute(
        "INSERT INTO notifications (id, recipient, opportunity_id, kind, message, created_at)"
        " SELECT $1, owner, id, 'gate_waiting', title || $2, $3 FROM opportunities"
        " WHERE id = $4 ON CONFLICT (id) DO NOTHING",
        f"{notice.opportunity_id}:v{notice.visit_no}:gate",
        f": every task is done; to move on to {notice.stage}, fill in {', '.join(notice.missing)}",
        notice.at,
        notice.opportunity_id,
    )


async def notify_assigned(
    conn: asyncpg.Connection, opportunity_id: str, owner: str, tasks: Sequence[NewTask], at: datetime
) -> None:
    """A notification per new task for its owner (R5), one per task however often this runs; a
    task for a team's queue (`team:NAME`), one per member."""
    await conn.executemany(
        "INSERT INTO notifications (id, recipient, opportunity_id, task_id, kind, message,"
        " created_at) VALUES ($1, $2, $3, $4, 'task_assigned', $5, $6)"
        " ON CONFLICT (id) DO NOTHING",
        [
            (
                f"{t.task_id}:assigned",
                t.owner or owner,
                opportunity_id,
                t.task_id,
                f"New task: {t.title} (due {t.due_at:%Y-%m-%d %H:%M} UTC)",
                at,
            )
            for t in tasks
            if not (t.owner or "").startswith(TEAM_PREFIX)
        ],
    )
    queued = [t for t in tasks if (t.owner or "").startswith(TEAM_PREFIX)]
    if queued:
        await conn.executemany(
            "INSERT INTO notifications (id, recipient, opportunity_id, task_id, kind, message, created_at)"
            " SELECT $1 || '@' || m.person, m.person, $2, $3, 'task_assigned', $4, $5 FROM team_members m"
            " WHERE 'team:' || m.team = $6 ON CONFLICT (id) DO NOTHING",
            [
                (f"{t.task_id}:assigned", opportunity_id, t.task_id,
                 f"New task for team {(t.owner or '')[5:]}: {t.title} (due {t.due_at:%Y-%m-%d %H:%M} UTC;"
                 " claim it: `corpsale claim`)", at, t.owner)
                for t in queued
            ],
        )  # fmt: skip
