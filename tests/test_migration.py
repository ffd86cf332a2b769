"""Running deals onto a new process version, end to end (real Temporal, real PostgreSQL, the
CLI): a dry run changes nothing and predicts exactly what the migration then does, to
opportunities at different stages, one of them refused (its stage is gone from the new version);
the migration runs as a bulk run of `migrate_definition` updates, each all or nothing, recorded in
the visit history with the old and the new version; afterwards the process follows the new one."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import uuid
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowUpdateFailedError

from tests.helpers import Sale, eventually, journal_settled
from tests.processes import killing_worker, worker_process
from workflows import contract as c

TASKS = "SELECT id, status FROM tasks WHERE id LIKE $1 ORDER BY id"
VISITS = (
    "SELECT opportunity_id, definition_version, migrated_from FROM stage_visits"
    " WHERE opportunity_id = ANY($1) AND left_at IS NULL"
)
MIGRATED = (
    "SELECT opportunity_id FROM events WHERE type = 'opportunity.migrated' AND opportunity_id = ANY($1)"
)


def _new_version(d: dict[str, Any]) -> None:
    """Proposal drops the internal contract and gains a legal review; Presentation is gone."""
    d["stages"] = [s for s in d["stages"] if s["stage"] != "Presentation"]
    proposal = next(s for s in d["stages"] if s["stage"] == "Proposal")
    proposal["tasks"] = [t for t in proposal["tasks"] if t["key"] != "internal-contract"]
    proposal["tasks"].append({"key": "legal-review", "title": "Legal review", "duration": "P2D"})


async def _complete(sale: Sale, opp: str, key: str, actor: str) -> None:
    await sale.update(opp, c.UPDATE_COMPLETE_TASK, {"task_id": f"{opp}:v2:{key}", "actor": actor})


async def test_a_dry_run_predicts_the_migration_which_moves_each_deal_or_refuses_it(sale: Sale) -> None:
    owner = f"o{uuid.uuid4().hex[:8]}"
    _, at_qualification = await sale.started(owner=owner)
    _, at_proposal = await sale.started(owner=owner)
    _, at_presentation = await sale.started(owner=owner)
    ours = [at_qualification, at_proposal, at_presentation]
    await sale.update(at_proposal, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": owner})
    await _complete(sale, at_proposal, "present-proposal", owner)
    await sale.update(at_presentation, c.UPDATE_CHANGE_STAGE, {"stage": "Presentation", "actor": owner})
    before = (await sale.state(at_proposal)).definition_version
    tasks_before = await sale.pool.fetch(TASKS, f"{at_proposal}%")

    async with sale.definition(_new_version) as version:
        migrate = ("definition", "migrate", "--to", str(version), "--where", f"owner={owner}")
        dry = await sale.cli(*migrate, "--dry-run", "--json")
        assert dry.code == 0, dry.stderr
        plans = json.loads(dry.stdout)
        text = await sale.cli(*migrate, "--dry-run")
        assert "(a dry run)" in text.stdout and "opens legal-review (due" in text.stdout, text
        # Nothing changed.
        assert (await sale.state(at_proposal)).definition_version == before
        assert await sale.pool.fetch(TASKS, f"{at_proposal}%") == tasks_before

        p = plans[at_proposal]
        assert p["refused"] is None and (p["from_version"], p["to_version"]) == (before, version)
        assert [t["key"] for t in p["kept"]] == ["proposal-approval"]
        assert [t["key"] for t in p["canceled"]] == ["internal-contract"]
        assert [t["key"] for t in p["opened"]] == ["legal-review"]
        assert plans[at_qualification]["kept"] and not plans[at_qualification]["canceled"]
        assert "Stage 'Presentation' is gone from version" in plans[at_presentation]["refused"]

        done = await sale.cli(*migrate)
        assert done.code == 0, done.stderr
        assert "3 selected, 3 sent: 2 done, 1 refused, 0 skipped" in done.stdout, done.stdout
        gone = f"refused  {at_presentation}: Stage 'Presentation' is gone from version {version}"
        assert gone in done.stdout, done.stdout

        # What the dry run said is what happened.
        rows = {
            r["id"].rsplit(":", 1)[1]: r["status"]
            for r in await sale.pool.fetch(TASKS, f"{at_proposal}:v2:%")
        }
        assert rows == {
            "present-proposal": "completed",
            "proposal-approval": "open",
            "internal-contract": "canceled",
            "legal-review": "open",
        }
        state = await sale.state(at_proposal)
        assert state.definition_version == version
        assert sorted(t.task_id.rsplit(":", 1)[1] for t in state.open_tasks) == [
            "legal-review",
            "proposal-approval",
        ]
        visits = {
            (v["opportunity_id"], v["definition_version"], v["migrated_from"])
            for v in await sale.pool.fetch(VISITS, ours)
        }
        assert visits == {
            (at_qualification, version, before),
            (at_proposal, version, before),
            (at_presentation, before, None),  # refused: unchanged
        }
        for opp in ours:  # events reach the feed once their write is confirmed (the journal relay)
            await journal_settled(sale, opp)
        migrated = sorted(m["opportunity_id"] for m in await sale.pool.fetch(MIGRATED, ours))
        assert migrated == sorted([at_qualification, at_proposal])
        checked = await sale.cli("check", *ours)
        assert checked.code == 0, checked.stdout

        # The new version's tasks take the deal on: done, it moves to Contracting.
        for key in ("proposal-approval", "legal-review"):
            await _complete(sale, at_proposal, key, owner)
        assert (await sale.state(at_proposal)).stage == "Contracting"

        # From someone who is not an admin, or as a signal, it is refused and changes nothing.
        back = {"version": before, "actor": "mallory"}
        try:
            await sale.update(at_qualification, c.UPDATE_MIGRATE, back)
        except WorkflowUpdateFailedError as err:
            assert "only an admin may" in str(err.cause), err.cause
        else:
            raise AssertionError("mallory moved a deal onto another version")
        await sale.signal(at_qualification, c.MIGRATE, {**back, "actor": getpass.getuser()})
        state = await eventually(
            lambda: sale.state(at_qualification),
            lambda s: any("is sent as an update only" in r.reason for r in s.rejected),
        )
        assert state.definition_version == version


async def test_a_migration_whose_worker_dies_as_it_commits_and_is_sent_again_is_applied_once(
    client: Client, pool: asyncpg.Pool, database_url: str
) -> None:
    """The worker dies the moment the migration's write has committed (its workflow task lost);
    the caller, not knowing, sends the update again with the same request id to another worker,
    and then once more. The deal is moved once: one visit row migrated, the canceled task
    canceled, the new task made once and its owner told once, one `opportunity.migrated`."""
    sale = Sale(client, pool, f"corpsale-migrate-{uuid.uuid4()}", database_url)
    env = sale.worker_env()
    owner = f"o{uuid.uuid4().hex[:8]}"
    async with worker_process(env):
        _, opp = await sale.started(owner=owner)
        await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": owner})
        before = (await sale.state(opp)).definition_version
    migrate: dict[str, Any] = {"actor": getpass.getuser(), "request_id": f"migrate-{opp}"}

    async with sale.definition(_new_version) as version:
        migrate["version"] = version
        async with killing_worker(env, "migrate_visit", f"opportunity_id={opp}") as dying:
            first = asyncio.create_task(sale.update(opp, c.UPDATE_MIGRATE, migrate))
            assert await asyncio.wait_for(dying.wait(), 60) == 9  # died as the write committed
        async with worker_process(env):
            again = await sale.update(opp, c.UPDATE_MIGRATE, migrate)  # the caller's retry
            once_more = await sale.update(opp, c.UPDATE_MIGRATE, migrate)
            with contextlib.suppress(Exception):  # its answer may have been lost with the worker
                await asyncio.wait_for(first, 30)
            await journal_settled(sale, opp, timeout=30)
            state = await sale.state(opp)
            checked = await sale.cli("check", opp)

    assert again.definition_version == once_more.definition_version == state.definition_version == version
    rows = {r["id"].rsplit(":", 1)[1]: r["status"] for r in await sale.pool.fetch(TASKS, f"{opp}:v2:%")}
    assert rows == {
        "present-proposal": "open",
        "proposal-approval": "open",
        "internal-contract": "canceled",
        "legal-review": "open",
    }
    visits = [(v["definition_version"], v["migrated_from"]) for v in await sale.pool.fetch(VISITS, [opp])]
    assert visits == [(version, before)]
    assert [m["opportunity_id"] for m in await sale.pool.fetch(MIGRATED, [opp])] == [opp]
    told = await sale.notifications(opp, "task_assigned")
    assert [n["task_id"] for n in told].count(f"{opp}:v2:legal-review") == 1
    assert checked.code == 0, checked.stdout
