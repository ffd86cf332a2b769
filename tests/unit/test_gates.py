"""Stage gates, straight against the plain core: a stage's entry requirements (fields filled in,
stages visited), the refusal that lists what is missing, the move to the next stage that waits
at a gate and goes on once it is met, and the override the owner's manager may make. The gated
example definition in docs/ is the one used. Their end-to-end test is tests/test_gates.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.unit.test_rules import NOW, STAGES, _task
from workflows.contract import ChangeStage, CompleteTask
from workflows.definition import Process, ProcessDefinition, Requirements, StageTasks
from workflows.permissions import Action, Asked, Directory, may, refusal
from workflows.refusals import GateClosed, Refused
from workflows.rules import Rules, Waiting
from workflows.state import SaleState, TaskState
from workflows.web_ui import detail

GATED = ProcessDefinition.model_validate(
    json.loads((Path(__file__).parents[2] / "docs" / "gated-definition.json").read_text())
)
PROCESS = Process(definition=GATED, stages=STAGES)


def _rules(stage: str, *tasks: TaskState, visited: tuple[str, ...] = (), **data: object) -> Rules:
    state = SaleState(
        opportunity_id="o1", owner="alice", stage=stage, visit=max((t.visit for t in tasks), default=1),
        process=PROCESS, data=data, tasks={t.task_id: t for t in tasks}, visited=[*visited, stage],
    )  # fmt: skip
    return Rules(state)


def _move(stage: str, **extra: object) -> ChangeStage:
    return ChangeStage.model_validate({"stage": stage, "actor": "alice", **extra})


def test_a_move_into_a_gated_stage_is_refused_with_everything_that_is_missing() -> None:
    rules = _rules("Qualification", budget="50000")
    with pytest.raises(GateClosed) as refused:
        rules.check(_move("Proposal"), now=NOW, settled=True)
    message = str(refused.value)
    assert message.startswith(
        "'Proposal' cannot be entered yet: missing decision_maker, a visit to Presentation."
    )
    assert "override" in message
    # An update validator leaves the gate to the handler: a command queued ahead may fill it in.
    rules.check_change_stage(_move("Proposal"), settled=False)
    # A stage without requirements, and a restart of the stage the deal is in, pass.
    rules.check_change_stage(_move("Presentation"))
    _rules("Proposal").check_change_stage(_move("Proposal", restart=True))


def test_a_gate_opens_once_its_fields_are_filled_in_and_its_stages_visited() -> None:
    rules = _rules("Presentation", visited=("Qualification",), budget="50000", decision_maker="Jane Roe")
    rules.check_change_stage(_move("Proposal"))
    assert _rules("Proposal", expected_amount="").state.missing_to_enter("Contracting") == ["expected_amount"]


def test_an_override_takes_a_reason_and_is_the_owner_managers_to_make() -> None:
    rules = _rules("Qualification")
    with pytest.raises(Refused, match="override of a stage's entry requirements takes a reason"):
        rules.check_change_stage(_move("Proposal", override=True))
    overriding = _move("Proposal", override=True, reason="signed letter of intent")
    rules.check_change_stage(overriding)  # the rules let it through; who may is the directory's
    asked = rules.asked(overriding)
    assert asked == Asked(action=Action.OVERRIDE, actor="alice", owner="alice")
    assert not may(asked, Directory())  # the owner may not override their own gate
    assert may(asked.model_copy(update={"actor": "mary"}), Directory(manages=frozenset({"alice"})))
    assert may(asked.model_copy(update={"actor": "root"}), Directory(admin=True))
    assert not may(asked.model_copy(update={"actor": "bob"}), Directory(manages=frozenset({"carol"})))
    assert "only alice's manager or an admin may" in refusal(asked)


def test_the_move_to_the_next_stage_waits_at_a_gate_and_goes_on_once_it_is_met() -> None:
    done = _task("presentation", "Presentation", 2, status="completed", outcome="done")
    rules = _rules("Presentation", done, visited=("Qualification",), budget="50000")
    then = rules.after_completion(done, CompleteTask(task_id=done.task_id, actor="alice"))
    assert isinstance(then, Waiting) and then.move.stage == "Proposal" and then.missing == ("decision_maker",)
    rules.state.waiting = then.move
    view = rules.state.view()
    assert (view.waiting_to_enter, view.missing) == ("Proposal", ["decision_maker"])
    assert "; waiting to enter Proposal: missing decision_maker" in detail(rules.state)
    assert rules.released() is None
    rules.state.data = {**rules.state.data, "decision_maker": "Jane Roe"}
    released = rules.released()
    assert released is not None and released.stage == "Proposal"
    assert (
        released.reason == "all tasks of Presentation completed; the entry requirements of Proposal are met"
    )


def test_requirements_name_only_opportunity_fields_and_known_stages() -> None:
    with pytest.raises(ValidationError, match=r"requires.fields: 'budgett' are not opportunity fields"):
        StageTasks(stage="Proposal", tasks=(), requires=Requirements(fields=("budgett",)))
    unknown_stage = GATED.model_copy(
        update={"stages": (StageTasks(stage="Proposal", tasks=(), requires=Requirements(visited=("Demo",))),)}
    )
    with pytest.raises(ValidationError, match="requires a visit to 'Demo', not in the stages lookup"):
        Process(definition=unknown_stage, stages=STAGES)
