"""Record workflow histories for the replay test: `python -m tests.record_histories TAG
[SCENARIO ...]` (every scenario without names).

Runs a few scenarios on a fresh dev server and embedded PostgreSQL with the current code and
writes every run's history to tests/histories/. Record anew only when a change to workflow code
is meant to be incompatible (and then version the workflow); otherwise the old histories must
keep replaying. TAG (say, what the workflow code changed) keeps the new files beside the old.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.data.db import create_pool, migrate
from tests.helpers import Sale, eventually, journal_settled
from worker.database import embedded_server
from worker.dev_server import temporal_cli
from worker.main import serving
from workflows import contract as c
from workflows.search_attributes import SEARCH_ATTRIBUTES

OUT = Path(__file__).parent / "histories"


async def happy_path(sale: Sale) -> str:
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    await sale.wait_stage(opp, "Qualification")
    await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"budget": 1000, "need": "CRM"})
    await sale.update(opp, c.UPDATE_REASSIGN, {"owner": "bob", "actor": "alice"})
    await sale.signal(opp, c.SIGNAL_REASSIGN, {"owner": "bob", "actor": "mallory"})  # refused
    await sale.update(opp, c.UPDATE_ADD_TASK, {"title": "Call the CFO", "actor": "bob"})
    await sale.signal(opp, c.SIGNAL_ADD_TASK, {"title": "Left open", "actor": "bob", "owner": "carol"})
    await sale.complete(opp, f"{opp}:adhoc1")
    while not (await sale.state(opp)).closed:
        await sale.complete_stage(opp)
    await handle.result()
    return handle.id


async def moves_and_refusals(sale: Sale) -> str:
    handle = await sale.start(continue_as_new_after_events=50, continue_as_new_after_updates=10)
    opp = handle.id.removeprefix("opportunity-")
    await sale.wait_stage(opp, "Qualification")
    # Kept open across the hand-overs below; two malformed payloads refused on the way.
    await sale.update(opp, c.UPDATE_ADD_TASK, {"title": "Kept open", "actor": "bob", "request_id": "k"})
    await sale.handle(opp).signal(c.SIGNAL_CHANGE_STAGE, RawValue(Payload(data=b"{not json")))
    await sale.signal(opp, c.SIGNAL_ADD_TASK, {"title": "Other", "actor": "bob", "request_id": "k"})
    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Nowhere", "actor": "bob"})
    await sale.signal(opp, c.SIGNAL_COMPLETE_TASK, {"task_id": "nope", "actor": "bob"})
    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Proposal", "actor": "b", "request_id": "r"})
    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Proposal", "actor": "b", "request_id": "r"})
    for stage in ["Qualification", "Contracting", "Presentation", "Proposal"] * 2:
        await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": stage, "actor": "bob"})
    state = await sale.wait_stage(opp, "Proposal")
    approval = next(t for t in state.open_tasks if "approval" in t.title)
    await sale.complete(opp, approval.task_id, outcome="changes requested")
    state = await sale.wait_stage(opp, "Proposal", visit=state.visit + 1)
    approval = next(t for t in state.open_tasks if "approval" in t.title)
    await sale.complete(opp, approval.task_id, outcome="rejected")
    await sale.handle(opp).result()
    return handle.id


async def small_business(sale: Sale) -> str:
    """A deal on the small-business sale: a move to a stage it does not have refused, then through
    its two stages to Closed won."""
    handle = await sale.start(process="small-business-sale")
    opp = handle.id.removeprefix("opportunity-")
    await sale.wait_stage(opp, "Qualification")
    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Presentation", "actor": "alice"})  # refused
    while not (await sale.state(opp)).closed:
        await sale.complete_stage(opp)
    await handle.result()
    return handle.id


async def closed_lost(sale: Sale) -> str:
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    await sale.wait_stage(opp, "Qualification")
    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Closed lost", "actor": "bob", "reason": "?"})
    lost = {"stage": "Closed lost", "actor": "alice", "reason": "No budget", "competitor": "Globex"}
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, lost)
    await handle.result()
    return handle.id


def fast_timers(doc: dict[str, Any]) -> None:
    """Seconds for days: a reminder at 1 s, overdue at 3 s, escalation at 4 s, stale at 2 s."""
    doc["reminders"] = {"before_due": "PT2S", "overdue": True, "escalate_after": "PT1S"}
    for stage in doc["stages"]:
        stage["stale_after"] = "PT2S" if stage["stage"] == "Qualification" else None
        for task in stage["tasks"]:
            task["duration"] = "PT3S"


async def timers(sale: Sale) -> str:
    """Task timers and a stale-deal notice that fire (a definition of short delays), then a
    completion and a close."""
    async with sale.definition(fast_timers):
        await sale.cli("people", "set", "alice", "--manager", "maria")
        handle = await sale.start()
        opp = handle.id.removeprefix("opportunity-")
        await sale.wait_stage(opp, "Qualification")
        await eventually(
            lambda: sale.notifications(opp),
            lambda notes: sum(n["kind"] == "escalation" for n in notes) == 2,
        )
        await sale.complete(opp, f"{opp}:v1:contact-assess")
        lost = {"stage": "Closed lost", "actor": "alice", "reason": "No budget"}
        await sale.update(opp, c.UPDATE_CHANGE_STAGE, lost)
        await handle.result()
        return handle.id


async def snooze(sale: Sale) -> str:
    """A task put off before its notices (they come at its new times), and again once they all
    came (they come again); then a completion and a close (a definition of short delays)."""
    async with sale.definition(fast_timers):
        await sale.cli("people", "set", "alice", "--manager", "maria")
        handle = await sale.start()
        opp = handle.id.removeprefix("opportunity-")
        await sale.wait_stage(opp, "Qualification")
        task = f"{opp}:v1:contact-assess"
        [due] = [t["due_at"] for t in await sale.tasks(opp) if t["id"] == task]
        put_off = {"task_id": task, "actor": "alice"}
        await sale.update(
            opp, c.UPDATE_SNOOZE_TASK, {**put_off, "due_at": (due + timedelta(seconds=6)).isoformat()}
        )
        await eventually(
            lambda: sale.notifications(opp),
            lambda notes: sum(n["kind"] == "escalation" for n in notes) == 2,
            timeout=60,
        )
        again = datetime.now(UTC) + timedelta(seconds=3)
        await sale.update(
            opp, c.UPDATE_SNOOZE_TASK, {**put_off, "due_at": again.isoformat(), "actor": "maria"}
        )
        await eventually(
            lambda: sale.notifications(opp),
            lambda notes: sum(n["kind"] == "escalation" and n["task_id"] == task for n in notes) == 2,
            timeout=60,
        )
        await sale.complete(opp, task)
        lost = {"stage": "Closed lost", "actor": "alice", "reason": "No budget"}
        await sale.update(opp, c.UPDATE_CHANGE_STAGE, lost)
        await handle.result()
        return handle.id


def gated(doc: dict[str, Any]) -> None:
    """The gated example definition of docs/ (two gates)."""
    doc["stages"] = json.loads((Path(__file__).parents[1] / "docs" / "gated-definition.json").read_text())[
        "stages"
    ]


async def gates(sale: Sale) -> str:
    """A gated move refused, the move to the next stage held at a gate and released by an
    update, an override by the owner's manager, a close."""
    async with sale.definition(gated):
        await sale.cli("people", "set", "alice", "--manager", "maria")
        handle = await sale.start()
        opp = handle.id.removeprefix("opportunity-")
        await sale.wait_stage(opp, "Qualification")
        await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Proposal", "actor": "alice"})  # refused
        for key in ("contact-assess", "prepare-presentation"):
            await sale.complete(opp, f"{opp}:v1:{key}")
        await sale.wait_stage(opp, "Presentation")
        await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"budget": 50000, "actor": "alice"})
        await sale.complete(opp, f"{opp}:v2:presentation")  # held: no decision maker
        await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"decision_maker": "Jane Roe", "actor": "alice"})
        await sale.wait_stage(opp, "Proposal")
        override = {"stage": "Contracting", "actor": "maria", "override": True, "reason": "letter of intent"}
        await sale.update(opp, c.UPDATE_CHANGE_STAGE, override)
        lost = {"stage": "Closed lost", "actor": "alice", "reason": "No budget"}
        await sale.update(opp, c.UPDATE_CHANGE_STAGE, lost)
        await handle.result()
        return handle.id


