"""R14: opportunity data can be updated at any time while the process runs; stored in
PostgreSQL and shown by `state`; invalid data is refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from temporalio.client import WorkflowUpdateFailedError

from tests.helpers import Sale, eventually
from workflows import contract as c
from workflows.search_attributes import AMOUNT_ATTR


async def test_bant_and_meeting_data_are_stored_and_shown(sale: Sale) -> None:
    handle, opp = await sale.started()

    state = await sale.update(
        opp,
        c.UPDATE_UPDATE_OPPORTUNITY,
        {
            "budget": 120000,
            "authority": "CFO signs",
            "need": "Replace the legacy CRM",
            "timeframe": "Q3",
            "decision_maker": "Jane Roe",
            "sales_tactics": "Lead with TCO",
            "actor": "alice",
        },
    )
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Presentation", "actor": "alice"})
    await sale.signal(
        opp,
        c.SIGNAL_UPDATE_OPPORTUNITY,
        {
            "presentation_at": "2026-12-03T10:00:00Z",
            "meeting_notes": "Demo for 6 people",
            "expected_amount": "99500.00",
        },
    )

    state = await eventually(lambda: sale.state(opp), lambda s: "meeting_notes" in s.data)
    assert state.data["budget"] == "120000" and state.data["need"] == "Replace the legacy CRM"
    assert state.data["expected_amount"] == "99500.00"
    row = await sale.opportunity(opp)
    assert str(row["budget"]) == "120000.00" and row["authority"] == "CFO signs"
    assert row["presentation_at"] == datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    assert str(row["expected_amount"]) == "99500.00" and row["stage"] == "Presentation"
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(AMOUNT_ATTR) == 99500.0


async def test_invalid_data_is_refused_and_nothing_is_stored(sale: Sale) -> None:
    _, opp = await sale.started()
    before = dict(await sale.opportunity(opp))
    for payload in (
        {"budget": "a lot"},
        {"expected_amount": 1.005},
        {"title": ""},
        {"need": "x" * 5000},
        {"owner": "mallory"},
        {"need": "nul \x00 byte"},
        {"decision_maker": "   "},
        {"title": None},
        {"presentation_at": "9999-12-31T23:30:00-05:00"},
        {"budget": 10, "stage": "Closed won"},
    ):
        with pytest.raises(WorkflowUpdateFailedError):
            await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, payload)
    assert dict(await sale.opportunity(opp)) == before


async def test_text_is_stored_verbatim_never_executed(sale: Sale) -> None:
    _, opp = await sale.started()
    odd = "Robert'); DROP TABLE opportunities;-- ☃ \u202e نص 🤝"
    await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": odd, "sales_tactics": "$1 $$"})
    row = await sale.opportunity(opp)
    assert (row["need"], row["sales_tactics"]) == (odd, "$1 $$")


ODD = "Robert'); DROP TABLE tasks;-- ☃ \u202e نص 🤝 $1 %s {0}"


async def test_hostile_text_in_every_command_is_stored_verbatim_or_refused(sale: Sale) -> None:
    _, opp = await sale.started()
    state = await sale.update(opp, c.UPDATE_ADD_TASK, {"title": ODD, "actor": ODD, "owner": ODD})
    await sale.update(opp, c.UPDATE_REASSIGN, {"owner": ODD[::-1], "actor": "alice", "reason": ODD})
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": ODD, "reason": ODD})
    (adhoc,) = [t for t in await sale.tasks(opp) if t["task_key"] == "adhoc"]
    assert (adhoc["title"], adhoc["owner"]) == (ODD, ODD)
    assert (await sale.opportunity(opp))["owner"] == ODD[::-1]
    visit = (await sale.visits(opp))[-1]
    assert (visit["entered_by"], visit["reason"]) == (ODD, ODD)
    for payload, why in [
        ({"title": "x" * 201, "actor": "a"}, "at most 200 characters"),
        ({"title": "a\x00b", "actor": "a"}, "NUL"),
    ]:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await sale.update(opp, c.UPDATE_ADD_TASK, payload)
        assert why in str(refused.value.cause)
    with pytest.raises(WorkflowUpdateFailedError):
        await sale.update(opp, c.UPDATE_REASSIGN, {"owner": "b", "actor": "a", "reason": "r" * 4001})
    state = await sale.state(opp)
    assert state.stage == "Proposal" and state.owner == ODD[::-1]

    lead = await sale.cli("lead", "add", "--title", ODD, "--customer", ODD, "--owner", ODD, "--json")
    assert lead.code == 0, lead.stderr
    lead_id = json.loads(lead.stdout)["id"]
    assert await sale.pool.fetchval("SELECT title FROM leads WHERE id = $1", lead_id) == ODD
    long = await sale.cli("lead", "add", "--title", "x" * 201, "--customer", "c", "--owner", "o")
    assert long.code == 1 and "at most 200 characters" in long.stderr
