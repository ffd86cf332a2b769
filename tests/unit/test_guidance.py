"""Stage guidance, straight against the plain core: each stage's goal, recommendations and key
fields (workflows/definition.py), what is still to fill in (workflows/state.py) and what ops read
of it (workflows/web_ui.py). Its end-to-end test is in tests/test_guidance.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.unit.test_rules import PROCESS
from workflows.definition import StageTasks, load_default_definition, mermaid
from workflows.state import SaleState
from workflows.web_ui import detail


def _state(stage: str, **data: object) -> SaleState:
    return SaleState(opportunity_id="o1", owner="alice", stage=stage, visit=1, process=PROCESS, data=data)


def test_every_open_stage_of_the_bundled_definition_has_a_goal_and_guidance() -> None:
    definition = load_default_definition()
    assert [s.stage for s in definition.stages] == [
        "Qualification",
        "Presentation",
        "Proposal",
        "Contracting",
    ]
    for part in definition.stages:
        assert part.goal and part.guidance, part.stage
    qualification = definition.stages[0]
    assert {"budget", "authority", "need", "timeframe", "decision_maker"} <= set(qualification.key_fields)


def test_a_key_field_that_is_not_an_opportunity_field_is_refused_with_the_fields_there_are() -> None:
    with pytest.raises(ValidationError, match=r"key_fields: .budgett. are not opportunity fields.*budget"):
        StageTasks(stage="Qualification", tasks=(), key_fields=("need", "budgett"))


def test_what_is_still_to_fill_in_is_the_stage_key_fields_that_are_empty() -> None:
    state = _state("Qualification", budget="50000", need="", authority=None)
    assert state.to_fill() == [
        "authority",
        "need",
        "timeframe",
        "decision_maker",
        "sales_tactics",
        "presentation_at",
    ]
    view = state.view()
    assert view.stage_goal is not None and view.stage_goal.startswith("Make sure the customer has allocated")
    assert len(view.stage_guidance) == 4 and view.to_fill == state.to_fill()


def test_a_stage_without_key_fields_asks_for_nothing_and_a_closed_deal_shows_no_guidance() -> None:
    assert _state("Contracting").to_fill() == []
    closed = _state("Closed won")
    closed.closed = True
    view = closed.view()
    assert (view.stage_goal, view.stage_guidance, view.to_fill) == (None, [], [])


def test_the_web_ui_detail_names_what_is_still_to_fill_in() -> None:
    assert detail(_state("Proposal")).endswith("; to fill in: expected_amount")
    assert "to fill in" not in detail(_state("Proposal", expected_amount="48000"))


def test_the_diagram_shows_each_stage_goal() -> None:
    diagram = mermaid(PROCESS)
    assert "<i>Approve and sign the contract with the customer.</i>" in diagram
    assert "customer's need" in diagram.replace("&#39;", "'")
