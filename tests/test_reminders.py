"""R20: durable reminders and escalation, with the definition's own delays, on Temporal's
time-skipping test server: a test skips days in a moment (`env.sleep`), and every timer fires at
its virtual time, through the real worker and the real activities into PostgreSQL.

The bundled definition: a task's reminder 4 h before it is due, its overdue notice when due, its
escalation to the owner's manager 2 days later; Qualification goes stale 7 days after its entry
or its last completion, Presentation 10 days. Every notice is asserted as a row: once, at its
time (never before it, and within seconds of it, in the server's virtual time), for the right
person.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import datetime, timedelta

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.helpers import Sale, eventually, journal_settled
from tests.processes import worker_process
from workflows import contract as c

DAY = timedelta(days=1)
BEFORE_DUE, ESCALATE_AFTER = timedelta(hours=4), 2 * DAY
STALE = {"Qualification": 7 * DAY, "Presentation": 10 * DAY}
LATE = timedelta(seconds=5)  # a notice is written by the workflow task its timer wakes
KINDS = ("reminder", "overdue", "escalation")


@pytest.fixture
async def client(time_skipping: WorkflowEnvironment) -> Client:
    """These tests' processes (and their workers, and the CLI) run on the time-skipping server."""
    return time_skipping.client


async def _skip(env: WorkflowEnvironment, sale: Sale, opp: str, by: timedelta) -> None:
    """Skip time once the process's writes are confirmed: its task workflows, with their timers,
    start then (R28)."""
    await journal_settled(sale, opp)
    await env.sleep(by)


def _times(task: asyncpg.Record) -> dict[str, datetime]:
    due: datetime = task["due_at"]
    return {"reminder": due - BEFORE_DUE, "overdue": due, "escalation": due + ESCALATE_AFTER}


async def _people(sale: Sale, **managers: str) -> dict[str, str]:
    """Unique names for this test: {"alice": "alice-1a2b", ...}, with their managers set."""
    tag = uuid.uuid4().hex[:6]
    names = {n: f"{n}-{tag}" for n in {*managers, *managers.values()}}
    for person, manager in managers.items():
        done = await sale.cli("people", "set", names[person], "--manager", names[manager])
        assert done.code == 0, done.stderr
    return names


def _by_task(notes: list[asyncpg.Record]) -> dict[tuple[str, str], list[asyncpg.Record]]:
    found: dict[tuple[str, str], list[asyncpg.Record]] = {}
    for n in notes:
        if n["kind"] in KINDS:
            found.setdefault((n["task_id"], n["kind"]), []).append(n)
    return found


def _on_time(note: asyncpg.Record, due: datetime) -> bool:
    written: datetime = note["created_at"]
    return due <= written <= due + LATE


async def _notices(sale: Sale, opp: str, count: int) -> list[asyncpg.Record]:
    """The opportunity's notices once there are `count` of them (their workflow tasks may still be
    writing when a skip returns)."""
    return await eventually(
        lambda: sale.notifications(opp),
        lambda notes: sum(n["kind"] in (*KINDS, "stale_deal") for n in notes) >= count,
    )


async def _each_once_on_time(
    env: WorkflowEnvironment, sale: Sale, opp: str, tasks: list[asyncpg.Record]
) -> list[asyncpg.Record]:
    """Once every notice of the Qualification tasks and the stale-deal notice have come (time
    skipped past them), and 30 more days: each came once, at its time. The notices."""
    await _notices(sale, opp, 3 * 2 + 1)
    await _skip(env, sale, opp, 30 * DAY)  # nothing more comes: each fires once
    notes = await sale.notifications(opp)
    by_task = _by_task(notes)
    assert len(by_task) == 3 * 2
    for t in tasks:
        for kind, due in _times(t).items():
            [note] = by_task[(t["id"], kind)]
            assert _on_time(note, due), (kind, note["created_at"] - due)
    [stale] = [n for n in notes if n["kind"] == "stale_deal"]
    assert _on_time(stale, tasks[0]["start_at"] + STALE["Qualification"])
    return notes


async def test_each_timer_fires_once_at_its_time_for_the_right_person(
    sale: Sale, time_skipping: WorkflowEnvironment
) -> None:
    names = await _people(sale, alice="maria")
    _, opp = await sale.started(owner=names["alice"])
    tasks = await sale.tasks(opp)
    assert len(tasks) == 2
    await _skip(time_skipping, sale, opp, DAY)
    assert not _by_task(await sale.notifications(opp))  # nothing is due yet
    await _skip(time_skipping, sale, opp, 7 * DAY)
    notes = await _each_once_on_time(time_skipping, sale, opp, tasks)
    by_task = _by_task(notes)
    for t in tasks:
        for kind in KINDS:
            [note] = by_task[(t["id"], kind)]
            assert note["recipient"] == (names["maria"] if kind == "escalation" else names["alice"])
    [stale] = [n for n in notes if n["kind"] == "stale_deal"]
    assert stale["recipient"] == names["alice"]
    assert "has had no completed task in Qualification for 7 days" in stale["message"]
    escalation = by_task[(tasks[0]["id"], "escalation")][0]["message"]
    assert escalation.startswith(f"Escalation: {names['alice']}'s task Contact the client")


