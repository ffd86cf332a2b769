"""The public contract stays what the docs say: the JSON Schemas in docs/schemas are the
models' own, and the process definition is validated at load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from starter.schemas import schemas
from tests.helpers import Sale
from workflows.definition import Process, ProcessDefinition, Stage, load_default_definition

DOCS = Path(__file__).parent.parent / "docs" / "schemas"


@pytest.mark.parametrize("name", sorted(schemas()))
def test_the_exported_schema_matches_the_model(name: str) -> None:
    committed = DOCS / name
    assert committed.exists(), f"{name} is missing: run `corpsale schema`"
    assert json.loads(committed.read_text()) == json.loads(schemas()[name]), (
        f"{name} drifted from the model: run `corpsale schema` and review the change"
    )


def test_the_default_definition_has_the_spec_titles_and_outcomes() -> None:
    definition = load_default_definition()
    tasks = {s.stage: s.tasks for s in definition.stages}
    assert [t.title for t in tasks["Presentation"]] == ["Presentation"]
    approval = tasks["Proposal"][1]
    assert [(o.name, o.effect.value, o.stage) for o in approval.outcomes] == [
        ("approved", "continue", None),
        ("changes requested", "move", "Proposal"),
        ("rejected", "move", "Closed lost"),
    ]
    signing = tasks["Contracting"][2]
    assert [o.name for o in signing.outcomes] == ["signed", "declined"]


def _definition(**task: object) -> dict[str, object]:
    return {
        "name": "x",
        "version": 1,
        "stages": [{"stage": "Open", "tasks": [{"key": "a", "title": "A", "duration": "P1D", **task}]}],
    }


STAGES = (
    Stage(name="Open", order=1, final=False, probability=10),
    Stage(name="Won", order=2, final=True, successful=True, probability=100),
)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"outcomes": [{"name": "x", "effect": "move"}]}, "'stage' is required for 'move'"),
        ({"outcomes": [{"name": "x"}, {"name": "x"}]}, "distinct"),
        ({"duration": "PT0S"}, "greater than 0"),
        ({"key": "Bad Key"}, "should match pattern"),
    ],
)
def test_a_bad_definition_is_refused_at_load(task: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ProcessDefinition.model_validate(_definition(**task))


def test_a_definition_must_fit_the_stages_lookup() -> None:
    moving = ProcessDefinition.model_validate(
        _definition(outcomes=[{"name": "x", "effect": "move", "stage": "Lost"}])
    )
    with pytest.raises(ValidationError, match="moves to unknown stage 'Lost'"):
        Process(definition=moving, stages=STAGES)
    with pytest.raises(ValidationError, match="no final stage"):
        Process(definition=load_default_definition(), stages=STAGES[:1])


async def test_the_process_library_prints_the_definition_in_force_and_its_diagram(sale: Sale) -> None:
    text = await sale.cli("definition")
    assert text.code == 0, text.stderr
    assert "3. Proposal (open, probability 60%; stale after 10 days without a completed task)" in text.stdout
    assert "Every task: a reminder 4 h before due, an overdue notice when due, escalation to" in text.stdout
    assert "Approve and sign the contract with the client (due in 7 days; outcomes: signed," in text.stdout
    assert "   goal: Approve and sign the contract with the customer.\n" in text.stdout  # each stage's guide
    assert "   · Fill in the BANT data: budget, authority, need, timeframe.\n" in text.stdout
    assert "   key fields: meeting_notes\n" in text.stdout
    diagram = await sale.cli("definition", "--mermaid")
    lines = diagram.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    assert "  s_Contracting -->|all tasks done| s_Closed_won" in lines
    assert "  s_Proposal -->|proposal-approval: changes requested| s_Proposal" in lines
    assert "  s_Contracting -->|sign-contract: declined| s_Closed_lost" in lines
    assert any(line.startswith('  s_Closed_lost(["Closed lost (0%)"])') for line in lines)
    assert any(
        line.startswith('  s_Contracting["Contracting (80%)<br/><i>Approve and sign') for line in lines
    )