async def approvals(sale: Sale) -> str:
    """The contract approval opened for the owner's manager; the owner's completion refused, the
    manager's taken; a close."""
    await sale.cli("people", "set", "alice", "--manager", "maria")
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    await sale.wait_stage(opp, "Qualification")
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "alice"})
    approval = f"{opp}:v2:internal-contract"
    await sale.signal(opp, c.SIGNAL_COMPLETE_TASK, {"task_id": approval, "actor": "alice"})  # refused
    await sale.update(opp, c.UPDATE_COMPLETE_TASK, {"task_id": approval, "actor": "maria"})
    lost = {"stage": "Closed lost", "actor": "alice", "reason": "No budget"}
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, lost)
    await handle.result()
    return handle.id


async def close_date(sale: Sale) -> str:
    """An expected close date that has passed (its owner told), one in the future (a timer), then
    a close (the timer canceled)."""
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    await sale.wait_stage(opp, "Qualification")
    await sale.update(
        opp, c.UPDATE_UPDATE_OPPORTUNITY, {"expected_close_date": "2020-01-31", "actor": "alice"}
    )
    await eventually(lambda: sale.notifications(opp, "close_date_passed"), lambda notes: len(notes) == 1)
    await sale.update(
        opp, c.UPDATE_UPDATE_OPPORTUNITY, {"expected_close_date": "2099-12-31", "actor": "alice"}
    )
    lost = {"stage": "Closed lost", "actor": "alice", "reason": "No budget"}
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, lost)
    await handle.result()
    return handle.id


