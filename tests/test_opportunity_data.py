"""R14: opportunity data can be updated at any time while the process runs; stored in
PostgreSQL and shown by `state`; invalid data is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from temporalio.client import WorkflowUpdateFailedError

from tests.helpers import Sale, eventually
from workflows import contract as c
from workflows.opportunity import AMOUNT_ATTR


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
