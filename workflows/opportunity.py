"""The corporate sale process of one opportunity: an entity workflow that interprets the process
definition. It enters a stage, opens its tasks as child workflows, and moves on when the tasks
are done or a command moves it, until a final stage ends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue, SearchAttributeKey, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        AddTaskRow,
        Authorize,
        Closing,
        CompleteTaskRow,
        EnterStage,
        NewTask,
        OpenOpportunity,
        ReassignRow,
        UpdateOpportunityRow,
    )
    from activities.sale import SaleActivities
    from workflows import contract as c
    from workflows.contract import (
        AddTask,
        ChangeStage,
        CompleteTask,
        Reassign,
        StateView,
        UpdateOpportunity,
    )
    from workflows.definition import Effect, Process
    from workflows.rules import (
        COMMAND_MODELS,
        HandingOver,
        NotAllowed,
        Refused,
        Rules,
        one_payload,
        parse,
        parse_command,
        request_id_of,
        validation_message,
    )
    from workflows.stale import StaleDealWatcher
    from workflows.state import (
        Answer,
        DeferredCommand,
        ProcessInput,
        SaleState,
        TaskInput,
        TaskState,
        fingerprint,
        json_safe,
    )
    from workflows.task import TaskChildren, TaskLinks

STAGE_ATTR, OWNER_ATTR, AMOUNT_ATTR = c.STAGE_ATTR, c.OWNER_ATTR, c.AMOUNT_ATTR

ACTIVITY_TIMEOUT = timedelta(seconds=30)

# Runs started from here on hold tasks that outlive them and continue as new at any quiet point
# (between commands), not only at a stage boundary with every task closed.
PATCH_HANDOVER = "runs-hand-over-with-tasks-open"
# Runs started from here on check who may do what (R24) before they apply a command.
PATCH_PERMISSIONS = "command-permissions"
# Runs started from here on tell their task workflows of a new owner (what the Web UI shows).
PATCH_TASK_OWNER = "task-owner-shown"
# A run continues as new before Temporal's limits are near: after this many history events or
# accepted updates (the server refuses updates after 2,000 in a run), or when the server suggests
# it. Past the margin (a flood of commands that leaves no quiet point) commands wait for the
# next run: signals are carried to it, updates are refused with HandingOver, which the product's
# clients send again on their own.
RUN_EVENTS = 2_500
RUN_UPDATES = 1_000
FLOOD_UPDATES_MARGIN = 500
MAX_DEFERRED_CHARS = 200_000

# What the run is given when a start sends no input at all.
NO_START = RawValue(Payload())


def _decode(raw: RawValue) -> Any:
    """A payload as it was sent, read here rather than by the SDK: one that is not JSON (or not
    UTF-8, or nested too deep) is refused with a reason instead of failing a workflow task."""
    try:
        return workflow.payload_converter().from_payload(raw.payload)
    except Exception as err:  # anything a sender can put in a payload: RecursionError included
        encoding = raw.payload.metadata.get("encoding", b"").decode("utf-8", "replace") or "none"
        raise Refused(
            f"Malformed payload: not JSON the process can read ({type(err).__name__}, encoding"
            f" {encoding!r}, {len(raw.payload.data)} bytes); send one JSON object."
        ) from None


def _read_start(raw: RawValue) -> ProcessInput | str:
    """The start input, or why it cannot be one."""
    if raw is NO_START:
        return "The start has no input: send one JSON object (docs/schemas/start.schema.json)."
    try:
        return ProcessInput.model_validate(_decode(raw))
    except Refused as err:
        return f"Invalid start: {str(err).removeprefix('Malformed payload: ')}"
    except ValidationError as err:
        return validation_message(err, "Invalid start")


METRICS = {
    "corpsale_stage_transitions": "Stage entries, by stage.",
    "corpsale_tasks_created": "Tasks opened (the process's and ad-hoc ones).",
    "corpsale_tasks_completed": "Tasks completed.",
    "corpsale_tasks_canceled": "Open tasks canceled by a stage change or a closing.",
    "corpsale_commands_rejected": "Commands refused, by command and by how they came (signal or update).",
}


def count(name: str, value: int = 1, **attributes: str) -> None:
    """Add to one of the product's counters (exported with the SDK's metrics; not during replay)."""
    if value:
        workflow.metric_meter().create_counter(name, METRICS[name]).add(value, attributes)


def search_attribute_updates(
    stage: str, owner: str, amount: float | None
) -> list[SearchAttributeUpdate[Any]]:
    """The updates that bring the run's search attributes to these values (none if they are)."""
    current = workflow.info().typed_search_attributes
    wanted: list[tuple[SearchAttributeKey[Any], Any]] = [
        (STAGE_ATTR, stage),
        (OWNER_ATTR, owner),
        (AMOUNT_ATTR, amount),
    ]
    return [
        key.value_set(value) if value is not None else key.value_unset()
        for key, value in wanted
        if current.get(key) != value
    ]


