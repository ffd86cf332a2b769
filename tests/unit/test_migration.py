"""Moving a process onto another definition version, straight against the plain core: what the
plan keeps, cancels and opens, when it is refused, and the state after it. End to end:
tests/test_migration.py."""

from __future__ import annotations

from datetime import timedelta

from tests.unit.test_rules import NOW, PROCESS, _rules, _task
from workflows import migration
from workflows.definition import ProcessDefinition, TaskTemplate

V1 = PROCESS.definition


def _next(change: dict[str, list[TaskTemplate] | None]) -> ProcessDefinition:
    """Version 2: each stage named in `change` gets those tasks (None: the stage is gone)."""
    stages = [
        st.model_copy(update={"tasks": tuple(change[st.stage] or ())})
        if change.get(st.stage) is not None
        else st
        for st in V1.stages
        if not (st.stage in change and change[st.stage] is None)
    ]
    return V1.model_copy(update={"version": V1.version + 1, "stages": tuple(stages)})


LEGAL = TaskTemplate(key="legal-review", title="Legal review", duration=timedelta(days=2))


def test_kept_canceled_and_opened_by_key_and_the_state_after() -> None:
    done = _task("present-proposal", "Proposal", 2, status="completed", outcome="done")
    approval, internal = _task("proposal-approval", "Proposal", 2), _task("internal-contract", "Proposal", 2)
    adhoc = _task("adhoc1", "Proposal", 2, adhoc=True)
    rules = _rules("Proposal", done, approval, internal, adhoc)
    tasks = [
        PROCESS.task("Proposal", "present-proposal"),
        PROCESS.task("Proposal", "proposal-approval"),
        LEGAL,
    ]
    target = _next({"Proposal": tasks})

    plan = migration.plan(rules.state, target, NOW)
    assert plan.refused is None and (plan.from_version, plan.to_version) == (V1.version, V1.version + 1)
    assert [t.key for t in plan.kept] == ["proposal-approval"]  # open, same key: as it is
    assert plan.kept[0].due_at == approval.due_at
    assert [t.key for t in plan.canceled] == ["internal-contract"]  # the key is gone
    assert [(t.task_id, t.due_at) for t in plan.opened] == [("o1:v2:legal-review", NOW + timedelta(days=2))]

    opened = migration.new_tasks(plan, NOW, None)
    row = migration.row(rules.state, "admin", plan, opened, NOW)
    assert (row.number, row.cancel, row.kept) == (
        1,
        ("o1:v2:internal-contract",),
        ("o1:v2:proposal-approval",),
    )
    started = migration.apply(rules.state, target, plan, opened)
    state = rules.state
    assert [t.task_id for t in started] == ["o1:v2:legal-review"] and started[0].owner == "alice"
    assert state.tasks["o1:v2:internal-contract"].status == "canceled"
    assert state.tasks["o1:v2:adhoc1"].status == "open"  # an operator's own task is not the definition's
    assert state.process is not None and state.process.definition.version == V1.version + 1
    assert sorted(t.task_id for t in state.open_tasks()) == [
        "o1:v2:adhoc1", "o1:v2:legal-review", "o1:v2:proposal-approval"
    ]  # fmt: skip
    assert state.migrations == 1


def test_a_new_approval_task_is_the_approvers() -> None:
    rules = _rules("Contracting", _task("send-contract", "Contracting", 3))
    approve = TaskTemplate(
        key="deal-desk", title="Deal desk approval", duration=timedelta(days=1), approver="manager"
    )
    target = _next({"Contracting": [PROCESS.task("Contracting", "send-contract"), approve]})
    plan = migration.plan(rules.state, target, NOW)
    assert [(t.key, t.approval) for t in plan.opened] == [("deal-desk", True)]
    assert [t.owner for t in migration.new_tasks(plan, NOW, "mary")] == ["mary"]
    assert [t.owner for t in migration.new_tasks(plan, NOW, None)] == [None]  # no manager: the owner's


def test_refused_when_the_stage_is_gone_the_version_is_the_same_or_the_deal_is_closed() -> None:
    at_presentation = _rules("Presentation", _task("presentation", "Presentation", 2))
    gone = migration.plan(at_presentation.state, _next({"Presentation": None}), NOW)
    assert gone.refused is not None and "Stage 'Presentation' is gone from version" in gone.refused
    assert gone.kept == gone.canceled == gone.opened == []
    same = migration.plan(at_presentation.state, V1, NOW)
    assert same.refused == f"The process follows version {V1.version} already."
    closed = _rules("Closed won", closed=True)
    refused = migration.plan(closed.state, _next({}), NOW).refused
    assert refused is not None and "is closed in 'Closed won'" in refused


def test_kept_tasks_take_the_new_outcomes_and_a_plan_that_leaves_nothing_open_is_refused() -> None:
    sign = _task("sign-contract", "Contracting", 3)
    rules = _rules("Contracting", sign)
    renamed = PROCESS.task("Contracting", "sign-contract").model_copy(
        update={"outcomes": (PROCESS.task("Contracting", "sign-contract").outcomes[0],)}
    )
    target = _next({"Contracting": [renamed]})
    plan = migration.plan(rules.state, target, NOW)
    assert [t.key for t in plan.kept] == ["sign-contract"]
    migration.apply(rules.state, target, plan, migration.new_tasks(plan, NOW, None))
    assert rules.state.tasks[sign.task_id].outcomes == [renamed.outcomes[0].name]  # judged by version 2

    done = _task("send-contract", "Contracting", 3, status="completed", outcome="done")
    only_open = _rules("Contracting", done, _task("contract-status", "Contracting", 3))
    nothing_left = migration.plan(
        only_open.state, _next({"Contracting": [PROCESS.task("Contracting", "send-contract")]}), NOW
    )
    assert nothing_left.refused is not None and "would leave no open task" in nothing_left.refused
