"""Team queues (issue 26), end to end on the real stack: a task of the definition that goes to a
team (`"approver": "team:NAME"`) is in every member's inbox and agenda; two members claiming it
at once, one wins and the other is told who; the claimer alone completes it (the other member and
the deal's owner are refused); a release gives it back. (Its escalation to the team's lead, unclaimed
past its time: tests/test_reminders.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from starter.client import read_events
from tests.helpers import Sale, journal_settled


async def make_team(sale: Sale) -> dict[str, str]:
    """A team of two members and a lead, with names of this test's own."""
    tag = uuid.uuid4().hex[:6]
    names = {"team": f"legal-{tag}", "ann": f"ann-{tag}", "joe": f"joe-{tag}", "lead": f"maria-{tag}"}
    added = await sale.cli("teams", "add", names["team"], "--members", f"{names['ann']},{names['joe']}",
                           "--lead", names["lead"])  # fmt: skip
    assert added.code == 0, added.stderr
    return names


def team_approval(team: str) -> Any:
    """The definition with Qualification's presentation prepared and approved by `team`."""

    def change(doc: dict[str, Any]) -> None:
        qualification = next(s for s in doc["stages"] if s["stage"] == "Qualification")
        task = next(t for t in qualification["tasks"] if t["key"] == "prepare-presentation")
        task["approver"] = f"team:{team}"

    return change


async def test_a_team_approval_is_claimed_by_one_of_two_racing_members_and_completed_by_them(
    sale: Sale,
) -> None:
    names = await make_team(sale)
    team, ann, joe = names["team"], names["ann"], names["joe"]
    async with sale.definition(team_approval(team)):
        _, opp = await sale.started(owner="alice")
    task_id = f"{opp}:v1:prepare-presentation"
    [task] = [t for t in (await sale.state(opp)).open_tasks if t.task_id == task_id]
    assert (task.owner, task.team, task.approval) == (f"team:{team}", team, True)

    # Every member has it in their inbox and their agenda.
    await journal_settled(sale, opp)
    for member in (ann, joe):
        inbox = json.loads((await sale.cli("inbox", member, "--json")).stdout)
        assert any(n["task_id"] == task_id and n["kind"] == "task_assigned" for n in inbox), inbox
        agenda = json.loads((await sale.cli("agenda", member, "--json")).stdout)
        assert [a["id"] for a in agenda] == [task_id], agenda

    # Unclaimed, nobody completes it: not a member, not the deal's owner.
    for actor in (ann, "alice"):
        refused = await sale.cli("complete", opp, task_id, "--actor", actor)
        assert refused.code == 1 and "that nobody has claimed: a member claims it first" in refused.stderr
    outsider = await sale.cli("claim", task_id, "--actor", "alice")
    assert outsider.code == 1 and "only its members may" in outsider.stderr

    # Two members claim at once: one wins, the other is told who has it.
    claims = await asyncio.gather(*(sale.cli("claim", task_id, "--actor", who) for who in (ann, joe)))
    [won] = [who for who, done in zip((ann, joe), claims, strict=True) if done.code == 0]
    [lost] = [done for done in claims if done.code != 0]
    other = joe if won == ann else ann
    assert f"is claimed by {won} already" in lost.stderr, lost.stderr
    [task] = [t for t in (await sale.state(opp)).open_tasks if t.task_id == task_id]
    assert (task.owner, task.team) == (won, team)

    # Only the claimer completes it: the other member and the owner are refused.
    for actor in (other, "alice"):
        refused = await sale.cli("complete", opp, task_id, "--actor", actor)
        assert refused.code == 1 and f"may not complete {won}'s task of team {team}" in refused.stderr
    release = await sale.cli("release", task_id, "--actor", other)
    assert release.code == 1 and f"only {won}, who claimed it" in release.stderr
    assert (await sale.cli("complete", opp, task_id, "--actor", won)).code == 0

    await journal_settled(sale, opp)
    told = [(n["recipient"], n["message"]) for n in await sale.notifications(opp, "task_claimed")]
    assert told == [(other, f"{won} claimed Prepare presentation (team {team}): it is theirs now")]
    kinds = [(e["type"].removeprefix("com.corpsale."), e["data"].get("claimed_by"))
             for e in await read_events(sale.database_url, opportunity_id=opp)]  # fmt: skip
    assert ("task.claimed", won) in kinds and kinds.count(("task.claimed", won)) == 1
    row = await sale.pool.fetchrow(
        "SELECT owner, team, status, completed_by FROM tasks WHERE id = $1", task_id
    )
    assert tuple(row) == (won, team, "completed", won)


async def test_a_claimed_task_is_released_back_to_its_teams_queue(sale: Sale) -> None:
    names = await make_team(sale)
    team, ann, joe = names["team"], names["ann"], names["joe"]
    async with sale.definition(team_approval(team)):
        _, opp = await sale.started(owner="alice")
    task_id = f"{opp}:v1:prepare-presentation"
    assert (await sale.cli("claim", opp, "prepare-presentation", "--actor", ann)).code == 0
    again = await sale.cli("claim", task_id, "--actor", ann)
    assert again.code == 1 and f"{ann} has claimed task" in again.stderr
    released = await sale.cli("release", task_id, "--actor", ann, "--reason", "on leave")
    assert released.code == 0, released.stderr
    [task] = [t for t in (await sale.state(opp)).open_tasks if t.task_id == task_id]
    assert task.owner == f"team:{team}"
    nothing = await sale.cli("release", task_id, "--actor", ann)
    assert nothing.code == 1 and "not claimed: nothing to release" in nothing.stderr
    assert (await sale.cli("claim", task_id, "--actor", joe)).code == 0  # the queue's again: joe takes it
    assert (await sale.cli("complete", opp, task_id, "--actor", joe)).code == 0
    not_team = await sale.cli("claim", opp, "contact-assess", "--actor", ann)
    assert not_team.code == 1 and "not a team's: nothing to claim" in not_team.stderr
    await journal_settled(sale, opp)
    back = await sale.notifications(opp, "task_released")
    assert [n["recipient"] for n in back] == [joe] and "on leave" in back[0]["message"]
