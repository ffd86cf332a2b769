"""`snooze_task` (R20): a task put off is due later, in PostgreSQL and in the process, and its
reminders move with it. On Temporal's time-skipping test server, through the real worker and the
real activities: the notices of a task put off come at the times of its new due time, once each,
and a task whose notices had all come gets them again for its new due time."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.helpers import ADMIN, Sale, eventually
from tests.test_reminders import DAY, KINDS, _by_task, _on_time, _people, _skip, _times

BEFORE_DUE = timedelta(hours=4)


@pytest.fixture
async def client(time_skipping: WorkflowEnvironment) -> Client:
    return time_skipping.client


async def _snoozed_events(sale: Sale, opp: str) -> list[dict[str, object]]:
    rows = await sale.pool.fetch(
        "SELECT data FROM events WHERE opportunity_id = $1 AND type = 'task.snoozed' ORDER BY sequence", opp
    )
    return [json.loads(r["data"]) for r in rows]


async def test_a_task_put_off_is_due_later_and_its_notices_come_for_the_new_time(
    sale: Sale, time_skipping: WorkflowEnvironment
) -> None:
    names = await _people(sale, alice="maria")
    _, opp = await sale.started(owner=names["alice"])
    first, second = await sale.tasks(opp)
    await _skip(time_skipping, sale, opp, timedelta(hours=1))
    new_due: datetime = first["due_at"] + 2 * DAY

    # As the owner's manager, with a reason: the owner is told.
    done = await sale.cli(
        "snooze", opp, first["id"], "--until", new_due.isoformat(), "--actor", names["maria"],
        "--reason", "the customer is away",
    )  # fmt: skip
    assert done.code == 0, done.stderr
    [task] = [t for t in await sale.tasks(opp) if t["id"] == first["id"]]
    assert task["due_at"] == new_due
    [view] = [t for t in (await sale.state(opp)).open_tasks if t.task_id == first["id"]]
    assert view.due_at == new_due
    [told] = await sale.notifications(opp, "task_snoozed")
    assert told["recipient"] == names["alice"] and "the customer is away" in told["message"]
    [event] = await eventually(lambda: _snoozed_events(sale, opp), bool)
    assert event == {
        "task_id": first["id"],
        "due_at": new_due.isoformat(),
        "was_due_at": first["due_at"].isoformat(),
        "actor": names["maria"],
        "reason": "the customer is away",
    }

    # Past every notice of both tasks: the one put off got its notices at its new times, once.
    await _skip(time_skipping, sale, opp, 12 * DAY)
    notes = await eventually(
        lambda: sale.notifications(opp), lambda found: len(_by_task(found)) == 2 * len(KINDS)
    )
    by_task = _by_task(notes)
    for t, due_times in ((first, _times(task)), (second, _times(second))):
        for kind, at in due_times.items():
            [note] = by_task[(t["id"], kind)]
            assert _on_time(note, at), (t["id"], kind, note["created_at"] - at)


async def test_a_task_whose_notices_all_came_gets_them_again_for_its_new_due_time(
    sale: Sale, time_skipping: WorkflowEnvironment
) -> None:
    names = await _people(sale, alice="maria")
    _, opp = await sale.started(owner=names["alice"])
    first, _ = await sale.tasks(opp)
    await _skip(time_skipping, sale, opp, 8 * DAY)  # past both tasks' reminders, overdue and escalations
    await eventually(lambda: sale.notifications(opp), lambda found: len(_by_task(found)) == 2 * len(KINDS))
    new_due = (await time_skipping.get_current_time()) + 3 * DAY
    state = await sale.update(
        opp,
        "snooze_task_update",
        {"task_id": first["id"], "due_at": new_due.isoformat(), "actor": names["alice"]},
    )
    assert [t.due_at for t in state.open_tasks if t.task_id == first["id"]] == [new_due]
    assert not await sale.notifications(opp, "task_snoozed")  # the owner put it off: nobody to tell

    await _skip(time_skipping, sale, opp, 10 * DAY)
    notes = await eventually(
        lambda: sale.notifications(opp),
        lambda found: len(_by_task(found).get((first["id"], "escalation"), [])) == 2,
    )
    again = {kind: by[-1] for (task_id, kind), by in _by_task(notes).items() if task_id == first["id"]}
    assert {kind: len(by) for (task_id, kind), by in _by_task(notes).items() if task_id == first["id"]} == {
        kind: 2 for kind in KINDS
    }
    for kind, at in {
        "reminder": new_due - BEFORE_DUE,
        "overdue": new_due,
        "escalation": new_due + 2 * DAY,
    }.items():
        assert _on_time(again[kind], at), (kind, again[kind]["created_at"] - at)


async def test_only_those_who_may_put_a_task_off_and_only_to_a_time_ahead(
    sale: Sale, time_skipping: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    names = await _people(sale, alice="maria", bob="boris")
    _, opp = await sale.started(owner=names["alice"])
    first, _ = await sale.tasks(opp)
    await _skip(time_skipping, sale, opp, timedelta(hours=1))
    later = (first["due_at"] + DAY).isoformat()

    stranger = await sale.cli("snooze", opp, first["id"], "--until", later, "--actor", names["bob"])
    assert stranger.code == 1
    assert f"{names['bob']} may not put off {names['alice']}'s task" in stranger.stderr
    past = await sale.cli("snooze", opp, first["id"], "--until", "2001-01-01T00:00Z", "--actor", ADMIN)
    assert past.code == 1 and "is not in the future" in past.stderr
    same = await sale.cli(
        "snooze", opp, first["id"], "--until", first["due_at"].isoformat(), "--actor", ADMIN
    )
    assert same.code == 1 and "already" in same.stderr
    unknown = await sale.cli("snooze", opp, f"{opp}:nosuch", "--until", later, "--actor", ADMIN)
    assert unknown.code == 1 and "Unknown task" in unknown.stderr
    assert [t["due_at"] for t in await sale.tasks(opp) if t["id"] == first["id"]] == [first["due_at"]]
    assert not await _snoozed_events(sale, opp)
    assert not await pool.fetchval(
        "SELECT count(*) FROM task_ops WHERE opportunity_id = $1 AND kind = 'due'", opp
    )
