"""Approval tasks, straight against the plain core: a task template that names an approver
role ('manager') is opened for the owner's manager when there is one (the owner's own task
when not), and only its approver may complete it. Their end-to-end test is tests/test_approvals.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from activities.data.task_ops import starts
from tests.unit.test_rules import NOW, PROCESS, _rules, _task
from workflows.contract import ChangeStage, CompleteTask
from workflows.definition import ProcessDefinition, TaskTemplate, load_default_definition
from workflows.permissions import Action, Asked, Directory, may, refusal


def test_the_bundled_contract_approval_is_the_owners_managers_task() -> None:
    internal = PROCESS.task("Proposal", "internal-contract")
    assert internal.title == "Prepare and approve the contract within the company"
    assert internal.approver == "manager"
    assert PROCESS.needs_approver("Proposal") and not PROCESS.needs_approver("Qualification")


def test_an_approval_task_opens_for_the_approver_and_is_theirs_alone_to_complete() -> None:
    rules = _rules("Presentation")
    entry = rules.entry(ChangeStage(stage="Proposal", actor="alice"), NOW, approver="mary")
    owners = {t.key: (t.owner, t.approval) for t in entry.tasks}
    assert owners == {
        "present-proposal": ("alice", False),
        "proposal-approval": ("alice", False),
        "internal-contract": ("mary", True),
    }
    assert [t.owner for t in entry.step.tasks] == [None, None, "mary"]  # the rows and notices: mary's
    approval = next(t for t in entry.tasks if t.approval)
    [started] = [op for op in starts("o1", "alice", entry.step.tasks, None) if op.task_id == approval.task_id]
    assert started.args["owner"] == "mary"  # the timers and reminders go to her
    rules.state.tasks = {t.task_id: t for t in entry.tasks}
    asked = rules.asked(CompleteTask(task_id=approval.task_id, actor="alice"))
    assert asked == Asked(action=Action.APPROVE, actor="alice", owner="alice", task_owner="mary")
    assert not may(asked, Directory())  # the deal's owner may not approve their own contract
    assert not may(asked, Directory(admin=True))
    assert may(asked.model_copy(update={"actor": "mary"}), Directory(manages=frozenset({"alice"})))
    assert refusal(asked) == "alice may not complete an approval task of mary's: only its approver may."


def test_without_a_manager_the_approval_is_the_owners_own_task() -> None:
    entry = _rules("Presentation").entry(ChangeStage(stage="Proposal", actor="alice"), NOW, approver=None)
    assert {(t.owner, t.approval) for t in entry.tasks} == {("alice", False)}
    rules = _rules("Proposal", _task("internal-contract", "Proposal", 3))
    task_id = "o1:v3:internal-contract"
    assert rules.asked(CompleteTask(task_id=task_id, actor="alice")).action is Action.COMPLETE_TASK


def test_a_follow_up_task_names_no_approver() -> None:
    follow_up = TaskTemplate.model_validate(
        {"key": "order", "title": "Order", "duration": "P1D", "approver": "manager"}
    )
    with pytest.raises(ValidationError, match="follow-up tasks are the owner's"):
        ProcessDefinition.model_validate(
            {**load_default_definition().model_dump(), "follow_up": [follow_up.model_dump()]}
        )
