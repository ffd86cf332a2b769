"""Team queues, straight against the plain core: who may claim, complete, put off and release a
task of a team's queue (workflows/permissions.py), and the claim's rules (workflows/claims.py)."""

from __future__ import annotations

import pytest

from tests.unit.test_rules import NOW, _rules, _task
from workflows import claims
from workflows.contract import ClaimTask, CompleteTask, ReleaseTask
from workflows.permissions import Action, Asked, Directory, may, refusal
from workflows.refusals import Refused

MEMBER = Directory(teams=frozenset({"legal"}))


def _asked(action: Action, actor: str, task_owner: str) -> Asked:
    return Asked(action=action, actor=actor, owner="alice", task_owner=task_owner, team="legal")


def test_members_claim_and_only_the_claimer_or_an_admin_does_the_rest() -> None:
    assert may(_asked(Action.CLAIM, "ann", "team:legal"), MEMBER)
    assert not may(_asked(Action.CLAIM, "alice", "team:legal"), Directory())
    assert may(_asked(Action.CLAIM, "root", "team:legal"), Directory(admin=True))
    for action in (Action.COMPLETE_TASK, Action.APPROVE, Action.SNOOZE_TASK, Action.RELEASE):
        unclaimed, claimed = _asked(action, "ann", "team:legal"), _asked(action, "ann", "ann")
        assert not may(unclaimed, MEMBER) and "nobody has claimed" in refusal(unclaimed)
        assert may(claimed, MEMBER)
        other = _asked(action, "joe", "ann")
        assert not may(other, MEMBER) and "only ann, who claimed it, or an admin" in refusal(other)
        # the deal's owner and their manager have no say over a team's task; an admin has
        assert not may(_asked(action, "alice", "ann"), Directory(manages=frozenset({"ann"})))
        assert may(_asked(action, "root", "team:legal"), Directory(admin=True))
    # an actor who calls themself by the team's name is no claimer
    assert not may(_asked(Action.COMPLETE_TASK, "team:legal", "team:legal"), MEMBER)


def test_a_claim_is_one_members_and_a_release_gives_it_back() -> None:
    queued = _task("prepare-presentation", "Qualification", 1, owner="team:legal", team="legal")
    rules = _rules("Qualification", queued)
    claim = ClaimTask(task_id=queued.task_id, actor="ann")
    rules.check(claim, now=NOW, settled=True)
    assert rules.asked(claim).team == "legal" and rules.asked(claim).action is Action.CLAIM
    row = claims.claiming(rules.state, claim, NOW)
    assert (row.from_owner, row.to_owner, row.number) == ("team:legal", "ann", 1)
    queued.owner, queued.claims = "ann", 1
    with pytest.raises(Refused, match="is claimed by ann already"):
        rules.check(ClaimTask(task_id=queued.task_id, actor="joe"), now=NOW, settled=True)
    rules.check(
        ClaimTask(task_id=queued.task_id, actor="joe"), now=NOW, settled=False
    )  # a release may come first
    back = claims.claiming(rules.state, ReleaseTask(task_id=queued.task_id, actor="ann"), NOW)
    assert (back.to_owner, back.number) == ("team:legal", 2)
    assert rules.asked(CompleteTask(task_id=queued.task_id, actor="ann")).team == "legal"
    mine = _task("contact-assess", "Qualification", 1)
    with pytest.raises(Refused, match="not a team's"):
        _rules("Qualification", mine).check(
            ClaimTask(task_id=mine.task_id, actor="ann"), now=NOW, settled=True
        )


def test_a_task_for_a_teams_queue_opens_owned_by_the_team_and_a_reassignment_leaves_it() -> None:
    from tests.unit.test_rules import PROCESS
    from workflows import plans
    from workflows.contract import ChangeStage, Reassign
    from workflows.definition import Process

    doc = PROCESS.definition.model_dump()
    doc["stages"][0]["tasks"][0]["assignee"] = "team:finance"  # contact-assess
    doc["stages"][0]["tasks"][1]["approver"] = "team:legal"  # prepare-presentation
    process = Process(definition=type(PROCESS.definition).model_validate(doc), stages=PROCESS.stages)
    assert process.teams() == {"finance", "legal"} and not process.needs_approver("Qualification")
    rules = _rules("Presentation", process=process)
    entry = rules.entry(ChangeStage(stage="Qualification", actor="a"), NOW)
    got = {t.key: (t.owner, t.team, t.approval) for t in entry.tasks}
    assert got == {
        "contact-assess": ("team:finance", "finance", False),
        "prepare-presentation": ("team:legal", "legal", True),
    }
    claimed = entry.tasks[0].model_copy(update={"owner": "alice"})  # the deal's owner claimed it
    rules.state.tasks = {claimed.task_id: claimed}
    row = plans.reassignment(rules.state, Reassign(owner="bob", actor="alice"), NOW)
    assert row.task_ids == ()  # a team's task stays with the member who claimed it