def _legal_review(d: dict[str, Any]) -> None:
    """Proposal drops the internal contract and gains a legal review."""
    proposal = next(s for s in d["stages"] if s["stage"] == "Proposal")
    proposal["tasks"] = [t for t in proposal["tasks"] if t["key"] != "internal-contract"]
    proposal["tasks"].append({"key": "legal-review", "title": "Legal review", "duration": "P2D"})


async def migration(sale: Sale) -> str:
    """A process moved onto a new definition version in Proposal (a task canceled, one opened), the
    move refused as a signal, its new task completed, a close."""
    await sale.cli("people", "set", "--role", "admin")
    admin = getpass.getuser()
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    await sale.wait_stage(opp, "Qualification")
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "alice"})
    async with sale.definition(_legal_review) as version:
        await sale.signal(opp, c.MIGRATE, {"version": version, "actor": admin})  # refused: update only
        await sale.update(opp, c.UPDATE_MIGRATE, {"version": version, "actor": admin})
    await sale.update(opp, c.UPDATE_COMPLETE_TASK, {"task_id": f"{opp}:v2:legal-review", "actor": "alice"})
    lost = {"stage": "Closed lost", "actor": "alice", "reason": "No budget"}
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, lost)
    await handle.result()
    return handle.id


async def process_migration(sale: Sale) -> str:
    """A corporate sale moved onto the small-business sale in Qualification (its tasks canceled,
    the new process's opened), then through that process to its end."""
    await sale.cli("people", "set", "--role", "admin")
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    await sale.wait_stage(opp, "Qualification")
    onto = {"version": 1, "process": "small-business-sale", "actor": getpass.getuser()}
    await sale.update(opp, c.UPDATE_MIGRATE, onto)
    while not (await sale.state(opp)).closed:
        await sale.complete_stage(opp)
    await handle.result()
    return handle.id


