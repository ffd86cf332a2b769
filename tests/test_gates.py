"""Stage gates end to end (real Temporal, real PostgreSQL, the CLI as a process of its own), with
the gated example definition of docs/ published: a move that lacks what a stage requires is
refused with the list; the move to the next stage once every task is done waits for it, tells
the owner once, and goes on by itself when an update fills it in; the owner's manager overrides,
and the override is recorded with the visit; the owner may not."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError

from tests.helpers import Sale, eventually
from workflows import contract as c

DOCS = Path(__file__).parents[1] / "docs"
GATED = json.loads((DOCS / "gated-definition.json").read_text())


def _gated(definition: dict[str, Any]) -> None:
    definition["stages"] = GATED["stages"]


async def test_gates_refuse_hold_and_give_way_to_an_override(sale: Sale) -> None:
    suffix = uuid.uuid4().hex[:6]
    alice, mary = f"alice-{suffix}", f"mary-{suffix}"
    assert (await sale.cli("people", "set", alice, "--manager", mary)).code == 0
    validated = await sale.cli("definition", "validate", str(DOCS / "gated-definition.json"))
    assert "~ Proposal: to enter: budget, decision_maker, a visit to Presentation\n" in validated.stdout
    async with sale.definition(_gated):
        shown = await sale.cli("definition")
        assert "   to enter: expected_amount\n" in shown.stdout
        _, opp = await sale.started(owner=alice)
        await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"budget": 50000, "actor": alice})

        # A move that lacks what the stage requires: refused, with everything that is missing.
        moved = await sale.cli("move", opp, "Proposal", "--actor", alice)
        assert moved.code != 0
        assert (
            "'Proposal' cannot be entered yet: missing decision_maker, a visit to Presentation."
            in moved.stderr
        )

        # Every task done, the next stage's gate not met: the deal waits and the owner is told once.
        for key in ("contact-assess", "prepare-presentation"):
            await sale.update(opp, c.UPDATE_COMPLETE_TASK, {"task_id": f"{opp}:v1:{key}", "actor": alice})
        await sale.wait_stage(opp, "Presentation")
        state = await sale.update(
            opp, c.UPDATE_COMPLETE_TASK, {"task_id": f"{opp}:v2:presentation", "actor": alice}
        )
        assert (state.stage, state.waiting_to_enter, state.missing) == (
            "Presentation",
            "Proposal",
            ["decision_maker"],
        )
        await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": "Fleet tracking", "actor": alice})
        shown = await sale.cli("state", opp)
        assert "every task is done; moves on to Proposal once it has: decision_maker" in shown.stdout
        notices = await sale.notifications(opp, "gate_waiting")
        assert [(n["recipient"], n["message"].split(": ", 1)[1]) for n in notices] == [
            (alice, "every task is done; to move on to Proposal, fill in decision_maker")
        ]

        # Filling it in moves the deal on by itself.
        state = await sale.update(
            opp, c.UPDATE_UPDATE_OPPORTUNITY, {"decision_maker": "Jane Roe", "actor": alice}
        )
        assert (state.stage, state.visit, state.waiting_to_enter) == ("Proposal", 3, None)
        visits = await sale.visits(opp)
        assert (
            visits[-1]["reason"]
            == "all tasks of Presentation completed; the entry requirements of Proposal are met"
        )

        # Contracting requires the expected amount. The owner may not override; their manager may.
        override = {"stage": "Contracting", "override": True, "reason": "signed letter of intent"}
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await sale.update(opp, c.UPDATE_CHANGE_STAGE, {**override, "actor": alice})
        assert f"only {alice}'s manager or an admin may" in str(refused.value.cause)
        state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, {**override, "actor": mary})
        assert state.stage == "Contracting" and state.to_fill == []
        visits = await sale.visits(opp)
        assert (visits[-1]["entered_by"], visits[-1]["reason"]) == (
            mary,
            "override of the entry requirements: signed letter of intent",
        )
        assert len(await sale.notifications(opp, "gate_waiting")) == 1
        final = await eventually(lambda: sale.state(opp), lambda s: s.stage == "Contracting")
        assert any("not allowed" in r.reason or "may not" in r.reason for r in final.rejected)