async def test_a_task_completed_first_gets_no_notices_and_restarts_the_stale_clock(
    sale: Sale, time_skipping: WorkflowEnvironment
) -> None:
    _, opp = await sale.started()
    first, second = await sale.tasks(opp)
    await _skip(time_skipping, sale, opp, DAY)
    await sale.complete(opp, first["id"])  # a day before its reminder
    completed = (await sale.tasks(opp))[0]["completed_at"]
    await _skip(time_skipping, sale, opp, 10 * DAY)
    notes = await _notices(sale, opp, 3 + 1)

    by_task = _by_task(notes)
    assert not [key for key in by_task if key[0] == first["id"]]
    assert {kind for task, kind in by_task if task == second["id"]} == set(KINDS)
    [stale] = [n for n in notes if n["kind"] == "stale_deal"]
    assert _on_time(stale, completed + STALE["Qualification"]), stale["created_at"] - completed


async def test_leaving_the_stage_stops_its_timers(sale: Sale, time_skipping: WorkflowEnvironment) -> None:
    _, opp = await sale.started()
    qualification = {t["id"] for t in await sale.tasks(opp)}
    await _skip(time_skipping, sale, opp, DAY)
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Presentation", "actor": "alice"})
    presentation = (await sale.wait_stage(opp, "Presentation")).open_tasks[0]
    await _skip(time_skipping, sale, opp, 20 * DAY)
    notes = await _notices(sale, opp, 3 + 1)  # the Presentation task's own three, its stale notice

    assert {task for task, _ in _by_task(notes)} == {presentation.task_id}
    assert not qualification & {n["task_id"] for n in notes if n["kind"] in KINDS}
    [stale] = [n for n in notes if n["kind"] == "stale_deal"]
    assert _on_time(stale, presentation.start_at + STALE["Presentation"])
    assert "in Presentation for 10 days" in stale["message"]


async def test_a_reassignment_moves_the_timers_to_the_new_owner(
    sale: Sale, time_skipping: WorkflowEnvironment
) -> None:
    names = await _people(sale, alice="maria", bob="boris")
    _, opp = await sale.started(owner=names["alice"])
    await _skip(time_skipping, sale, opp, DAY + timedelta(hours=21))  # past the first reminder
    await sale.update(opp, c.UPDATE_REASSIGN, {"owner": names["bob"], "actor": names["maria"]})
    await _skip(time_skipping, sale, opp, 10 * DAY)
    notes = await _notices(sale, opp, 3 * 2 + 1)

    recipients = sorted((kind, n["recipient"]) for (_, kind), found in _by_task(notes).items() for n in found)
    assert recipients == sorted(
        [
            ("reminder", names["alice"]),  # written before the reassignment
            ("reminder", names["bob"]),
            ("overdue", names["bob"]),
            ("overdue", names["bob"]),
            ("escalation", names["boris"]),
            ("escalation", names["boris"]),
        ]
    )
    assert [n["recipient"] for n in notes if n["kind"] == "stale_deal"] == [names["bob"]]


async def test_timers_fire_after_the_worker_is_killed_while_they_wait(
    client: Client, pool: asyncpg.Pool, database_url: str, time_skipping: WorkflowEnvironment
) -> None:
    mine = Sale(client, pool, f"corpsale-timers-{uuid.uuid4()}", database_url)
    env = mine.worker_env()
    # The killed worker keeps no workflows cached: the test server times a dead worker's sticky
    # queue out on its own clock, which stands still while a task waits there.
    async with worker_process({**env, "CORPSALE_MAX_CACHED_WORKFLOWS": "0"}) as first:
        _, opp = await mine.started()
        await journal_settled(mine, opp)  # its task workflows are started
        first.send_signal(signal.SIGKILL)  # before any timer is due
        await first.wait()
    tasks = await mine.tasks(opp)
    # The clock runs to the first timer and stands there while no worker runs to take its
    # workflow task; the rest come due once one does.
    skipping = asyncio.create_task(time_skipping.sleep(8 * DAY))
    await asyncio.sleep(1)
    assert not _by_task(await mine.notifications(opp))

    async with worker_process(env):
        await skipping
        await _notices(mine, opp, 3 * 2 + 1)
        await time_skipping.sleep(30 * DAY)
    notes = await mine.notifications(opp)
    by_task = _by_task(notes)
    assert sorted(by_task) == sorted((t["id"], kind) for t in tasks for kind in KINDS)
    assert all(len(found) == 1 for found in by_task.values())  # late, and once
    for t in tasks:  # each at its time, or later: none was lost while the worker was down
        assert all(by_task[(t["id"], kind)][0]["created_at"] >= due for kind, due in _times(t).items())
    assert len([n for n in notes if n["kind"] == "stale_deal"]) == 1