async def teams(sale: Sale) -> str:
    """A team's approval: claimed by one member, a second claim refused, released, claimed by the
    other, who completes it; the deal then closes as lost."""
    from tests.test_teams import make_team, team_approval

    names = await make_team(sale)
    async with sale.definition(team_approval(names["team"])):
        handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    await sale.wait_stage(opp, "Qualification")
    task = {"task_id": f"{opp}:v1:prepare-presentation"}
    await sale.update(opp, c.UPDATE_CLAIM_TASK, {**task, "actor": names["ann"]})
    await sale.signal(opp, c.SIGNAL_CLAIM_TASK, {**task, "actor": names["joe"]})  # refused: ann has it
    await sale.update(opp, c.UPDATE_RELEASE_TASK, {**task, "actor": names["ann"], "reason": "away"})
    await sale.update(opp, c.UPDATE_CLAIM_TASK, {**task, "actor": names["joe"]})
    await sale.update(opp, c.UPDATE_COMPLETE_TASK, {**task, "actor": names["joe"]})
    lost = {"stage": "Closed lost", "actor": "alice", "reason": "No budget"}
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, lost)
    await handle.result()
    return handle.id


async def bulk(sale: Sale) -> str:
    """A bulk reassign of two opportunities through the CLI: its selection, a page, the end."""
    await sale.cli("people", "set", "--role", "admin")
    owner = f"o{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        handle = await sale.start(owner=owner)
        await sale.wait_stage(handle.id.removeprefix("opportunity-"), "Qualification")
    done = await sale.cli("bulk", "reassign", "--where", f"owner={owner}", "--to", "carol")
    assert done.code == 0 and "2 done" in done.stdout, done
    return c.bulk_workflow_id(done.stdout.split("bulk run ", 1)[1].split(":", 1)[0])


SCENARIOS = {
    "happy_path": happy_path,
    "moves_and_refusals": moves_and_refusals,
    "closed_lost": closed_lost,
    "small_business": small_business,
    "timers": timers,
    "snooze": snooze,
    "gates": gates,
    "approvals": approvals,
    "close_date": close_date,
    "migration": migration,
    "process_migration": process_migration,
    "teams": teams,
    "bulk": bulk,
}


async def record(tag: str, names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as data_dir, embedded_server(Path(data_dir)) as server:
        url = server.get_uri()
        pool = await create_pool(url)
        await migrate(pool)
        async with await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli(),
            search_attributes=list(SEARCH_ATTRIBUTES),
            data_converter=pydantic_data_converter,
        ) as env:
            client: Client = env.client
            queue = f"record-{uuid.uuid4()}"
            async with serving(client, pool, task_queue=queue):
                sale = Sale(client, pool, queue, url)
                for name in names or SCENARIOS:
                    scenario = SCENARIOS[name]
                    workflow_id = await scenario(sale)
                    if name != "bulk":  # its writes confirmed: the task workflows have heard of them
                        await journal_settled(sale, workflow_id.removeprefix("opportunity-"))
                    runs = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
                    # Task children too: their histories guard the task workflow's code.
                    opp = workflow_id.removeprefix("opportunity-")
                    query = f"WorkflowType = 'SaleTask' AND WorkflowId STARTS_WITH 'task-{opp}'"
                    children = [w async for w in client.list_workflows(query)]
                    for i, run in enumerate(sorted(runs, key=lambda r: r.start_time)):
                        history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
                        (OUT / f"{name}.{tag}.run{i + 1}.json").write_text(history.to_json())
                    for child in children[:3]:
                        history = await client.get_workflow_handle(
                            child.id, run_id=child.run_id
                        ).fetch_history()
                        key = child.id.rsplit(":", 1)[-1]
                        (OUT / f"{name}.{tag}.task-{key}.json").write_text(history.to_json())
                    print(f"{name}: {len(runs)} runs, {min(3, len(children))} task children")
        await pool.close()


if __name__ == "__main__":
    if len(sys.argv) < 2 or not set(sys.argv[2:]) <= set(SCENARIOS):
        raise SystemExit(
            f"usage: python -m tests.record_histories TAG [SCENARIO ...] (of {', '.join(SCENARIOS)})"
        )
    asyncio.run(record(sys.argv[1], sys.argv[2:]))
