"""Who may do what (R24), as plain rules. The process asks them with what the people directory
says of the actor, read when the command is checked (activities/data/access.py):

- Completing a task and putting it off (snoozing it): its owner, the deal's owner, the manager
  of either, an admin.
- Reassigning the deal and closing it (a move to a final stage): the deal's owner, their
  manager, an admin.
- Other stage moves, data updates and tasks of one's own: anyone (the owner hears of moves
  someone else makes).
- A move past a stage's entry requirements (an override): the owner's manager, an admin.
- Completing an approval task: its approver (the task's owner) only.
- A task of a team's queue: a member claims it; then only they (or an admin) complete it, put it
  off or release it; nobody completes it unclaimed, but an admin.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from workflows.fields import TEAM_PREFIX


class Action(StrEnum):
    MOVE = "move"
    CLOSE = "close"
    COMPLETE_TASK = "complete a task of"
    SNOOZE_TASK = "put off a task of"
    UPDATE = "update"
    ADD_TASK = "add a task to"
    REASSIGN = "reassign"
    OVERRIDE = "override the entry requirements of a stage for"
    APPROVE = "complete the approval task of"
    MIGRATE = "move onto another process version"
    CLAIM = "claim a task of"
    RELEASE = "release a task of"


OPEN_TO_ALL = frozenset({Action.MOVE, Action.UPDATE, Action.ADD_TASK})


class Asked(BaseModel):
    """One command's question: may `actor` do `action` on `owner`'s deal (and `task_owner`'s task)?"""

    model_config = ConfigDict(frozen=True)

    action: Action
    actor: str | None
    owner: str
    task_owner: str | None = None
    team: str | None = None  # the team whose queue the task is in

    def people(self) -> list[str]:
        """Whom the directory is asked about."""
        return [p for p in (self.actor, self.owner, self.task_owner) if p]


class Directory(BaseModel):
    """What the people directory says of the actor, as far as the rules ask."""

    model_config = ConfigDict(frozen=True)

    admin: bool = False
    manages: frozenset[str] = frozenset()  # people whose manager the actor is
    teams: frozenset[str] = frozenset()  # the teams the actor is a member of


TEAM_WORK = frozenset({Action.COMPLETE_TASK, Action.APPROVE, Action.SNOOZE_TASK, Action.RELEASE})


def _claimer(asked: Asked) -> str | None:
    """Who claimed the team task asked about (None while it is in its team's queue)."""
    owner = asked.task_owner
    return owner if owner is not None and not owner.startswith(TEAM_PREFIX) else None


def may(asked: Asked, directory: Directory) -> bool:
    if asked.action in OPEN_TO_ALL:
        return True
    if asked.actor is None:
        return False
    if asked.action is Action.OVERRIDE:
        return directory.admin or asked.owner in directory.manages
    if asked.action is Action.MIGRATE:
        return directory.admin
    if asked.action is Action.CLAIM:
        return directory.admin or asked.team in directory.teams
    if asked.team is not None and asked.action in TEAM_WORK:
        return directory.admin or (_claimer(asked) is not None and asked.actor == _claimer(asked))
    if asked.action is Action.APPROVE:
        return asked.actor == asked.task_owner
    allowed = {asked.owner}
    if asked.action in (Action.COMPLETE_TASK, Action.SNOOZE_TASK) and asked.task_owner:
        allowed.add(asked.task_owner)
    return directory.admin or asked.actor in allowed or bool(directory.manages & allowed)


def refusal(asked: Asked) -> str:
    """Why the actor may not: a line that says who may."""
    actor, owner = asked.actor or "An actor without a name", asked.owner
    if asked.action is Action.CLAIM:
        return f"{actor} may not claim a task of team {asked.team}: only its members may (`corpsale teams`)."
    if asked.team is not None and asked.action in TEAM_WORK:
        verb = {Action.SNOOZE_TASK: "put off", Action.RELEASE: "release"}.get(asked.action, "complete")
        claimer = _claimer(asked)
        if claimer is None:
            return (
                f"{actor} may not {verb} a task of team {asked.team} that nobody has claimed: a member"
                " claims it first (`corpsale claim OPP TASK`), then only they, or an admin, may."
            )
        return (
            f"{actor} may not {verb} {claimer}'s task of team {asked.team}: only {claimer}, who claimed"
            " it, or an admin may."
        )
    if asked.action in (Action.COMPLETE_TASK, Action.SNOOZE_TASK):
        whose = asked.task_owner if asked.task_owner else owner
        verb = "complete" if asked.action is Action.COMPLETE_TASK else "put off"
        return (
            f"{actor} may not {verb} {whose}'s task: only the task's owner, the deal's owner, the"
            " manager of either, or an admin may (`corpsale people` lists managers and admins)."
        )
    if asked.action is Action.APPROVE:
        return f"{actor} may not complete an approval task of {asked.task_owner}'s: only its approver may."
    if asked.action is Action.OVERRIDE:
        return (
            f"{actor} may not override the entry requirements for {owner}'s opportunity: only"
            f" {owner}'s manager or an admin may (`corpsale people` lists managers and admins)."
        )
    if asked.action is Action.MIGRATE:
        return f"{actor} may not move {owner}'s opportunity onto another process version: only an admin may."
    verb = "close" if asked.action is Action.CLOSE else asked.action.value
    return (
        f"{actor} may not {verb} {owner}'s opportunity: only its owner, their manager, or an admin"
        " may (`corpsale people` lists managers and admins)."
    )
