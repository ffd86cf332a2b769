"""The corporate sale process of one opportunity: an entity workflow that interprets the process
definition. It enters a stage, opens its tasks as child workflows, and moves on when the tasks
are done or a command moves it, until a final stage ends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RawValue

with workflow.unsafe.imports_passed_through():
    from workflows import claims, migration, patches, plans, steps
    from workflows import contract as c
    from workflows.commands import CommandDesk, count
    from workflows.definition import Process, ProcessDefinition
    from workflows.handover import Handover
    from workflows.journal import Journal, ProcessLock
    from workflows.operations import MigrationPlan
    from workflows.payloads import NO_START, read_start, refuse_bad_start, refuse_opening
    from workflows.refusals import NotAllowed, Refused
    from workflows.rules import Entry, Rules, Waiting
    from workflows.search_attributes import PROCESS_ATTR
    from workflows.stale import Notices, start_watchers
    from workflows.state import ProcessInput, SaleState, TaskState
    from workflows.steps import JournalView, ProcessResult
    from workflows.store import Store
    from workflows.web_ui import publish


@workflow.defn(name=c.WORKFLOW_TYPE)
class CorporateSaleWorkflow:
    @workflow.init
    def __init__(self, start: RawValue = NO_START) -> None:
        read = read_start(start)
        self._start = read if isinstance(read, ProcessInput) else None
        self._bad_start = read if isinstance(read, str) else None
        self._state = (
            self._start.first_state()
            if self._start
            else SaleState(opportunity_id=workflow.info().workflow_id.removeprefix(c.WORKFLOW_ID_PREFIX))
        )
        self._rules = Rules(self._state)
        self._journal = Journal(self._state)
        self._lock = ProcessLock(self._journal)
        self._store = Store(self._journal)
        self._handover = Handover(self._start, self._lock)
        self._patches = patches.Patches()
        self._ready = False
        self._desk = CommandDesk(
            self._state,
            self._lock,
            self._rules,
            apply=self._command,
            ready=lambda: self._ready,
            handover=self._handover,
            record=self._store.refused,
            journal=self._journal,
        )

    # The process ------------------------------------------------------------------------------

    @workflow.run
    async def run(self, start: RawValue = NO_START) -> ProcessResult:
        refuse_bad_start(self._bad_start, self._start)
        self._patches.decide()  # before the first local activity
        self._observing = asyncio.create_task(workflow.wait_condition(self._journal.observe))
        async with self._lock:
            if self._state.process is None:
                await self._open()
            else:
                await self._resume()
            self._ready = True
        notices = Notices(self._store.notify_stale, self._store.notify_close_date)
        watchers = start_watchers(self._state, self._lock, notices)
        watchers.append(asyncio.create_task(self._desk.retry_while_away()))
        await self._handover.when_due(self._state)
        await asyncio.gather(*watchers)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return ProcessResult(**dict(self._state.view()), journal=self._journal.view())

    async def _open(self) -> None:
        start = self._start
        assert start is not None
        record = await self._store.open(
            steps.OpenOpportunity(
                opportunity_id=start.opportunity_id, actor=start.actor, new=start.new, process=start.process
            )
        )
        self._state.process = await self._store.load_process(record.process)
        self._state.owner, self._state.data = record.owner, record.data
        self._state.visit, self._state.visited = record.last_visit, record.visited
        first = self._rules.first_stage(record.stage)
        refuse_opening(record.opportunity_id, first, self._rules.process)
        if self._rules.process.stage(first).final:
            # R22: a start that reached a closed opportunity (a caller that did not use the
            # product's reuse policy) ends at once, as closed, writing nothing.
            self._state.stage, self._state.closed = first, True
            message = f"Opportunity {record.opportunity_id!r} is closed in {first!r}; it never starts again."
            self._state.reject(workflow.now(), "start", message, None)
            publish(self._state)
            return
        reason = "new opportunity" if start.new else "process started for this opportunity"
        await self._enter_stage(c.ChangeStage(stage=first, actor=start.actor, reason=reason))

    async def _resume(self) -> None:
        """A continued run: the stage its run before handed over to enter (a run from before the
        retired patch `runs-hand-over-with-tasks-open`: docs/versioning.md), then the signals that
        came while the run before handed over, in order."""
        pending = self._state.pending_entry
        if pending is not None:
            self._state.pending_entry = None
            await self._enter_stage(pending)
        deferred, self._state.deferred = self._state.deferred, []
        for cmd in deferred:
            await self._desk.apply_signal(cmd.name, tuple(cmd.args))

    # Stage entry and exit ---------------------------------------------------------------------

    async def _enter_stage(self, cmd: c.ChangeStage) -> None:
        entry = await self._entry(cmd)
        await self._store.enter_stage(entry.step)
        self._entered(entry)

    async def _entry(self, cmd: c.ChangeStage) -> Entry:
        """The entry into `cmd.stage`, the run's state moved there; its write comes next."""
        state = self._state
        entry = self._rules.entry(
            cmd, workflow.now(), await self._store.approver(self._rules.process, cmd.stage, state.owner)
        )
        step = entry.step
        state.visit, state.stage, state.waiting = step.visit_no, step.stage, None
        state.visited = [*state.visited, step.stage] if step.stage not in state.visited else state.visited
        return entry

    def _entered(self, entry: Entry) -> None:
        """The entry written: the run holds its tasks. Their task workflows (and a won deal's
        follow-up tasks', R13) are started by the data layer once the write is confirmed
        (activities/data/journal.py)."""
        state, step = self._state, entry.step
        for task in entry.tasks:
            state.tasks[task.task_id] = task
        count("corpsale_stage_transitions", stage=step.stage)
        count("corpsale_tasks_created", len(step.tasks))
        state.closed = step.closing is not None
        state.quiet_since = step.at
        publish(self._state)

    async def _leave_stage(self, *, closing: bool) -> None:
        """Cancel the stage's open tasks (closing: ad-hoc ones too); the write that enters the next
        stage cancels their rows and, once confirmed, their task workflows."""
        open_tasks = [t for t in self._state.open_tasks() if closing or not t.adhoc]
        for task in open_tasks:
            task.status = "canceled"
        count("corpsale_tasks_canceled", len(open_tasks))

    async def _move(self, cmd: c.ChangeStage) -> None:
        target = self._rules.process.stage(cmd.stage)
        await self._leave_stage(closing=target.final)
        await self._enter_stage(cmd)

    # Applying commands ------------------------------------------------------------------------

    async def _change_stage(self, cmd: c.ChangeStage) -> None:
        if not self._rules.process.has_stage(cmd.stage):
            self._state.process = await self._store.refreshed(self._rules.process)
        self._rules.check_change_stage(cmd)
        if self._rules.closes_as_lost(cmd.stage):
            reasons = await self._store.close_reasons()
            if cmd.reason not in reasons:
                raise Refused(
                    f"Closing as {cmd.stage!r} takes a reason from the close-reason lookup, not"
                    f" {cmd.reason!r}: one of {', '.join(reasons)}."
                )
        await self._move(cmd)

    async def _complete_task(self, cmd: c.CompleteTask, check: steps.Authorize | None) -> None:
        task = self._rules.check_complete_task(cmd)
        assert task is not None
        row = steps.CompleteTaskRow(
            task_id=task.task_id,
            opportunity_id=self._state.opportunity_id,
            outcome=self._rules.outcome_of(task, cmd),
            actor=cmd.actor,
            comment=cmd.comment,
            at=workflow.now(),
            check=check,  # the command's permission, checked first in this write's transaction
        )
        if not self._patches.has(patches.ENTRY_IN_COMPLETION):
            await self._store.complete_task(row, task.title)
            self._completed(task, row.outcome)
            then = self._rules.after_completion(task, cmd)
            if isinstance(then, c.ChangeStage):
                await self._move(then)
        else:
            # The move the completion makes goes in its write: one local activity, one journal
            # entry. What this changes of the run's state before the write, a refusal rolls back.
            task.status = "completed"
            then = self._rules.after_completion(task, cmd)
            entry = None
            if isinstance(then, c.ChangeStage):
                await self._leave_stage(closing=self._rules.process.stage(then.stage).final)
                entry = await self._entry(then)
                row = row.model_copy(update={"enter": entry.step})
            await self._store.complete_task(row, task.title)
            self._completed(task, row.outcome)
            if entry is not None:
                self._entered(entry)
        if isinstance(then, Waiting):  # every task done, the next stage's gate not met: wait
            self._state.waiting = then.move
            await self._store.notify_gate(
                steps.GateNotice(opportunity_id=self._state.opportunity_id, visit_no=self._state.visit,
                           stage=then.move.stage, missing=then.missing, at=workflow.now())
            )  # fmt: skip
            publish(self._state)

    def _completed(self, task: TaskState, outcome: str) -> None:
        task.status, task.outcome = "completed", outcome
        count("corpsale_tasks_completed")
        self._state.quiet_since = workflow.now()
        publish(self._state)

    async def _add_task(self, cmd: c.AddTask) -> None:
        now = workflow.now()
        self._rules.check_add_task(cmd, now=now)
        state, task = self._state, plans.adhoc_task(self._state, cmd, now)
        state.adhoc_tasks += 1
        new = steps.NewTask(
            task_id=task.task_id, task_key=task.key, title=task.title, start_at=now, due_at=task.due_at
        )
        await self._store.add_task(
            steps.AddTaskRow(
                opportunity_id=state.opportunity_id,
                visit_no=state.visit,
                stage=task.stage,
                owner=task.owner,
                task=new,
                at=now,
                reminders=self._rules.process.definition.reminders,
            )
        )
        state.tasks[task.task_id] = task
        count("corpsale_tasks_created")
        publish(state)

    async def _update_opportunity(self, cmd: c.UpdateOpportunity) -> None:
        self._rules.check_update(cmd)
        state, changes = self._state, cmd.changes()
        row = steps.UpdateOpportunityRow(
            opportunity_id=state.opportunity_id, changes=changes, at=workflow.now()
        )
        await self._store.update_opportunity(row)
        state.data = {**state.data, **changes}
        publish(state)
        released = self._rules.released()  # a move that waited at a gate goes on once it is met
        if released is not None:
            await self._move(released)

    async def _reassign(self, cmd: c.Reassign) -> None:
        self._rules.check_reassign(cmd)
        state, row = self._state, plans.reassignment(self._state, cmd, workflow.now())
        state.reassignments += 1
        await self._store.reassign(row)
        for task_id in row.task_ids:
            state.tasks[task_id].owner = cmd.owner
        state.owner = cmd.owner
        publish(state)

    async def _snooze(self, cmd: c.SnoozeTask, check: steps.Authorize | None) -> None:
        """A task put off; its workflow's timers move once the write is confirmed."""
        task = self._rules.check_snooze(cmd, now=workflow.now())
        assert task is not None
        row = plans.snoozing(self._state, cmd, workflow.now()).model_copy(update={"check": check})
        await self._store.write(row, f"put off {task.title}")
        task.due_at, task.snoozes = row.due_at, row.number
        publish(self._state)

    async def _command(self, name: str, cmd: BaseModel, payload: Any) -> None:
        """What a new command does (the desk has decoded it and checked its request id)."""
        check = await self._authorize(name, cmd, payload)
        match cmd:
            case c.ChangeStage():
                await self._change_stage(cmd)
            case c.CompleteTask():
                await self._complete_task(cmd, check)
            case c.UpdateOpportunity():
                await self._update_opportunity(cmd)
            case c.Reassign():
                await self._reassign(cmd)
            case c.AddTask():
                await self._add_task(cmd)
            case c.SnoozeTask():
                await self._snooze(cmd, check)
            case c.MigrateDefinition():
                await self._migrate(cmd)
            case c.ClaimTask() | c.ReleaseTask():
                await self._claim(cmd)

    async def _claim(self, cmd: c.ClaimTask | c.ReleaseTask) -> None:
        """A team's task taken by a member, or given back to the queue (workflows/claims.py)."""
        row = claims.claiming(self._state, cmd, workflow.now())
        verb = "release" if isinstance(cmd, c.ReleaseTask) else "claim"
        await self._store.write(row, f"{verb} {row.title}")
        task = self._state.tasks[cmd.task_id]
        task.owner, task.claims = row.to_owner, row.number
        publish(self._state)

    async def _migrate(self, cmd: c.MigrateDefinition) -> None:
        """Onto another definition version, in the stage (workflows/migration.py): all or nothing."""
        assert self._state.process is not None
        own = self._state.process.definition.process
        state, now = self._state, workflow.now()
        target = await self._store.definition(cmd.process or own, cmd.version)
        plan = migration.plan(state, target, now)
        if plan.refused is not None:
            raise Refused(plan.refused)
        process, stage = Process(definition=target, stages=self._rules.process.stages), plan.stage or ""
        asks = any(t.approval for t in plan.opened)
        approver = await self._store.approver(process, stage, state.owner) if asks else None
        opened = migration.new_tasks(plan, now, approver)
        await self._store.migrate(migration.row(state, cmd.actor, plan, opened, now, target.reminders))
        migration.apply(state, target, plan, opened)
        if target.process != own and workflow.info().typed_search_attributes.get(PROCESS_ATTR) is not None:
            workflow.upsert_search_attributes(
                [PROCESS_ATTR.value_set(target.process)]
            )  # a run started with it
        publish(state)

    async def _authorize(self, name: str, cmd: BaseModel, payload: Any) -> steps.Authorize | None:
        """R24: the rules first (nothing to ask of a command they refuse), then whether the actor
        may, and is vouched for where signatures are required, as PostgreSQL says now. A task
        completion's or snooze's check is returned for its write to make first (docs/journal.md:
        one local activity, not two; a refusal writes nothing); any other command's is made here."""
        # A final stage just added closes as a final stage.
        if isinstance(cmd, c.ChangeStage) and not self._rules.process.has_stage(cmd.stage):
            self._state.process = await self._store.refreshed(self._rules.process)
        self._rules.check(cmd, now=workflow.now(), settled=True)
        check = steps.Authorize(
            workflow_id=workflow.info().workflow_id,
            command=name,
            payload=payload,
            asked=self._rules.asked(cmd),
            at=workflow.now(),
        )
        if isinstance(cmd, c.CompleteTask | c.SnoozeTask):
            return check
        refusal = await self._store.authorize(check, getattr(cmd, "actor", None))
        if refusal is not None:
            raise NotAllowed(refusal)
        return None

    # The public contract ----------------------------------------------------------------------
    # One dynamic handler for every signal and one for every update: they take the payloads raw,
    # so that whatever was sent (not JSON, too deep, too many arguments, an unknown name) is
    # refused with a reason instead of failing a workflow task or being dropped.

    @workflow.signal(dynamic=True)
    async def command_signal(self, name: str, args: Sequence[RawValue]) -> None:
        await self._desk.signal(name, args)

    @workflow.update(dynamic=True)
    async def command_update(self, name: str, args: Sequence[RawValue]) -> c.StateView:
        return await self._desk.update(c.COMMAND_OF_UPDATE.get(name, name), args)

    @command_update.validator
    def _validate_command(self, name: str, args: Sequence[RawValue]) -> None:
        self._desk.validate(name, args)

    @workflow.query(name=c.QUERY_STATE)
    def state(self) -> c.StateView:
        return self._state.view()

    @workflow.query(name=c.QUERY_PATCHES)
    def patches(self) -> dict[str, bool]:
        return self._patches.decided

    @workflow.query(name=c.QUERY_JOURNAL)
    def journal(self) -> JournalView:
        return self._journal.view()

    @workflow.query(name=c.QUERY_MIGRATION_PLAN)
    def migration_plan(self, target: ProcessDefinition) -> MigrationPlan:
        """What `migrate_definition` to `target` would do now (the dry run); it changes nothing."""
        return migration.plan(self._state, target, workflow.now())
