"""Running deals onto a new process version, end to end (real Temporal, real PostgreSQL, the
CLI): a dry run changes nothing and predicts exactly what the migration then does, to
opportunities at different stages, one of them refused (its stage is gone from the new version);
the migration runs as a bulk run of `migrate_definition` updates, each all or nothing, recorded in
the visit history with the old and the new version; afterwards the process follows the new one."""

from __future__ import annotations

import getpass
import json
import uuid
from typing import Any

from temporalio.client import WorkflowUpdateFailedError

from tests.helpers import Sale, eventually
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
