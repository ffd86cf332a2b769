"""The rules of the sale process as plain Python (nothing of Temporal): which commands a process
takes in the state it is in, refused with a reason a person can act on, and what a command
asks of the people directory (R24). The workflow (workflows/opportunity.py) is the shell that
applies them durably; tests/unit drives them directly.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from pydantic import BaseModel

from workflows import claims
from workflows import contract as c
from workflows.contract import (
    AddTask,
    ChangeStage,
    ClaimTask,
    CompleteTask,
    MigrateDefinition,
    Reassign,
    ReleaseTask,
    SnoozeTask,
    UpdateOpportunity,
)
from workflows.definition import Effect, Process, TaskTemplate, did_you_mean
from workflows.fields import TEAM_PREFIX
from workflows.permissions import Action, Asked
from workflows.refusals import GateClosed, Refused
from workflows.state import Answer, SaleState, TaskState, size
from workflows.steps import Closing, EnterStage, NewTask

# How many open tasks an opportunity holds, and how much of them (its state is carried from run
# to run: workflows/state.py).
MAX_OPEN_TASKS, OPEN_TASKS_BYTES = 200, 96 * 1024

_TASK_OVERHEAD = 1024  # what a task holds besides what its command says (ids, times, outcomes)


class Waiting(NamedTuple):
    """The move to the next stage, held at its gate until the deal has what is `missing`."""

    move: ChangeStage
    missing: tuple[str, ...]


class Entry(BaseModel):
    """What entering a stage writes (one step) and the tasks the process then holds."""

    step: EnterStage
    tasks: tuple[TaskState, ...]


class Rules:
    """The checks of one opportunity's process, on its state as it is now.

    `settled=False` (update validators) keeps to the refusals that no command still queued ahead
    of this one can undo; the handler checks again, in order, under the lock."""

    def __init__(self, state: SaleState) -> None:
        self.state = state

    @property
    def process(self) -> Process:
        assert self.state.process is not None
        return self.state.process

    def recall(self, request_id: str | None, print_: str) -> Answer | None:
        """R23: the answer already given to this request, if any; a request id that came with
        another command is refused."""
        known = self.state.answer(request_id)
        if known is not None and known.fingerprint and known.fingerprint != print_:
            raise self.reused(request_id)
        return known

    @staticmethod
    def reused(request_id: str | None) -> Refused:
        return Refused(
            f"Request id {request_id!r} was used for another command; give each command a"
            " request id of its own (and a retry the same one)."
        )

    def check(self, cmd: BaseModel, *, now: datetime, settled: bool = False) -> None:
        match cmd:
            case ChangeStage():
                self.check_change_stage(cmd, settled=settled)
                if self.process.has_stage(cmd.stage) and self.closes_as_lost(cmd.stage) and not cmd.reason:
                    raise Refused(
                        f"Closing as {cmd.stage!r} takes a reason from the close-reason lookup"
                        " (`corpsale close-reasons` lists them)."
                    )
            case CompleteTask():
                self.check_complete_task(cmd, settled=settled)
            case UpdateOpportunity():
                self.check_update(cmd)
            case Reassign():
                self.check_reassign(cmd, settled=settled)
            case AddTask():
                self.check_add_task(cmd, now=now)
            case SnoozeTask():
                self.check_snooze(cmd, now=now, settled=settled)
            case MigrateDefinition():
                self.check_open()
            case ClaimTask():
                self.check_open()
                claims.check_claim(self.state, cmd, settled=settled)
            case ReleaseTask():
                self.check_open()
                claims.check_release(self.state, cmd, settled=settled)

    def check_open(self) -> None:
        if self.state.closed:
            raise Refused(
                f"Opportunity {self.state.opportunity_id!r} is closed in {self.state.stage!r};"
                " a final stage is never left and its data no longer changes."
            )

    def check_change_stage(self, cmd: ChangeStage, *, settled: bool = True) -> None:
        self.check_open()
        process = self.process
        if not process.has_stage(cmd.stage):
            if not settled:
                return  # the lookup may have the stage by now: the handler reloads it
            names = [s.name for s in process.its_stages]
            hint = did_you_mean(cmd.stage, names)
            if any(s.name == cmd.stage for s in process.stages):  # in the lookup, not in this process
                raise Refused(
                    f"The {process.definition.process} process has no stage {cmd.stage!r}. {hint}Its"
                    f" stages: {', '.join(names)}."
                )
            raise Refused(f"Unknown stage {cmd.stage!r}. {hint}Stages: {', '.join(names)}.")
        target = process.stage(cmd.stage)
        if settled and cmd.stage == self.state.stage and not cmd.restart:
            raise Refused(
                f"The opportunity is in {cmd.stage!r} already; to restart the stage with new tasks,"
                " send restart: true (`corpsale move --restart`)."
            )
        if (cmd.actual_income is not None or cmd.hours_spent is not None) and not (
            target.final and target.successful
        ):
            raise Refused("actual_income and hours_spent are recorded only when closing as won.")
        if cmd.competitor is not None and not (target.final and not target.successful):
            raise Refused("competitor is recorded only when closing as lost.")
        if cmd.override and not cmd.reason:
            raise Refused("An override of a stage's entry requirements takes a reason.")
        missing = self.state.missing_to_enter(cmd.stage) if cmd.stage != self.state.stage else []
        if settled and missing and not cmd.override:
            raise GateClosed(
                f"{cmd.stage!r} cannot be entered yet: missing {', '.join(missing)}. Fill them in"
                " (`corpsale update ID --set FIELD=VALUE`), or the owner's manager may move it with"
                " override: true and a reason (`corpsale move ID STAGE --override --reason ...`)."
            )

    def check_complete_task(self, cmd: CompleteTask, *, settled: bool = True) -> TaskState | None:
        self.check_open()
        task = self.state.tasks.get(cmd.task_id)
        if task is None and not settled:
            return None  # a move queued ahead may open it
        if task is None:
            raise Refused(f"Unknown task {cmd.task_id!r}; the state query lists the open tasks.")
        if task.status == "canceled":
            raise Refused(f"Task {cmd.task_id!r} was canceled when the opportunity left {task.stage!r}.")
        if task.status == "completed":
            raise Refused(f"Task {cmd.task_id!r} is completed already ({task.outcome}).")
        if cmd.outcome is not None and cmd.outcome not in task.outcomes:
            raise Refused(
                f"Task {cmd.task_id!r} has no outcome {cmd.outcome!r}; choose one of: "
                + ", ".join(task.outcomes)
                + "."
            )
        if settled and (cmd.actual_income is not None or cmd.hours_spent is not None):
            if not self.closes_as_won(task, cmd.outcome):
                raise Refused(
                    "actual_income and hours_spent go with the completion that closes the opportunity"
                    " as won (the last task of the last stage before it)."
                )
        return task

    def closes_as_won(self, task: TaskState, outcome_name: str | None) -> bool:
        """Whether completing this task with this outcome closes the opportunity as won."""
        if task.adhoc:
            return False
        outcome = self.process.task(task.stage, task.key).outcome(outcome_name)
        if outcome is None:
            return False
        if outcome.effect is Effect.MOVE:
            assert outcome.stage is not None
            target = self.process.stage(outcome.stage)
            return target.final and bool(target.successful)
        others_done = all(t.status == "completed" for t in self.state.visit_tasks() if t is not task)
        following = self.process.next_stage(task.stage)
        return others_done and following is not None and following.final and bool(following.successful)

    def closes_as_lost(self, stage: str) -> bool:
        return self.process.is_lost(stage)

    def check_update(self, cmd: UpdateOpportunity) -> None:
        self.check_open()
        if not cmd.changes():
            raise Refused("No field to update; give at least one opportunity data field.")

    def check_add_task(self, cmd: AddTask, *, now: datetime) -> None:
        self.check_open()
        open_tasks = self.state.open_tasks()
        if len(open_tasks) >= MAX_OPEN_TASKS:
            raise Refused(
                f"The opportunity has {MAX_OPEN_TASKS} open tasks, as many as it holds; complete some first."
            )
        held = sum(size(t.model_dump(mode="json")) for t in open_tasks)
        if held + size(cmd.model_dump(mode="json")) + _TASK_OVERHEAD > OPEN_TASKS_BYTES:
            raise Refused(
                f"The opportunity's {len(open_tasks)} open tasks take {held // 1024} KiB, as much as it"
                " holds; complete some first."
            )
        if cmd.due_at is not None and cmd.due_at <= now:
            raise Refused(f"due_at {cmd.due_at.isoformat()} is not in the future.")

    def check_snooze(self, cmd: SnoozeTask, *, now: datetime, settled: bool = True) -> TaskState | None:
        """An open task, put off to a time still ahead (R20: its reminders move with it)."""
        self.check_open()
        if cmd.due_at <= now:
            raise Refused(f"due_at {cmd.due_at.isoformat()} is not in the future.")
        task = self.state.tasks.get(cmd.task_id)
        if task is None and not settled:
            return None  # a move queued ahead may open it
        if task is None:
            raise Refused(f"Unknown task {cmd.task_id!r}; the state query lists the open tasks.")
        if task.status != "open":
            raise Refused(f"Task {cmd.task_id!r} is {task.status}: only an open task is put off.")
        if cmd.due_at == task.due_at:
            raise Refused(f"Task {cmd.task_id!r} is due at {task.due_at.isoformat()} already.")
        return task

    def check_reassign(self, cmd: Reassign, *, settled: bool = True) -> None:
        self.check_open()
        if settled and cmd.owner == self.state.owner:
            raise Refused(f"{cmd.owner!r} is the owner already.")

    def asked(self, cmd: BaseModel) -> Asked:
        """What the command asks of the people directory (R24): who, doing what, to whose deal."""
        state, task_owner = self.state, None
        match cmd:
            case ChangeStage() if cmd.override:
                action = Action.OVERRIDE
            case ChangeStage():
                action = Action.CLOSE if self.process.stage(cmd.stage).final else Action.MOVE
            case CompleteTask() if state.tasks[cmd.task_id].approval:
                action, task_owner = Action.APPROVE, state.tasks[cmd.task_id].owner
            case CompleteTask():
                action, task_owner = Action.COMPLETE_TASK, state.tasks[cmd.task_id].owner
            case Reassign():
                action = Action.REASSIGN
            case AddTask():
                action = Action.ADD_TASK
            case SnoozeTask():
                action, task_owner = Action.SNOOZE_TASK, state.tasks[cmd.task_id].owner
            case MigrateDefinition():
                action = Action.MIGRATE
            case ClaimTask():
                action, task_owner = Action.CLAIM, state.tasks[cmd.task_id].owner
            case ReleaseTask():
                action, task_owner = Action.RELEASE, state.tasks[cmd.task_id].owner
            case _:
                action = Action.UPDATE
        actor = getattr(cmd, "actor", None)
        task = state.tasks.get(getattr(cmd, "task_id", "")) if task_owner is not None else None
        team = task.team if task is not None else None
        return Asked(action=action, actor=actor, owner=state.owner, task_owner=task_owner, team=team)

    def entry(self, cmd: ChangeStage, now: datetime, approver: str | None = None) -> Entry:
        """Entering `cmd.stage` as the next visit (R5, R13): its tasks for the owner (an approval
        task for `approver`, the owner's manager, when there is one), due by the definition's
        durations; closing data and a won deal's follow-up tasks for a final stage; the open
        ad-hoc tasks stay open."""
        state, process = self.state, self.process
        stage, visit = process.stage(cmd.stage), state.visit + 1
        definition = process.definition
        templates = process.tasks_of(stage.name)

        def new(task_id: str, key: str, title: str, duration: timedelta, owner: str | None = None) -> NewTask:
            due = definition.due(now, duration)
            return NewTask(task_id=task_id, task_key=key, title=title, start_at=now, due_at=due, owner=owner)

        def owner_of(t: TaskTemplate) -> str | None:
            """A team's (`team:NAME`, until a member claims it), the approver's, else the deal owner's."""
            if t.assignee or (t.approver and t.approver.startswith(TEAM_PREFIX)):
                return t.assignee or t.approver
            return t.approver and approver

        tasks = tuple(
            new(f"{state.opportunity_id}:v{visit}:{t.key}", t.key, t.title, t.duration, owner_of(t))
            for t in templates
        )
        closing = None
        if stage.final:
            follow_up = definition.follow_up if stage.successful else ()
            closing = Closing(
                successful=bool(stage.successful),
                actual_income=cmd.actual_income,
                hours_spent=cmd.hours_spent,
                reason=cmd.reason,
                competitor=cmd.competitor,
                follow_up=tuple(
                    new(c.follow_up_task_id(state.opportunity_id, t.key), t.key, t.title, t.duration)
                    for t in follow_up
                ),
            )
        step = EnterStage(
            opportunity_id=state.opportunity_id,
            visit_no=visit,
            stage=stage.name,
            owner=state.owner,
            actor=cmd.actor,
            # An override is recorded with the visit it made (R-gates): by whom, and why.
            reason=f"override of the entry requirements: {cmd.reason}" if cmd.override else cmd.reason,
            at=now,
            tasks=tasks,
            closing=closing,
            keep_open=tuple(t.task_id for t in state.open_tasks() if t.adhoc),
            definition_version=definition.version,
            reminders=definition.reminders,
        )
        held = tuple(
            TaskState(
                task_id=t.task_id,
                key=t.task_key,
                title=t.title,
                stage=stage.name,
                visit=visit,
                owner=t.owner or state.owner,
                start_at=t.start_at,
                due_at=t.due_at,
                outcomes=[o.name for o in template.outcomes],
                approval=t.owner is not None and template.approver is not None,
                team=t.owner[len(TEAM_PREFIX) :] if t.owner and t.owner.startswith(TEAM_PREFIX) else None,
            )
            for t, template in zip(tasks, templates, strict=True)
        )
        return Entry(step=step, tasks=held)

    def outcome_of(self, task: TaskState, cmd: CompleteTask) -> str:
        """The outcome a completion records: the one named, else the task's first."""
        if task.adhoc:
            return c.ADHOC_OUTCOME
        outcome = self.process.task(task.stage, task.key).outcome(cmd.outcome)
        assert outcome is not None  # checked: the task has it
        return outcome.name

    def after_completion(self, task: TaskState, cmd: CompleteTask) -> ChangeStage | Waiting | None:
        """What a completion does to the flow once recorded (R7, R10): the move its outcome
        makes, the next stage once every task of the visit is completed, or nothing (an ad-hoc
        task moves nothing). A move that closes as won takes the completion's income and hours."""
        if task.adhoc:
            return None
        outcome = self.process.task(task.stage, task.key).outcome(cmd.outcome)
        assert outcome is not None
        won = {"actual_income": cmd.actual_income, "hours_spent": cmd.hours_spent}  # checked: closes as won
        if outcome.effect is Effect.MOVE:
            assert outcome.stage is not None
            reason = outcome.close_reason or f"outcome {outcome.name!r} of {task.title!r}"
            return ChangeStage(stage=outcome.stage, actor=cmd.actor, reason=reason, restart=True, **won)
        # Every task of the visit done (one a move onto another version canceled does not count).
        if all(t.status != "open" for t in self.state.visit_tasks()):
            following = self.process.next_stage(task.stage)
            if following is not None:
                reason = f"all tasks of {task.stage} completed"
                move = ChangeStage(stage=following.name, actor=cmd.actor, reason=reason, **won)
                missing = self.state.missing_to_enter(following.name)
                return Waiting(move, tuple(missing)) if missing else move
        return None

    def released(self) -> ChangeStage | None:
        """The move that waited at a gate, once the deal has what the gate asks for."""
        move = self.state.waiting
        if move is None or self.state.missing_to_enter(move.stage):
            return None
        reason = f"{move.reason}; the entry requirements of {move.stage} are met"
        return move.model_copy(update={"reason": reason})

    def first_stage(self, stage: str | None) -> str:
        """Where a starting process enters: the opportunity's stage, else the first by order."""
        return stage or self.process.first_stage().name
