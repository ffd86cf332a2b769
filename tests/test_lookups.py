"""The stages lookup administration: stages are data an operator edits with `corpsale stages`;
edits that would break the model are refused with a clear error."""

from __future__ import annotations

import json
import random
import uuid

from tests.helpers import Sale
from workflows import contract as c


async def test_an_operator_adds_a_final_stage_that_a_running_process_then_uses(sale: Sale) -> None:
    name = f"Closed rejected {uuid.uuid4().hex[:6]}"
    order = random.randint(1000, 100_000)
    _, opp = await sale.started()  # running before the stage exists
    added = await sale.cli(
        "stages", "add", name, "--order", str(order), "--probability", "0", "--final", "lost"
    )
    assert added.code == 0, added.stderr
    listed = json.loads((await sale.cli("stages", "--json")).stdout)
    row = next(s for s in listed if s["name"] == name)
    assert (row["is_final"], row["is_successful"], row["probability"]) == (True, False, 0)

    state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": name, "actor": "a", "reason": "Other"})
    assert state.closed and state.stage == name
    removed = await sale.cli("stages", "remove", name)
    assert removed.code == 1 and "is in use" in removed.stderr


async def test_edits_that_break_the_model_are_refused(sale: Sale) -> None:
    before = (await sale.cli("stages", "--json")).stdout
    for args, why in [
        (["set", "Closed won", "--final", "open"], "needs a final, successful stage"),
        (["set", "Proposal", "--final", "lost"], "Proposal"),
        (["add", "Qualification", "--order", "77777", "--probability", "5"], "exists already"),
        (["add", f"Dup {uuid.uuid4().hex[:6]}", "--order", "1", "--probability", "5"], "same order"),
        (["add", f"Bad {uuid.uuid4().hex[:6]}", "--order", "77778", "--probability", "150"], "100"),
        (["remove", "Proposal"], "Proposal"),  # in use, or named by the definition
        (["remove", "Nowhere"], "no stage 'Nowhere'"),
        (["set", "Qualification", "--order", "2"], "same order"),
    ]:
        result = await sale.cli("stages", *args)
        assert result.code == 1 and why in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert (await sale.cli("stages", "--json")).stdout == before  # nothing changed


async def test_a_changed_probability_applies_to_the_next_stage_entry(sale: Sale) -> None:
    _, opp = await sale.started()
    changed = await sale.cli("stages", "set", "Presentation", "--probability", "35")
    assert changed.code == 0, changed.stderr
    try:
        await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Presentation", "actor": "a"})
        assert (await sale.opportunity(opp))["probability"] == 35
    finally:
        await sale.cli("stages", "set", "Presentation", "--probability", "30")


async def test_an_unused_stage_can_be_removed(sale: Sale) -> None:
    name = f"Negotiation {uuid.uuid4().hex[:6]}"
    order = random.randint(100_001, 200_000)
    assert (await sale.cli("stages", "add", name, "--order", str(order), "--probability", "70")).code == 0
    removed = await sale.cli("stages", "remove", name, "--json")
    assert removed.code == 0 and name not in removed.stdout
