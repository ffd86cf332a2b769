"""R21, R28: what a run carries to its next run (continue-as-new) stays under 512 KiB, far below
Temporal's 2 MB for a payload, however full every list of its state and however long and wide
(4-byte characters) every text senders and admins put in it, each at the contract's bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.contrib.pydantic import pydantic_data_converter

from tests.unit.test_rules import STAGES
from workflows import plans
from workflows.contract import AddTask, ChangeStage, OpportunityFields
from workflows.definition import (
    DEFINITION_BYTES,
    Outcome,
    Process,
    ProcessDefinition,
    Stage,
    TaskTemplate,
    load_default_definition,
)
from workflows.refusals import Refused
from workflows.rules import MAX_OPEN_TASKS, Rules
from workflows.state import (
    LEDGER_BYTES,
    MAX_REJECTED,
    MAX_REQUEST_IDS,
    REJECTED_BYTES,
    WAITING_BYTES,
    DeferredCommand,
    ProcessInput,
    SaleState,
    TaskState,
    size,
)

WIDE = "\U0001d400"  # MATHEMATICAL BOLD CAPITAL A: a letter (`\w`) of 4 bytes in UTF-8
NOW = datetime(2030, 5, 4, 10, tzinfo=UTC)
LIMIT = 512 * 1024


def _text(n: int) -> str:
    return WIDE * n


def _widest_definition() -> ProcessDefinition:
    """The bundled definition with Qualification given as many of the widest tasks as fit."""
    base = load_default_definition()
    outcomes = tuple(Outcome(name=f"{i}{_text(99)}") for i in range(10))
    tasks: list[TaskTemplate] = []
    while len(tasks) < 20:
        task = TaskTemplate(key=f"t{len(tasks)}", title=_text(300), duration="P1D", outcomes=outcomes)
        stages = tuple(
            s.model_copy(update={"tasks": (*tasks, task)}) if s.stage == "Qualification" else s
            for s in base.stages
        )
        try:
            definition = ProcessDefinition.model_validate({**base.model_dump(), "stages": stages})
        except ValidationError as err:
            assert "KiB" in str(err)  # the definition's bound, not another rule
            break
        tasks.append(task)
    assert tasks, "not even one task fits"
    return definition


def _state() -> SaleState:
    definition = _widest_definition()
    lookup = list(load_default_definition().stages)
    stages = (
        *STAGES,
        *(
            Stage(name=f"{i}{_text(98)}", order=10 + i, final=True, successful=False, probability=0)
            for i in range(44)
        ),
    )
    assert len(lookup) < len(stages)
    opp = _text(100)
    data = {
        name: (_text(4000) if "Text" in repr(field.metadata) or name in _TEXTS else _text(200))
        for name, field in OpportunityFields.model_fields.items()
        if name not in _NOT_TEXT
    } | {"budget": "999999999999.99", "expected_amount": "999999999999.99"}
    state = SaleState(
        opportunity_id=opp,
        owner=_text(200),
        stage="Qualification",
        visit=1,
        process=Process(definition=definition, stages=stages),
        data=OpportunityFields.model_validate(data).model_dump(mode="json", exclude_none=True),
        visited=[s.name for s in stages],
        waiting=ChangeStage(stage=_text(200), actor=_text(200), reason=_text(4000)),
    )
    visit = Rules(state).entry(ChangeStage(stage="Qualification", actor=_text(200)), NOW, _text(200))
    state.tasks = {t.task_id: t for t in visit.tasks}
    return state


_TEXTS = {"authority", "need", "timeframe", "sales_tactics", "meeting_notes"}
_NOT_TEXT = {"budget", "expected_amount", "presentation_at", "expected_close_date", "forecast_category"}


def _fill(state: SaleState) -> dict[str, Any]:
    """Every list of the state to its bound, through the operations that fill it."""
    rules, added = Rules(state), 0
    while True:
        command = AddTask(
            title=_text(200), actor=_text(200), owner=_text(200), due_at=NOW + timedelta(days=1)
        )
        try:
            rules.check_add_task(command, now=NOW)
        except Refused:
            break
        task: TaskState = plans.adhoc_task(rules.state, command, NOW)
        state.adhoc_tasks += 1
        state.tasks[task.task_id] = task
        added += 1
    for n in range(MAX_REQUEST_IDS + 500):
        state.remember(f"{n}{_text(95)}", "f" * 16, _text(500))
    for _ in range(MAX_REJECTED + 50):
        state.reject(NOW, _text(200), _text(500), {"payload": _text(2000)})
    carried = 0
    while state.can_carry([{"x": _text(1000)}]):
        (state.deferred if carried % 2 else state.retry).append(
            DeferredCommand(name=_text(50), args=[{"x": _text(1000)}])
        )
        carried += 1
    return {
        "adhoc": added,
        "requests": len(state.requests),
        "rejected": len(state.rejected),
        "carried": carried,
    }


def test_what_a_run_carries_to_the_next_stays_under_512_kib_with_every_list_full() -> None:
    state = _state()
    filled = _fill(state)
    resume = state.for_next_run()
    start = ProcessInput(opportunity_id=state.opportunity_id, actor=_text(200), resume=resume)
    payload = pydantic_data_converter.payload_converter.to_payloads([start])[0]
    parts = {
        name: size(value)
        for name, value in resume.model_dump(mode="json").items()
        if name in {"tasks", "requests", "rejected", "deferred", "retry", "data", "process"}
    }
    kib = {k: v // 1024 for k, v in parts.items()}
    print(f"\n{len(payload.data) // 1024} KiB in all; {kib} KiB; filled {filled}")
    assert len(payload.data) < LIMIT
    # Each list met its bound (the test filled them, not a lucky small case).
    assert 0 < filled["adhoc"] < MAX_OPEN_TASKS  # held back by their size, not their number
    assert parts["requests"] <= LEDGER_BYTES * 1.2 and filled["requests"] < MAX_REQUEST_IDS
    assert parts["rejected"] <= REJECTED_BYTES and filled["rejected"] < MAX_REJECTED
    assert parts["deferred"] + parts["retry"] <= WAITING_BYTES
    assert (
        size(state.process.definition.model_dump(mode="json")) <= DEFINITION_BYTES if state.process else False
    )


def test_a_definition_over_its_size_is_refused_saying_so() -> None:
    base = load_default_definition()
    guide = tuple(_text(1000) for _ in range(20))
    stages = tuple(s.model_copy(update={"guidance": guide}) for s in base.stages)
    with pytest.raises(ValidationError, match=r"the definition takes \d+ KiB; at most 48 KiB"):
        ProcessDefinition.model_validate({**base.model_dump(), "stages": stages})


def test_an_adhoc_task_past_the_open_tasks_size_is_refused_saying_so() -> None:
    state = _state()
    _fill(state)
    widest = AddTask(title=_text(200), actor=_text(200), owner=_text(200), due_at=NOW + timedelta(days=1))
    with pytest.raises(Refused, match=r"open tasks take \d+ KiB, as much as it holds"):
        Rules(state).check_add_task(widest, now=NOW)