@workflow.defn(name=c.WORKFLOW_TYPE)
class CorporateSaleWorkflow:
    @workflow.init
    def __init__(self, start: RawValue = NO_START) -> None:
        read = _read_start(start)
        self._start = read if isinstance(read, ProcessInput) else None
        self._bad_start = read if isinstance(read, str) else None
        self._state = (
            start_state(self._start)
            if self._start
            else SaleState(opportunity_id=workflow.info().workflow_id.removeprefix(c.WORKFLOW_ID_PREFIX))
        )
        self._rules = Rules(self._state)
        self._lock = asyncio.Lock()
        self._children: TaskChildren | TaskLinks = TaskChildren()
        self._handover = False  # this run continues as new at quiet points (PATCH_HANDOVER)
        self._permissions = False  # this run checks who may do what (PATCH_PERMISSIONS)
        self._ready = False
        self._updates = 0  # updates this run accepted
        self._admitted: dict[str, str] = {}  # request id -> fingerprint, of updates let in (validators)

    # The process ------------------------------------------------------------------------------

    @workflow.run
    async def run(self, start: RawValue = NO_START) -> StateView:
        self._refuse_bad_start()
        self._handover = workflow.patched(PATCH_HANDOVER)
        if self._handover:
            self._children = TaskLinks()
        self._permissions = workflow.patched(PATCH_PERMISSIONS)
        async with self._lock:
            if self._state.process is None:
                await self._open()
            else:
                await self._resume()
            await self._children.flush()
            self._ready = True
        watcher = (
            asyncio.create_task(StaleDealWatcher(self._state, self._lock).run())
            if workflow.patched("stale-deal")
            else None
        )
        if self._handover:
            await self._hand_over_when_due()
        else:
            await workflow.wait_condition(lambda: self._state.closed or self._state.pending_entry is not None)
        if watcher is not None:
            await watcher
        await workflow.wait_condition(workflow.all_handlers_finished)
        if not self._state.closed:
            workflow.continue_as_new(self._next_input(self._state))
        await self._children.wait_closed()
        return self._state.view()

    def _refuse_bad_start(self) -> None:
        """R22: fail at once, before anything is written, a run whose start cannot be this
        opportunity's process."""
        info, start = workflow.info(), self._start
        problem = self._bad_start
        if start is not None and info.workflow_id != c.workflow_id(start.opportunity_id):
            problem = (
                f"Workflow id {info.workflow_id!r} is not the process of opportunity"
                f" {start.opportunity_id!r}: its process runs as {c.workflow_id(start.opportunity_id)!r}."
            )
        elif start is not None and start.resume is not None and info.continued_run_id is None:
            problem = "Invalid start: resume is the process's own hand-over to its next run; leave it out."
        if problem is not None:
            raise ApplicationError(problem, type="InvalidStart", non_retryable=True)

    async def _hand_over_when_due(self) -> None:
        """R21: once a bound is reached, continue as new at the first quiet point (no command
        being applied, every handler finished), with whatever tasks are open: their children
        outlive this run. Returns when the process closes."""
        state = self._state
        while not state.closed:
            await workflow.wait_condition(lambda: state.closed or (self._handover_due() and self._quiet()))
            if state.closed:
                return
            await self._children.wait_closed()  # nothing left of the task workflows to send
            if self._quiet() and not state.closed:
                workflow.continue_as_new(self._next_input(state.for_next_run()))

    def _quiet(self) -> bool:
        return workflow.all_handlers_finished() and not self._lock.locked()

    def _handover_due(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._run_events()
            or self._updates >= self._run_updates()
        )

    def _flooded(self) -> bool:
        """So far past the bounds that commands must wait for the next run."""
        return self._handover and (
            workflow.info().get_current_history_length() >= 2 * self._run_events()
            or self._updates >= self._run_updates() + FLOOD_UPDATES_MARGIN
        )

    def _run_events(self) -> int:
        return (self._start and self._start.continue_as_new_after_events) or RUN_EVENTS

    def _run_updates(self) -> int:
        return (self._start and self._start.continue_as_new_after_updates) or RUN_UPDATES

    def _next_input(self, state: SaleState) -> ProcessInput:
        start = self._start
        assert start is not None
        return ProcessInput(
            opportunity_id=start.opportunity_id,
            actor=start.actor,
            continue_as_new_after_events=start.continue_as_new_after_events,
            continue_as_new_after_updates=start.continue_as_new_after_updates,
            resume=state,
        )

    async def _open(self) -> None:
        start = self._start
        assert start is not None
        record = await workflow.execute_local_activity_method(
            SaleActivities.open_opportunity,
            OpenOpportunity(opportunity_id=start.opportunity_id, actor=start.actor, new=start.new),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            summary="create or load the opportunity",
        )
        self._state.process = await workflow.execute_local_activity_method(
            SaleActivities.load_process,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            summary="load the process definition and stages",
        )
        self._state.owner = record.owner
        self._state.data = record.data
        self._state.visit = record.last_visit
        process = self._process
        first = record.stage or process.first_stage().name
        if not process.has_stage(first):
            raise ApplicationError(
                f"Opportunity {record.opportunity_id!r} is at stage {first!r}, which the stages"
                " lookup does not have: add the stage to the lookup, or correct the opportunity.",
                type="UnknownStage",
                non_retryable=True,
            )
        if process.stage(first).final and self._handover:
            # R22: a start that reached a closed opportunity (a caller that did not use the
            # product's reuse policy) ends at once, as closed, writing nothing.
            self._state.stage, self._state.closed = first, True
            message = f"Opportunity {record.opportunity_id!r} is closed in {first!r}; it never starts again."
            self._state.reject(workflow.now(), "start", message, None)
            self._publish()
            return
        if process.stage(first).final:
            raise ApplicationError(
                f"Opportunity {record.opportunity_id!r} is closed in {first!r}: a final stage is"
                " never left, so its process cannot start again.",
                type="OpportunityClosed",
                non_retryable=True,
            )
        reason = "new opportunity" if start.new else "process started for this opportunity"
        await self._enter_stage(ChangeStage(stage=first, actor=start.actor, reason=reason))

    async def _resume(self) -> None:
        pending = self._state.pending_entry
        if pending is not None:
            self._state.pending_entry = None
            await self._enter_stage(pending)
        deferred, self._state.deferred = self._state.deferred, []
        for i, cmd in enumerate(deferred):
            if self._state.pending_entry is not None:  # handing over again: keep the rest
                self._state.deferred = [*deferred[i:], *self._state.deferred]
                break
            await self._apply_signal(cmd.name, tuple(cmd.args))

    @property
    def _process(self) -> Process:
        assert self._state.process is not None
        return self._state.process

    # Stage entry and exit ---------------------------------------------------------------------

    async def _enter_stage(self, cmd: ChangeStage) -> None:
        state, process = self._state, self._process
        stage = process.stage(cmd.stage)
        now = workflow.now()
        state.visit += 1
        state.stage = stage.name
        templates = process.tasks_of(stage.name)
        new_tasks = tuple(
            NewTask(
                task_id=f"{state.opportunity_id}:v{state.visit}:{t.key}",
                task_key=t.key,
                title=t.title,
                start_at=now,
                due_at=process.definition.due(now, t.duration),
            )
            for t in templates
        )
        closing = None
        if stage.final:
            follow_up = process.definition.follow_up if stage.successful else ()
            closing = Closing(
                successful=bool(stage.successful),
                actual_income=cmd.actual_income,
                hours_spent=cmd.hours_spent,
                reason=cmd.reason,
                competitor=cmd.competitor,
                follow_up=tuple(
                    NewTask(
                        task_id=c.follow_up_task_id(state.opportunity_id, t.key),
                        task_key=t.key,
                        title=t.title,
                        start_at=now,
                        due_at=process.definition.due(now, t.duration),
                    )
                    for t in follow_up
                ),
            )
        await workflow.execute_local_activity_method(
            SaleActivities.enter_stage,
            EnterStage(
                opportunity_id=state.opportunity_id,
                visit_no=state.visit,
                stage=stage.name,
                owner=state.owner,
                actor=cmd.actor,
                reason=cmd.reason,
                at=now,
                tasks=new_tasks,
                closing=closing,
                keep_open=tuple(t.task_id for t in state.open_tasks() if t.adhoc),
                definition_version=self._process.definition.version,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            summary=f"enter {stage.name} (visit {state.visit}, {len(new_tasks)} tasks)",
        )
        for t, template in zip(new_tasks, templates, strict=True):
            state.tasks[t.task_id] = TaskState(
                task_id=t.task_id,
                key=t.task_key,
                title=t.title,
                stage=stage.name,
                visit=state.visit,
                owner=state.owner,
                start_at=t.start_at,
                due_at=t.due_at,
                outcomes=[o.name for o in template.outcomes],
            )
        for t in new_tasks:
            self._start_task(state.tasks[t.task_id])
        if closing is not None and self._handover:
            # R13, R20: a won deal's follow-up tasks outlive the process, with their reminders.
            for f in closing.follow_up:
                self._start_task(f)
        count("corpsale_stage_transitions", stage=stage.name)
        count("corpsale_tasks_created", len(new_tasks))
        if stage.final:
            state.closed = True
        state.quiet_since = now
        self._publish()

    def _start_task(self, task: TaskState | NewTask) -> None:
        owner = task.owner if isinstance(task, TaskState) else self._state.owner
        self._children.start(
            TaskInput(
                task_id=task.task_id,
                opportunity_id=self._state.opportunity_id,
                title=task.title,
                owner=owner,
                start_at=task.start_at,
                due_at=task.due_at,
                reminders=self._process.definition.reminders,
            ),
            # A task workflow shows its owner in its details (it follows a reassignment); a child of
            # a run from before PATCH_HANDOVER names them in its summary.
            summary=task.title if self._handover else f"{task.title} — {owner}",
        )

    async def _leave_stage(self, *, closing: bool) -> None:
        """Cancel the stage's open tasks (closing: ad-hoc ones too); return once their children
        have recorded it and closed. (The children of completed tasks close by themselves.)"""
        open_tasks = [t for t in self._state.open_tasks() if closing or not t.adhoc]
        for task in open_tasks:
            task.status = "canceled"
        count("corpsale_tasks_canceled", len(open_tasks))
        await self._children.cancel([t.task_id for t in open_tasks])

    async def _move(self, cmd: ChangeStage) -> None:
        target = self._process.stage(cmd.stage)
        await self._leave_stage(closing=target.final)
        adhoc_open = any(t.adhoc for t in self._state.open_tasks())  # they stay with this run
        if not self._handover and not target.final and not adhoc_open and self._continue_as_new_due():
            # Runs from before PATCH_HANDOVER: at a stage boundary, once no child is open, hand
            # over to a fresh run, which enters the stage.
            await self._children.wait_closed()
            # Every task is finished here: the next run needs none of them (the state stays small).
            self._state.tasks = {}
            self._state.pending_entry = cmd
            self._publish()
            return
        await self._enter_stage(cmd)

    def _continue_as_new_due(self) -> bool:
        info = workflow.info()
        limit = self._start.continue_as_new_after_events if self._start else None
        return info.is_continue_as_new_suggested() or (
            limit is not None and info.get_current_history_length() >= limit
        )

    def _publish(self) -> None:
        """Search attributes and the one-line detail ops read in the Web UI."""
        state = self._state
        amount = state.data.get("expected_amount")
        updates = search_attribute_updates(
            state.stage or "", state.owner, float(amount) if amount is not None else None
        )
        if updates:
            workflow.upsert_search_attributes(updates)
        open_due = sorted(t.due_at for t in state.open_tasks())
        done, total = state.progress()
        detail = f"{state.stage}: {done} of {total} tasks done"
        if state.closed:
            detail = f"{state.stage} (closed)"
        elif state.pending_entry is not None:
            detail = f"entering {state.pending_entry.stage} in a new run"
        elif open_due:
            detail += f", next due {open_due[0]:%Y-%m-%d %H:%M} UTC"
        workflow.set_current_details(detail)

    # Applying commands ------------------------------------------------------------------------

    async def _change_stage(self, cmd: ChangeStage) -> None:
        if not self._process.has_stage(cmd.stage) and workflow.patched("stages-refreshed-on-unknown"):
            await self._refresh_stages()
        self._rules.check_change_stage(cmd)
        if self._rules.closes_as_lost(cmd.stage) and workflow.patched("close-reason-lookup"):
            reasons = await workflow.execute_local_activity_method(
                SaleActivities.load_close_reasons,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                summary="load the close reasons",
            )
            if cmd.reason not in reasons:
                raise Refused(
                    f"Closing as {cmd.stage!r} takes a reason from the close-reason lookup, not"
                    f" {cmd.reason!r}: one of {', '.join(reasons)}."
                )
        await self._move(cmd)

    async def _refresh_stages(self) -> None:
        """Take up stages an operator added to the lookup since this run loaded it. The run keeps
        its definition; a lookup it no longer fits is ignored (and logged)."""
        stages = await workflow.execute_local_activity_method(
            SaleActivities.load_stages,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            summary="reload the stages lookup",
        )
        try:
            self._state.process = Process(definition=self._process.definition, stages=tuple(stages))
        except ValidationError as err:
            workflow.logger.warning("the stages lookup no longer fits this run: %s", err)

    async def _complete_task(self, cmd: CompleteTask) -> None:
        task = self._rules.check_complete_task(cmd)
        assert task is not None
        if task.adhoc:
            await self._finish_task(task, c.ADHOC_OUTCOME, cmd)
            return  # an ad-hoc task moves nothing
        template = self._process.task(task.stage, task.key)
        outcome = template.outcome(cmd.outcome)
        assert outcome is not None
        await self._finish_task(task, outcome.name, cmd)
        won = {"actual_income": cmd.actual_income, "hours_spent": cmd.hours_spent}  # checked: closes as won
        if outcome.effect is Effect.MOVE:
            assert outcome.stage is not None
            reason = outcome.close_reason or f"outcome {outcome.name!r} of {task.title!r}"
            await self._move(
                ChangeStage(stage=outcome.stage, actor=cmd.actor, reason=reason, restart=True, **won)
            )
        elif all(t.status == "completed" for t in self._state.visit_tasks()):
            following = self._process.next_stage(task.stage)
            if following is not None:
                reason = f"all tasks of {task.stage} completed"
                await self._move(ChangeStage(stage=following.name, actor=cmd.actor, reason=reason, **won))

    async def _finish_task(self, task: TaskState, outcome: str, cmd: CompleteTask) -> None:
        await workflow.execute_local_activity_method(
            SaleActivities.complete_task,
            CompleteTaskRow(
                task_id=task.task_id,
                outcome=outcome,
                actor=cmd.actor,
                comment=cmd.comment,
                at=workflow.now(),
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            summary=f"complete {task.title}",
        )
        task.status, task.outcome = "completed", outcome
        count("corpsale_tasks_completed")
        self._state.quiet_since = workflow.now()
        self._children.finish(task.task_id, outcome)
        self._publish()

    async def _add_task(self, cmd: AddTask) -> None:
        self._rules.check_add_task(cmd, now=workflow.now())
        state = self._state
        assert state.stage is not None
        state.adhoc_tasks += 1
        now = workflow.now()
        new = NewTask(
            task_id=f"{state.opportunity_id}:adhoc{state.adhoc_tasks}",
            task_key="adhoc",
            title=cmd.title,
            start_at=now,
            due_at=cmd.due_at or now + timedelta(days=1),
        )
        owner = cmd.owner or state.owner
        await workflow.execute_local_activity_method(
            SaleActivities.add_task,
            AddTaskRow(
                opportunity_id=state.opportunity_id,
                visit_no=state.visit,
                stage=state.stage,
                owner=owner,
                task=new,
                at=now,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            summary=f"add task {cmd.title}",
        )
        task = state.tasks[new.task_id] = TaskState(
            task_id=new.task_id,
            key=new.task_key,
            title=new.title,
            stage=state.stage,
            visit=state.visit,
            owner=owner,
            start_at=new.start_at,
            due_at=new.due_at,
            outcomes=[c.ADHOC_OUTCOME],
            adhoc=True,
        )
        self._start_task(task)
        count("corpsale_tasks_created")
        self._publish()

    async def _update_opportunity(self, cmd: UpdateOpportunity) -> None:
        self._rules.check_update(cmd)
        changes = cmd.changes()
        try:
            await workflow.execute_local_activity_method(
                SaleActivities.update_opportunity,
                UpdateOpportunityRow(
                    opportunity_id=self._state.opportunity_id, changes=changes, at=workflow.now()
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                summary="update opportunity data: " + ", ".join(changes),
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "InvalidData":
                raise Refused(f"Invalid data: {cause.message}") from None
            raise
        self._state.data = {**self._state.data, **changes}
        self._publish()

    async def _reassign(self, cmd: Reassign) -> None:
        self._rules.check_reassign(cmd)
        state = self._state
        open_tasks = [t for t in state.open_tasks() if t.owner == state.owner]  # not a colleague's
        state.reassignments += 1
        await workflow.execute_local_activity_method(
            SaleActivities.reassign,
            ReassignRow(
                opportunity_id=state.opportunity_id,
                number=state.reassignments,
                from_owner=state.owner,
                to_owner=cmd.owner,
                actor=cmd.actor,
                reason=cmd.reason,
                task_ids=tuple(t.task_id for t in open_tasks),
                at=workflow.now(),
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            summary=f"reassign to {cmd.owner} ({len(open_tasks)} open tasks)",
        )
        for task in open_tasks:
            task.owner = cmd.owner
        state.owner = cmd.owner
        if isinstance(self._children, TaskLinks) and workflow.patched(PATCH_TASK_OWNER):
            self._children.reassign([t.task_id for t in open_tasks], cmd.owner)
        self._publish()

    # Commands: one path for signals and updates ----------------------------------------------

    def _recall(self, request_id: str | None, print_: str) -> Answer | None:
        """R23: the answer already given to this request, if any; a request id that came with
        another command is refused."""
        known = self._state.answer(request_id)
        if known is not None and known.fingerprint and known.fingerprint != print_:
            raise Refused(
                f"Request id {request_id!r} was used for another command; give each command a"
                " request id of its own (and a retry the same one)."
            )
        return known

    async def _apply(self, name: str, payload: Any, request_id: str | None) -> None:
        """Apply a command once per request id: a request answered before gets that answer again
        (its refusal raised again), and nothing is applied twice."""
        print_ = fingerprint(name, payload)
        known = self._recall(request_id, print_)
        if known is not None:
            if known.refusal is not None:
                raise Refused(known.refusal)
            return
        try:
            cmd = parse_command(name, payload)
            if self._permissions:
                await self._authorize(name, cmd, payload)
            match cmd:
                case ChangeStage():
                    await self._change_stage(cmd)
                case CompleteTask():
                    await self._complete_task(cmd)
                case UpdateOpportunity():
                    await self._update_opportunity(cmd)
                case Reassign():
                    await self._reassign(cmd)
                case AddTask():
                    await self._add_task(cmd)
            await self._children.flush()
        except HandingOver:
            raise  # not an answer: the same request is applied by the next run
        except Refused as err:
            self._state.remember(request_id, print_, str(err))
            raise
        self._state.remember(request_id, print_)

    async def _authorize(self, name: str, cmd: BaseModel, payload: Any) -> None:
        """R24: the rules first (nothing to ask of a command they refuse), then whether the actor
        may, and is vouched for where signatures are required, as PostgreSQL says now."""
        if isinstance(cmd, ChangeStage) and not self._process.has_stage(cmd.stage):
            if workflow.patched("stages-refreshed-on-unknown"):
                await self._refresh_stages()  # a final stage just added closes as a final stage
        self._rules.check(cmd, now=workflow.now(), settled=True)
        refusal = await workflow.execute_local_activity_method(
            SaleActivities.authorize,
            Authorize(
                workflow_id=workflow.info().workflow_id,
                command=name,
                payload=payload,
                asked=self._rules.asked(cmd),
                at=workflow.now(),
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            summary=f"may {getattr(cmd, 'actor', None) or 'someone'} {name}?",
        )
        if refusal is not None:
            raise NotAllowed(refusal)

    async def _apply_signal(self, name: str, args: Sequence[Any]) -> None:
        """Signals never raise: a refused one is recorded in `rejected` with the reason, once
        however often its request is delivered."""
        payload = args[0] if len(args) == 1 else list(args)
        request_id = request_id_of(payload)
        try:
            known = self._recall(request_id, fingerprint(name, payload))
            if known is not None:
                if known.refusal is not None and not known.recorded:
                    raise Refused(known.refusal)  # refused as an update: recorded now, once
                return
            await self._apply(name, one_payload(args), request_id)
        except Refused as err:
            self._reject(name, str(err), payload, via="signal")
            answer = self._state.answer(request_id)
            if answer is not None and answer.refusal is not None and str(err).startswith(answer.refusal[:-1]):
                answer.recorded = True

    def _reject(self, name: str, reason: str, payload: Any, *, via: str) -> None:
        """Record a refused command in `rejected`."""
        self._state.reject(workflow.now(), name, reason, payload)
        self._refused(name, reason, via=via)

    @staticmethod
    def _refused(name: str, reason: str, *, via: str) -> None:
        """Count a refusal and say it in one line (the log names the opportunity): a refused
        command is an answer, not an error of the worker."""
        count("corpsale_commands_rejected", command=name, via=via)
        workflow.logger.info("%s refused (%s): %s", name, via, reason)

    def _can_defer(self, payload: Any) -> bool:
        """Under a flood a signal is carried to the next run, as long as that input stays small."""
        carried = sum(len(str(d.args)) for d in self._state.deferred)
        return json_safe(payload) and carried + len(str(payload)) <= MAX_DEFERRED_CHARS

    async def _signal(self, name: str, raw: Sequence[RawValue]) -> None:
        await workflow.wait_condition(lambda: self._ready)
        try:
            args = [_decode(r) for r in raw]
        except Refused as err:
            self._reject(name, str(err), f"<{len(raw)} payloads, not JSON>", via="signal")
            return
        if self._flooded() and self._can_defer(args):
            self._state.deferred.append(DeferredCommand(name=name, args=args))
            return
        async with self._lock:
            if self._state.pending_entry is not None:  # runs from before PATCH_HANDOVER
                if json_safe(args):  # what the next run gets must serialise
                    self._state.deferred.append(DeferredCommand(name=name, args=args))
                    return
            await self._apply_signal(name, args)

    async def _update(self, name: str, raw: Sequence[RawValue]) -> StateView:
        await workflow.wait_condition(lambda: self._ready)
        self._updates += 1
        info = workflow.current_update_info()
        async with self._lock:
            payload: Any = None
            try:
                payload = one_payload([_decode(r) for r in raw])
                await self._apply(name, payload, request_id_of(payload) or (info.id if info else None))
            except HandingOver as err:
                raise ApplicationError(str(err), type="HandingOver") from None
            except Refused as err:
                if isinstance(err, NotAllowed):  # recorded, as for a signal: who tried what
                    self._reject(name, str(err), payload, via="update")
                else:
                    self._refused(name, str(err), via="update")
                raise ApplicationError(str(err), type="CommandRefused", non_retryable=True) from None
            finally:
                if info is not None:
                    self._admitted.pop(info.id, None)
        return self._state.view()

    def _validate(self, update: str, raw: Sequence[RawValue]) -> None:
        """Update validators: refuse before anything enters history, where state allows. They
        change nothing but `_admitted`, which only validators read (they do not run on replay)."""
        name = c.COMMAND_OF_UPDATE.get(update, update)
        try:
            if update not in c.COMMAND_OF_UPDATE:
                raise Refused(f"Unknown update {update!r}; updates: {', '.join(c.COMMAND_OF_UPDATE)}.")
            payload = one_payload([_decode(r) for r in raw])
            if not self._ready:
                return
            if self._flooded():
                raise HandingOver(
                    "The process is handing over to a new run; send the command again with the same"
                    " request id (the product's clients do this on their own)."
                )
            info = workflow.current_update_info()
            request_id = request_id_of(payload) or (info.id if info else None)
            print_ = fingerprint(name, payload)
            admitted = self._admitted.get(request_id) if request_id else None
            if admitted is not None and admitted != print_:
                raise Refused(f"Request id {request_id!r} was used for another command (being applied now).")
            if admitted is not None or self._recall(request_id, print_) is not None:
                return  # a delivery of a request in hand: the handler gives it that request's answer
            cmd = parse(COMMAND_MODELS[name], payload)
            self._rules.check(cmd, now=workflow.now())
            if request_id is not None:
                self._admitted[request_id] = print_
        except HandingOver as err:
            raise ApplicationError(str(err), type="HandingOver") from None
        except Refused as err:
            self._refused(name, str(err), via="update")
            raise ApplicationError(str(err), type="CommandRefused", non_retryable=True) from None

    # The public contract ----------------------------------------------------------------------
    # One dynamic handler for every signal and one for every update: they take the payloads raw,
    # so that whatever was sent (not JSON, too deep, too many arguments, an unknown name) is
    # refused with a reason instead of failing a workflow task or being dropped.

    @workflow.signal(dynamic=True)
    async def command_signal(self, name: str, args: Sequence[RawValue]) -> None:
        await self._signal(name, args)

    @workflow.update(dynamic=True)
    async def command_update(self, name: str, args: Sequence[RawValue]) -> StateView:
        return await self._update(c.COMMAND_OF_UPDATE.get(name, name), args)

    @command_update.validator
    def _validate_command(self, name: str, args: Sequence[RawValue]) -> None:
        self._validate(name, args)

    @workflow.query(name=c.QUERY_STATE)
    def state(self) -> StateView:
        return self._state.view()


def start_state(start: ProcessInput) -> SaleState:
    if start.resume is not None:
        return start.resume
    return SaleState(
        opportunity_id=start.opportunity_id,
        owner=start.new.owner if start.new else "",
    )
