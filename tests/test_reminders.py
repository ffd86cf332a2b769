"""R20: durable reminders and escalation, on the dev server with a definition of short delays.

Each task of a fast definition starts at t0 and is due at t0 + 3 s: its reminder fires at t0 + 1 s,
its overdue notice at t0 + 3 s, its escalation to the owner's manager at t0 + 4 s; Qualification
goes stale 2 s after its last completion (or its entry). Every notice is asserted as a row:
once, at its time (never before it, and soon after), for the right person.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client

from tests.helpers import Sale, eventually, worker_process
from workflows import contract as c

DUE = timedelta(seconds=3)
AT = {"reminder": timedelta(seconds=1), "overdue": DUE, "escalation": DUE + timedelta(seconds=1)}
STALE = timedelta(seconds=2)
LATE = timedelta(seconds=2.5)  # how late a notice may be written: a workflow task and a local activity


def fast_timers(doc: dict[str, Any]) -> None:
    doc["reminders"] = {"before_due": "PT2S", "overdue": True, "escalate_after": "PT1S"}
    for stage in doc["stages"]:
        stage["stale_after"] = "PT2S" if stage["stage"] == "Qualification" else None
        for task in stage["tasks"]:
            task["duration"] = "PT3S"


@pytest.fixture
async def fast(sale: Sale) -> AsyncIterator[None]:
    async with sale.definition(fast_timers):
        yield


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
        if n["kind"] in AT:
            found.setdefault((n["task_id"], n["kind"]), []).append(n)
    return found


def _on_time(note: asyncpg.Record, due: datetime, *, late: timedelta = LATE) -> bool:
    written: datetime = note["created_at"]
    return due <= written <= due + late


async def _wait_for(sale: Sale, opp: str, count: int, timeout: float = 20.0) -> list[asyncpg.Record]:
    return await eventually(
        lambda: sale.notifications(opp),
        lambda notes: sum(n["kind"] in (*AT, "stale_deal") for n in notes) >= count,
        timeout=timeout,
    )


async def test_each_timer_fires_once_at_its_time_for_the_right_person(sale: Sale, fast: None) -> None:
    names = await _people(sale, alice="maria")
    _, opp = await sale.started(owner=names["alice"])
    tasks = await sale.tasks(opp)
    assert len(tasks) == 2
    await _wait_for(sale, opp, 3 * 2 + 1)
    await asyncio.sleep(2)  # nothing more comes: each fires once
    notes = await sale.notifications(opp)

    by_task = _by_task(notes)
    assert len(by_task) == 3 * 2
    for t in tasks:
        start = t["start_at"]
        for kind, after in AT.items():
            [note] = by_task[(t["id"], kind)]
            assert _on_time(note, start + after), (kind, note["created_at"] - start)
            assert note["recipient"] == (names["maria"] if kind == "escalation" else names["alice"])
    [stale] = [n for n in notes if n["kind"] == "stale_deal"]
    assert stale["recipient"] == names["alice"] and _on_time(stale, tasks[0]["start_at"] + STALE)
    assert "has had no completed task in Qualification" in stale["message"]
    escalation = by_task[(tasks[0]["id"], "escalation")][0]["message"]
    assert escalation.startswith(f"Escalation: {names['alice']}'s task Contact the client")


async def test_a_task_completed_first_gets_no_notices_and_restarts_the_stale_clock(
    sale: Sale, fast: None
) -> None:
    _, opp = await sale.started()
    first, second = await sale.tasks(opp)
    await sale.complete(opp, first["id"])  # well before its reminder
    completed = (await sale.tasks(opp))[0]["completed_at"]
    await _wait_for(sale, opp, 3 + 1)
    await asyncio.sleep(1.5)

    notes = await sale.notifications(opp)
    by_task = _by_task(notes)
    assert not [key for key in by_task if key[0] == first["id"]]
    assert {kind for task, kind in by_task if task == second["id"]} == set(AT)
    [stale] = [n for n in notes if n["kind"] == "stale_deal"]
    assert _on_time(stale, completed + STALE), stale["created_at"] - completed


async def test_leaving_the_stage_stops_its_timers(sale: Sale, fast: None) -> None:
    _, opp = await sale.started()
    qualification = {t["id"] for t in await sale.tasks(opp)}
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Presentation", "actor": "alice"})
    presentation = await sale.wait_stage(opp, "Presentation")
    await _wait_for(sale, opp, 3)  # the Presentation task's own three
    await asyncio.sleep(1.5)

    notes = await sale.notifications(opp)
    assert {task for task, _ in _by_task(notes)} == {presentation.open_tasks[0].task_id}
    assert not qualification & {n["task_id"] for n in notes if n["kind"] in AT}
    assert not [n for n in notes if n["kind"] == "stale_deal"]  # Presentation has no limit here


async def test_a_reassignment_moves_the_timers_to_the_new_owner(sale: Sale, fast: None) -> None:
    names = await _people(sale, alice="maria", bob="boris")
    _, opp = await sale.started(owner=names["alice"])
    await sale.update(opp, c.UPDATE_REASSIGN, {"owner": names["bob"], "actor": names["maria"]})
    await _wait_for(sale, opp, 3 * 2 + 1)

    notes = await sale.notifications(opp)
    recipients = {(kind, n["recipient"]) for (_, kind), found in _by_task(notes).items() for n in found}
    assert recipients == {
        ("reminder", names["bob"]),
        ("overdue", names["bob"]),
        ("escalation", names["boris"]),
    }
    assert [n["recipient"] for n in notes if n["kind"] == "stale_deal"] == [names["bob"]]


async def test_timers_fire_after_the_worker_is_killed_while_they_wait(
    client: Client, pool: asyncpg.Pool, database_url: str, sale: Sale, fast: None
) -> None:
    mine = Sale(client, pool, f"corpsale-timers-{uuid.uuid4()}", database_url)
    env = {**mine.cli_env(), "PYTHONPATH": os.getcwd()}
    async with worker_process(env) as first:
        _, opp = await mine.started()
        first.send_signal(signal.SIGKILL)  # before any timer is due
        await first.wait()
    tasks = await mine.tasks(opp)
    assert not _by_task(await mine.notifications(opp))
    await asyncio.sleep(5)  # every timer comes due while no worker runs

    async with worker_process(env):
        restarted = datetime.now(tasks[0]["start_at"].tzinfo)
        notes = await _wait_for(mine, opp, 3 * 2 + 1, timeout=30)
        await asyncio.sleep(1.5)
    notes = await mine.notifications(opp)
    by_task = _by_task(notes)
    assert sorted(by_task) == sorted((t["id"], kind) for t in tasks for kind in AT)
    assert all(len(found) == 1 for found in by_task.values())  # late, and once
    written = [n["created_at"] for found in by_task.values() for n in found]
    assert min(written) >= restarted - timedelta(seconds=1)  # by the new worker
    assert len([n for n in notes if n["kind"] == "stale_deal"]) == 1
