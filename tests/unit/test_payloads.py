"""What comes in before any rule: a command's payload read and refused naming the field, its request
id and fingerprint, the ledger of answers, the start input, and how a refusal is answered
(workflows/refusals.py, workflows/payloads.py, workflows/commands.py, workflows/state.py)."""

from __future__ import annotations

from typing import Any

import pytest

from workflows import contract as c
from workflows.commands import Refusal
from workflows.contract import NewOpportunity
from workflows.payloads import start_problem
from workflows.refusals import (
    HandingOver,
    NotAllowed,
    Refused,
    Unavailable,
    one_payload,
    parse_command,
    request_id_of,
)
from workflows.state import LEDGER_BYTES, MAX_REQUEST_IDS, ProcessInput, SaleState, fingerprint, size


@pytest.mark.parametrize(
    ("name", "payload", "why"),
    [
        ("close_deal", {}, "Unknown command 'close_deal'"),
        ("change_stage", "Proposal", "Input should be a valid dictionary"),
        ("change_stage", {"stage": "Proposal"}, "actor: Field required"),
        ("change_stage", {"stage": "P", "actor": "a", "colour": 1}, "colour: Extra inputs are not permitted"),
        ("complete_task", {"task_id": "a b", "actor": "a"}, "task_id: String should match pattern"),
        ("update_opportunity", {"budget": -1}, "budget: Input should be greater than or equal to 0"),
        ("add_task", {"title": "a\x00b", "actor": "a"}, "NUL"),
    ],
)
def test_a_malformed_command_is_refused_naming_the_field(name: str, payload: Any, why: str) -> None:
    with pytest.raises(Refused, match=why):
        parse_command(name, payload)


def test_one_payload_one_request_id_one_fingerprint_per_command() -> None:
    with pytest.raises(Refused, match="not 2 arguments"):
        one_payload([{}, {}])
    assert request_id_of({"request_id": "r-1"}) == "r-1"
    assert request_id_of({"request_id": 7}) is None and request_id_of("x") is None
    assert request_id_of({"request_id": "x" * 101}) is None
    same = fingerprint("change_stage", {"stage": "P", "actor": "a", "request_id": "r1"})
    assert same == fingerprint("change_stage", {"actor": "a", "stage": "P", "request_id": "r2"})
    assert same != fingerprint("change_stage", {"stage": "Q", "actor": "a"})
    assert same != fingerprint("add_task", {"stage": "P", "actor": "a"})


def test_the_request_ledger_keeps_the_first_answer_and_the_last_requests() -> None:
    state = SaleState(opportunity_id="o1", request_ids=["old"])  # from a run of an earlier version
    assert state.answer("old") is not None and state.answer("old").fingerprint == ""  # type: ignore[union-attr]
    state.remember("r1", "fp1", "Unknown task 'x'")
    state.remember("r1", "fp2")  # a second answer changes nothing
    assert (state.answer("r1").fingerprint, state.answer("r1").refusal) == ("fp1", "Unknown task 'x'")  # type: ignore[union-attr]
    for i in range(3_000):  # typical (a uuid and a fingerprint): the newest, by their size
        state.remember(f"r-{i:032x}", "0123456789abcdef")
    held = [(i, a.model_dump(mode="json")) for i, a in state.requests.items()]
    assert 900 < len(held) < MAX_REQUEST_IDS and size(dict(held)) <= LEDGER_BYTES
    assert state.seen(f"r-{2_999:032x}") and not state.seen(f"r-{0:032x}") and not state.seen("r1")


def test_a_start_is_refused_for_another_opportunitys_id_or_a_resume_it_did_not_hand_over() -> None:
    start = ProcessInput(opportunity_id="o1", actor="maria")
    assert start_problem(start, "opportunity-o1", None) is None
    assert start_problem(None, "anything", None) is None  # an undecodable start says so itself
    assert "its process runs as 'opportunity-o1'" in (start_problem(start, "opportunity-o2", None) or "")
    carried = SaleState(opportunity_id="o1", owner="bob")
    resumed = ProcessInput(opportunity_id="o1", actor="maria", resume=carried)
    assert "leave it out" in (start_problem(resumed, "opportunity-o1", None) or "")
    assert start_problem(resumed, "opportunity-o1", "run-1") is None
    assert resumed.first_state().owner == "bob"
    deal = NewOpportunity(title="Deal", customer="Acme", owner="carol")
    new = ProcessInput(opportunity_id="o1", actor="maria", new=deal)
    assert (new.first_state().opportunity_id, new.first_state().owner) == ("o1", "carol")


def test_a_refusal_is_answered_by_its_kind_and_only_one_for_good_is_final() -> None:
    kinds = {
        Refused: (c.COMMAND_REFUSED, True, True),
        NotAllowed: (c.COMMAND_REFUSED, True, True),
        HandingOver: (c.HANDING_OVER, False, False),
        Unavailable: (c.UNAVAILABLE, False, False),
    }
    for kind, (type_, non_retryable, final) in kinds.items():
        refusal = Refusal("why", kind)
        answer = refusal.answer()
        assert (answer.type, answer.non_retryable, refusal.final, answer.message) == (
            type_,
            non_retryable,
            final,
            "why",
        ), kind