async def test_a_passed_expected_close_date_is_told_once_and_its_timer_follows_the_date(
    sale: Sale, time_skipping: WorkflowEnvironment
) -> None:
    _, opp = await sale.started()
    start = (await sale.tasks(opp))[0]["start_at"]

    def passed(day: datetime) -> datetime:  # the close date has passed when the next day begins
        return datetime.combine(day.date(), datetime.min.time(), day.tzinfo) + DAY

    async def close_on(day: datetime) -> None:
        await sale.update(
            opp,
            c.UPDATE_UPDATE_OPPORTUNITY,
            {"expected_close_date": day.date().isoformat(), "actor": "alice"},
        )

    async def told() -> list[asyncpg.Record]:
        return await sale.notifications(opp, "close_date_passed")

    await close_on(start + 3 * DAY)
    await _skip(time_skipping, sale, opp, 2 * DAY)
    await close_on(start + 10 * DAY)  # moved later: the first date's timer gives way
    await _skip(time_skipping, sale, opp, 4 * DAY)
    assert await told() == []
    await _skip(time_skipping, sale, opp, 7 * DAY)
    [notice] = await eventually(told, lambda notes: len(notes) == 1)
    assert _on_time(notice, passed(start + 10 * DAY)) and notice["recipient"] == "alice"
    assert f"was expected to close on {(start + 10 * DAY).date()}" in notice["message"]

    await close_on(start + 12 * DAY)  # a new date that has passed already: told at once, once more
    await eventually(told, lambda notes: len(notes) == 2)
    await _skip(time_skipping, sale, opp, 30 * DAY)
    assert len(await told()) == 2


async def test_timers_fire_once_after_the_process_has_handed_over_to_a_new_run(
    sale: Sale, time_skipping: WorkflowEnvironment
) -> None:
    """R20 across R21: the process continues as new (here after 50 events) before any timer is
    due. The tasks' reminders, overdue notices and escalations (in their task workflows, which
    outlive the run) and the stale-deal notice (carried to the new run) each fire once, at their
    time."""
    names = await _people(sale, alice="maria")
    _, opp = await sale.started(owner=names["alice"], continue_as_new_after_events=50)
    first_run = (await sale.handle(opp).describe()).run_id
    for i in range(40):  # data updates (they restart no clock) until the run hands over
        need = {"need": f"need {i}", "actor": names["alice"], "request_id": f"need-{i}"}
        await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, need)
        if (await sale.handle(opp).describe()).run_id != first_run:
            break
    else:
        raise AssertionError("the process never handed over to a new run")
    tasks = await sale.tasks(opp)
    await _skip(time_skipping, sale, opp, 8 * DAY)
    await _each_once_on_time(time_skipping, sale, opp, tasks)


async def test_a_team_task_nobody_claims_reminds_each_member_and_escalates_to_the_teams_lead(
    sale: Sale, time_skipping: WorkflowEnvironment
) -> None:
    from tests.test_teams import make_team, team_approval

    names = await make_team(sale)
    async with sale.definition(team_approval(names["team"])):
        _, opp = await sale.started(owner="alice")
    task_id = f"{opp}:v1:prepare-presentation"
    [task] = [t for t in await sale.tasks(opp) if t["id"] == task_id]
    await _skip(time_skipping, sale, opp, 10 * DAY)
    notes = await eventually(
        lambda: sale.notifications(opp),
        lambda found: any(n["kind"] == "escalation" and n["task_id"] == task_id for n in found),
    )
    mine = [n for n in notes if n["task_id"] == task_id and n["kind"] in KINDS]
    members = sorted([names["ann"], names["joe"]])
    for kind in ("reminder", "overdue"):  # to each member of the team, once, at its time
        sent = [n for n in mine if n["kind"] == kind]
        assert sorted(n["recipient"] for n in sent) == members
        assert all(_on_time(n, _times(task)[kind]) for n in sent)
    [escalation] = [n for n in mine if n["kind"] == "escalation"]
    assert escalation["recipient"] == names["lead"] and _on_time(escalation, _times(task)["escalation"])
    assert escalation["message"].startswith(f"Escalation: nobody of team:{names['team']} has claimed")
