"""Moving a running process onto another definition version, as plain rules: what it would do
(`plan`, also the answer of the `migration_plan` query, the dry run) and the state after it
(`apply`). The process stays in its stage and visit; of the visit's tasks of the definition (not
the ad-hoc ones), the open ones whose key the stage keeps stay as they are (owner, due time), the
open ones whose key is gone are canceled, and the stage's keys the visit has not had open as new
tasks, due from now by the new version's durations."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from workflows.definition import Process, ProcessDefinition, Reminders
from workflows.operations import MigrationPlan, PlannedTask
from workflows.state import SaleState, TaskState
from workflows.steps import MigrateRow, NewTask


def plan(state: SaleState, target: ProcessDefinition, now: datetime) -> MigrationPlan:
    assert state.process is not None
    current = state.process.definition.version
    plan = MigrationPlan(
        opportunity_id=state.opportunity_id,
        stage=state.stage,
        from_version=current,
        to_version=target.version,
        from_process=state.process.definition.process,
        to_process=target.process,
    )
    refusal = _refusal(state, target)
    if refusal is not None:
        return plan.model_copy(update={"refused": refusal})
    templates = {t.key: t for st in target.stages if st.stage == state.stage for t in st.tasks}
    ours = [t for t in state.tasks.values() if t.visit == state.visit and not t.adhoc]
    had = {t.key for t in ours}
    still = [t for t in ours if t.status == "open"]
    if still and not any(t.key in templates for t in still) and set(templates) <= had:
        return plan.model_copy(
            update={
                "refused": f"Version {target.version} would leave no open task in {state.stage!r} for this"
                " visit (its open tasks are gone from it); complete them or move the deal first."
            }
        )
    return plan.model_copy(
        update={
            "kept": [_planned(t) for t in still if t.key in templates],
            "canceled": [_planned(t) for t in still if t.key not in templates],
            "opened": [
                PlannedTask(
                    task_id=f"{state.opportunity_id}:v{state.visit}:{key}",
                    key=key,
                    title=t.title,
                    due_at=target.due(now, t.duration),
                    approval=t.approver is not None,
                )
                for key, t in templates.items()
                if key not in had
            ],
        }
    )


def _refusal(state: SaleState, target: ProcessDefinition) -> str | None:
    assert state.process is not None
    current, to = state.process.definition.version, target.version
    across = target.process != state.process.definition.process  # onto another sales process
    if state.closed:
        return (
            f"The opportunity is closed in {state.stage!r}; a closed deal keeps the version it closed with."
        )
    if to == current and not across:
        return f"The process follows version {to} already."
    if state.waiting is not None or state.pending_entry is not None:
        return "The process is between two stages; send it again once it has entered the next one."
    try:
        Process(definition=target, stages=state.process.stages)
    except ValidationError as err:
        return f"Version {to} does not fit the stages lookup: {err.errors()[0]['msg']}."
    if not any(st.stage == state.stage for st in target.stages):
        gone = (
            f"The {target.process} process (version {to}) has no stage {state.stage!r}"
            if across
            else f"Stage {state.stage!r} is gone from version {to}"
        )
        stages = ", ".join(st.stage for st in target.stages)
        return f"{gone}; move the opportunity to one of its stages first ({stages})."
    return None


def _planned(task: TaskState) -> PlannedTask:
    return PlannedTask(
        task_id=task.task_id, key=task.key, title=task.title, due_at=task.due_at, approval=task.approval
    )


def new_tasks(plan: MigrationPlan, now: datetime, approver: str | None) -> tuple[NewTask, ...]:
    """The opened tasks as rows (an approval task for `approver`, the owner's manager, if any)."""
    return tuple(
        NewTask(
            task_id=t.task_id,
            task_key=t.key,
            title=t.title,
            start_at=now,
            due_at=t.due_at or now,
            owner=approver if t.approval else None,
        )
        for t in plan.opened
    )


def row(
    state: SaleState,
    actor: str,
    plan: MigrationPlan,
    opened: tuple[NewTask, ...],
    now: datetime,
    reminders: Reminders | None = None,
) -> MigrateRow:
    """What the move writes, in one transaction (with the timers of the version's tasks)."""
    assert state.stage is not None
    return MigrateRow(
        opportunity_id=state.opportunity_id,
        number=state.migrations + 1,
        visit_no=state.visit,
        stage=state.stage,
        owner=state.owner,
        actor=actor,
        from_version=plan.from_version,
        to_version=plan.to_version,
        kept=tuple(t.task_id for t in plan.kept),
        cancel=tuple(t.task_id for t in plan.canceled),
        tasks=opened,
        at=now,
        reminders=reminders,
        process=plan.to_process if plan.to_process != plan.from_process else None,
    )


def apply(
    state: SaleState, target: ProcessDefinition, plan: MigrationPlan, opened: tuple[NewTask, ...]
) -> list[TaskState]:
    """The state after the move; returns the tasks it opened (their workflows are to start)."""
    assert state.process is not None and state.stage is not None
    process = Process(definition=target, stages=state.process.stages)
    for t in plan.canceled:
        state.tasks[t.task_id].status = "canceled"
    for t in plan.kept:  # the new version's outcomes: a completion is judged by them
        state.tasks[t.task_id].outcomes = [o.name for o in process.task(state.stage, t.key).outcomes]
    started = []
    for row, planned in zip(opened, plan.opened, strict=True):
        template = process.task(state.stage, planned.key)
        task = TaskState(
            task_id=row.task_id,
            key=row.task_key,
            title=row.title,
            stage=state.stage,
            visit=state.visit,
            owner=row.owner or state.owner,
            start_at=row.start_at,
            due_at=row.due_at,
            outcomes=[o.name for o in template.outcomes],
            approval=row.owner is not None,
        )
        state.tasks[task.task_id] = task
        started.append(task)
    state.process = process
    state.migrations += 1
    return started
