"""The process's rules, straight against the plain core (workflows/rules.py, workflows/state.py,
workflows/permissions.py): no server, milliseconds each. Every rule keeps its end-to-end test
elsewhere; here are the many small cases, each refusal among them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from activities.data.task_ops import starts
from workflows import plans
from workflows.contract import AddTask, ChangeStage, CompleteTask, Reassign, SnoozeTask, UpdateOpportunity
from workflows.definition import Process, Stage, did_you_mean, load_default_definition
from workflows.permissions import Action, Directory, may, refusal
from workflows.refusals import Refused
from workflows.rules import MAX_OPEN_TASKS, Rules
from workflows.state import SaleState, TaskInput, TaskState
from workflows.steps import NewTask

NOW = datetime(2030, 5, 4, 10, tzinfo=UTC)
STAGES = (
    Stage(name="Qualification", order=1, final=False, probability=10),
    Stage(name="Presentation", order=2, final=False, probability=30),
    Stage(name="Proposal", order=3, final=False, probability=60),
    Stage(name="Contracting", order=4, final=False, probability=80),
    Stage(name="Closed won", order=5, final=True, successful=True, probability=100),
    Stage(name="Closed lost", order=6, final=True, successful=False, probability=0),
)
PROCESS = Process(definition=load_default_definition(), stages=STAGES)


def _task(key: str, stage: str, visit: int, **extra: Any) -> TaskState:
    template = PROCESS.task(stage, key) if not extra.get("adhoc") else None
    return TaskState(
        task_id=f"o1:v{visit}:{key}",
        key=key,
        title=template.title if template else key,
        stage=stage,
        visit=visit,
        owner=extra.pop("owner", "alice"),
        start_at=NOW,
        due_at=NOW + timedelta(days=1),
        outcomes=[o.name for o in template.outcomes] if template else ["done"],
        **extra,
    )


def _rules(stage: str = "Qualification", *tasks: TaskState, **state: Any) -> Rules:
    visit = max((t.visit for t in tasks), default=1)
    return Rules(
        SaleState(
            opportunity_id="o1",
            owner="alice",
            stage=stage,
            visit=visit,
            tasks={t.task_id: t for t in tasks},
            **{"process": PROCESS, **state},
        )
    )


def _contracting(signed_open: bool = True) -> Rules:
    return _rules(
        "Contracting",
        _task("send-contract", "Contracting", 5, status="completed", outcome="done"),
        _task("contract-status", "Contracting", 5, status="completed", outcome="done"),
        _task("sign-contract", "Contracting", 5, status="open" if signed_open else "completed"),
    )


# Moves (R8, R9) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "why"),
    [
        (ChangeStage(stage="Negotiation", actor="a"), "Unknown stage 'Negotiation'. Stages: Qualification"),
        (ChangeStage(stage="proposal", actor="a"), "Did you mean 'Proposal'?"),
        (ChangeStage(stage="Qualification", actor="a"), "in 'Qualification' already"),
        (ChangeStage(stage="Proposal", actor="a", actual_income=Decimal(5)), "only when closing as won"),
        (ChangeStage(stage="Closed won", actor="a", competitor="Globex"), "only when closing as lost"),
        (ChangeStage(stage="Closed lost", actor="a"), "takes a reason from the close-reason lookup"),
    ],
)
def test_a_move_the_rules_refuse_says_why(cmd: ChangeStage, why: str) -> None:
    with pytest.raises(Refused, match=why.replace("(", r"\(").replace("?", r"\?")):
        _rules().check(cmd, now=NOW, settled=True)


def test_any_stage_forward_or_back_and_a_restart_are_moves_the_rules_take() -> None:
    rules = _rules("Proposal")
    for stage in ["Qualification", "Contracting", "Presentation", "Closed won"]:
        rules.check(ChangeStage(stage=stage, actor="a"), now=NOW, settled=True)
    rules.check(ChangeStage(stage="Proposal", actor="a", restart=True), now=NOW, settled=True)
    rules.check(ChangeStage(stage="Closed lost", actor="a", reason="No budget"), now=NOW, settled=True)


def test_a_closed_opportunity_takes_no_command() -> None:
    closed = _rules("Closed won", closed=True)
    for cmd in [
        ChangeStage(stage="Proposal", actor="a"),
        UpdateOpportunity(budget=Decimal(1)),
        AddTask(title="t", actor="a"),
        Reassign(owner="b", actor="a"),
    ]:
        with pytest.raises(Refused, match="is closed in 'Closed won'; a final stage is never left"):
            closed.check(cmd, now=NOW, settled=True)


def test_validators_leave_to_the_handler_what_a_command_queued_ahead_may_change() -> None:
    rules = _rules()
    rules.check(ChangeStage(stage="Qualification", actor="a"), now=NOW)  # a move ahead may leave it
    rules.check(ChangeStage(stage="Closed rejected", actor="a"), now=NOW)  # the lookup may grow
    rules.check(CompleteTask(task_id="o1:v2:presentation", actor="a"), now=NOW)  # a move may open it
    rules.check(Reassign(owner="alice", actor="a"), now=NOW)  # a reassignment ahead may change it


# Tasks (R6, R7, R10, R18) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "cmd", "why"),
    [
        (None, CompleteTask(task_id="o1:v1:nope", actor="a"), "Unknown task 'o1:v1:nope'"),
        (
            _task("contact-assess", "Qualification", 1, status="canceled"),
            CompleteTask(task_id="o1:v1:contact-assess", actor="a"),
            "was canceled when the opportunity left 'Qualification'",
        ),
        (
            _task("contact-assess", "Qualification", 1, status="completed", outcome="done"),
            CompleteTask(task_id="o1:v1:contact-assess", actor="a"),
            "is completed already (done)",
        ),
        (
            _task("contact-assess", "Qualification", 1),
            CompleteTask(task_id="o1:v1:contact-assess", actor="a", outcome="maybe"),
            "has no outcome 'maybe'; choose one of: done.",
        ),
        (
            _task("contact-assess", "Qualification", 1),
            CompleteTask(task_id="o1:v1:contact-assess", actor="a", hours_spent=Decimal(3)),
            "go with the completion that closes the opportunity as won",
        ),
    ],
)
def test_a_completion_the_rules_refuse_says_why(task: TaskState | None, cmd: CompleteTask, why: str) -> None:
    rules = _rules("Qualification", *([task] if task else []))
    with pytest.raises(Refused, match=why.replace("(", r"\(").replace(")", r"\)")):
        rules.check(cmd, now=NOW, settled=True)


def test_income_and_hours_go_with_the_completion_that_closes_as_won() -> None:
    rules = _contracting()
    sign = rules.state.tasks["o1:v5:sign-contract"]
    assert rules.closes_as_won(sign, "signed") and rules.closes_as_won(sign, None)
    assert not rules.closes_as_won(sign, "declined")  # closes, but as lost
    rules.check(
        CompleteTask(task_id=sign.task_id, actor="a", actual_income=Decimal(48000), hours_spent=Decimal(35)),
        now=NOW,
        settled=True,
    )
    not_last = _rules(
        "Contracting", _task("send-contract", "Contracting", 5), _task("sign-contract", "Contracting", 5)
    )
    assert not not_last.closes_as_won(not_last.state.tasks["o1:v5:sign-contract"], "signed")


def test_an_adhoc_task_takes_its_one_outcome_and_closes_nothing() -> None:
    adhoc = _task("adhoc1", "Qualification", 1, adhoc=True)
    rules = _rules("Qualification", adhoc)
    assert not rules.closes_as_won(adhoc, None)
    with pytest.raises(Refused, match="has no outcome 'approved'"):
        rules.check(CompleteTask(task_id=adhoc.task_id, actor="a", outcome="approved"), now=NOW, settled=True)


def test_tasks_of_ones_own_are_due_in_the_future_and_a_deal_holds_so_many() -> None:
    with pytest.raises(Refused, match="is not in the future"):
        _rules().check(AddTask(title="t", actor="a", due_at=NOW - timedelta(minutes=1)), now=NOW)
    full = _rules(
        "Qualification", *(_task(f"adhoc{i}", "Qualification", 1, adhoc=True) for i in range(MAX_OPEN_TASKS))
    )
    with pytest.raises(Refused, match=f"has {MAX_OPEN_TASKS} open tasks"):
        full.check(AddTask(title="t", actor="a"), now=NOW)
    _rules().check(AddTask(title="t", actor="a", due_at=NOW + timedelta(days=1)), now=NOW)


def test_a_task_is_put_off_while_open_to_a_time_ahead_and_its_snoozes_are_numbered() -> None:
    task = _task("contact-assess", "Qualification", 1, owner="carol")
    rules = _rules(
        "Qualification", task, _task("prepare-presentation", "Qualification", 1, status="completed")
    )
    later = task.due_at + timedelta(days=2)
    refusals = {
        "is not in the future": SnoozeTask(task_id=task.task_id, due_at=NOW, actor="a"),
        "is due at .* already": SnoozeTask(task_id=task.task_id, due_at=task.due_at, actor="a"),
        "Unknown task": SnoozeTask(task_id="o1:v1:nosuch", due_at=later, actor="a"),
        "is completed: only an open task": SnoozeTask(
            task_id="o1:v1:prepare-presentation", due_at=later, actor="a"
        ),
    }
    for why, cmd in refusals.items():
        with pytest.raises(Refused, match=why):
            rules.check(cmd, now=NOW, settled=True)
    snooze = SnoozeTask(task_id=task.task_id, due_at=later, actor="maria", reason="away")
    rules.check(snooze, now=NOW, settled=True)
    asked = rules.asked(snooze)
    assert (asked.action, asked.task_owner) == (Action.SNOOZE_TASK, "carol")
    task.snoozes = 1
    row = plans.snoozing(rules.state, snooze, NOW)
    assert (row.number, row.owner, row.due_at, row.was_due_at, row.STEP) == (
        2, "carol", later, task.due_at, "snooze_task"
    )  # fmt: skip
    with pytest.raises(Refused, match="is closed"):
        _rules("Closed won", closed=True).check(snooze, now=NOW, settled=True)
    # Who may (R24): the task's owner, the deal's owner, the manager of either, an admin.
    for actor, directory, allowed in [
        ("carol", Directory(), True),
        ("alice", Directory(), True),
        ("mary", Directory(manages=frozenset({"carol"})), True),
        ("root", Directory(admin=True), True),
        ("bob", Directory(manages=frozenset({"dave"})), False),
    ]:
        assert may(asked.model_copy(update={"actor": actor}), directory) is allowed, actor
    assert refusal(asked.model_copy(update={"actor": "bob"})).startswith("bob may not put off carol's task")


def test_an_update_names_a_field_and_a_reassignment_another_owner() -> None:
    with pytest.raises(Refused, match="No field to update"):
        _rules().check(UpdateOpportunity(actor="a"), now=NOW, settled=True)
    with pytest.raises(Refused, match="'alice' is the owner already"):
        _rules().check(Reassign(owner="alice", actor="a"), now=NOW, settled=True)


# Who asks what (R24), payloads and request ids (R11, R23) ---------------------------------------


def test_each_command_asks_the_directory_what_it_needs() -> None:
    rules = _rules("Qualification", _task("contact-assess", "Qualification", 1, owner="carol"))
    asked = rules.asked(CompleteTask(task_id="o1:v1:contact-assess", actor="bob"))
    assert (asked.action, asked.actor, asked.owner, asked.task_owner) == (
        Action.COMPLETE_TASK,
        "bob",
        "alice",
        "carol",
    )
    assert rules.asked(ChangeStage(stage="Closed lost", actor="b", reason="x")).action is Action.CLOSE
    assert rules.asked(ChangeStage(stage="Proposal", actor="b")).action is Action.MOVE
    assert rules.asked(Reassign(owner="b", actor="b")).action is Action.REASSIGN
    assert rules.asked(UpdateOpportunity(budget=Decimal(1))).actor is None


def test_a_guess_for_a_stage_name_in_another_case_or_with_a_typo() -> None:
    names = [s.name for s in STAGES]
    assert did_you_mean("closed won", names) == "Did you mean 'Closed won'? "
    assert did_you_mean("Contractin", names) == "Did you mean 'Contracting'? "
    assert did_you_mean("Negotiation", names) == ""


# What a command writes (R5, R7, R10, R13, R18, R19, R20) ----------------------------------------


def test_entering_a_stage_opens_its_tasks_for_the_owner_due_by_the_definition() -> None:
    adhoc = _task("adhoc1", "Qualification", 1, adhoc=True)
    rules = _rules("Qualification", adhoc)
    entry = rules.entry(ChangeStage(stage="Proposal", actor="bob", reason="asked"), NOW)
    step = entry.step
    assert (step.visit_no, step.stage, step.owner, step.actor, step.reason) == (
        2,
        "Proposal",
        "alice",
        "bob",
        "asked",
    )
    assert [t.task_id for t in step.tasks] == [
        "o1:v2:present-proposal",
        "o1:v2:proposal-approval",
        "o1:v2:internal-contract",
    ]
    assert all(t.start_at == NOW and t.due_at > NOW for t in step.tasks)
    assert step.keep_open == (adhoc.task_id,) and step.closing is None
    assert [t.outcomes for t in entry.tasks][1] == ["approved", "changes requested", "rejected"]
    assert rules.state.visit == 1  # planned, not applied: the workflow applies it once written


def test_closing_as_won_takes_income_hours_and_the_follow_up_tasks() -> None:
    won = _rules("Contracting").entry(
        ChangeStage(stage="Closed won", actor="a", actual_income=Decimal(1000), hours_spent=Decimal(2)), NOW
    )
    closing = won.step.closing
    assert closing is not None and closing.successful and closing.actual_income == Decimal(1000)
    assert [t.task_id for t in closing.follow_up] == ["o1:followup:check-data", "o1:followup:kick-off"]
    assert won.tasks == ()
    lost = _rules("Proposal").entry(ChangeStage(stage="Closed lost", actor="a", reason="No budget"), NOW)
    assert lost.step.closing is not None and lost.step.closing.follow_up == ()
    assert (lost.step.closing.successful, lost.step.closing.reason) == (False, "No budget")


def test_a_completion_moves_as_its_outcome_says_or_on_when_the_visit_is_done() -> None:
    proposal = _rules(
        "Proposal",
        _task("present-proposal", "Proposal", 3, status="completed", outcome="done"),
        _task("proposal-approval", "Proposal", 3),
        _task("internal-contract", "Proposal", 3),
    )
    approval = proposal.state.tasks["o1:v3:proposal-approval"]
    again = proposal.after_completion(
        approval, CompleteTask(task_id=approval.task_id, actor="a", outcome="changes requested")
    )
    assert isinstance(again, ChangeStage) and (again.stage, again.restart) == ("Proposal", True)
    rejected = proposal.after_completion(
        approval, CompleteTask(task_id=approval.task_id, actor="a", outcome="rejected")
    )
    assert isinstance(rejected, ChangeStage) and rejected.stage == "Closed lost" and rejected.reason
    approval.status = "completed"  # approved (continue): one task still open, no move yet
    assert proposal.after_completion(approval, CompleteTask(task_id=approval.task_id, actor="a")) is None
    proposal.state.tasks["o1:v3:internal-contract"].status = "completed"
    onward = proposal.after_completion(approval, CompleteTask(task_id=approval.task_id, actor="a"))
    assert isinstance(onward, ChangeStage) and onward.stage == "Contracting"
    signed = _contracting(signed_open=False)
    sign = signed.state.tasks["o1:v5:sign-contract"]
    closing = signed.after_completion(
        sign, CompleteTask(task_id=sign.task_id, actor="a", outcome="signed", actual_income=Decimal(7))
    )
    assert isinstance(closing, ChangeStage) and (closing.stage, closing.actual_income) == (
        "Closed won",
        Decimal(7),
    )


def test_an_adhoc_task_and_a_reassignment_as_the_rules_plan_them() -> None:
    rules = _rules(
        "Qualification",
        _task("contact-assess", "Qualification", 1),
        _task("prepare-presentation", "Qualification", 1, owner="carol"),
        adhoc_tasks=2,
        reassignments=1,
    )
    task = plans.adhoc_task(rules.state, AddTask(title="Call the CFO", actor="a"), NOW)
    assert (task.task_id, task.owner, task.due_at, task.outcomes) == (
        "o1:adhoc3",
        "alice",
        NOW + timedelta(days=1),
        ["done"],
    )
    assert plans.adhoc_task(rules.state, AddTask(title="t", actor="a", owner="bob"), NOW).owner == "bob"
    row = plans.reassignment(rules.state, Reassign(owner="bob", actor="maria", reason="leave"), NOW)
    assert (row.number, row.from_owner, row.to_owner) == (2, "alice", "bob")
    assert row.task_ids == ("o1:v1:contact-assess",)  # carol's task stays hers


def test_a_visit_goes_stale_after_its_stages_limit_once_per_quiet_spell() -> None:
    state = _rules("Qualification").state
    state.quiet_since = NOW
    limit = PROCESS.stale_after("Qualification")
    assert limit is not None and state.stale_deadline() == NOW + limit
    state.stale_noticed = NOW  # told once for this quiet spell
    assert state.stale_deadline() is None
    assert _rules("Closed won", closed=True).state.stale_deadline() is None


def test_a_task_workflow_starts_for_the_tasks_owner_with_the_definitions_reminders() -> None:
    mine = NewTask(task_id="o1:v1:contact-assess", task_key="contact-assess", title="Call", start_at=NOW,
                   due_at=NOW, owner="carol")  # fmt: skip
    follow_up = NewTask(task_id="o1:f", task_key="f", title="Follow up", start_at=NOW, due_at=NOW)
    reminders = PROCESS.definition.reminders
    [carols, deals] = [
        TaskInput.model_validate(op.args) for op in starts("o1", "alice", [mine, follow_up], reminders)
    ]
    assert (carols.task_id, carols.opportunity_id, carols.owner, carols.title) == (
        "o1:v1:contact-assess",
        "o1",
        "carol",
        "Call",
    )
    assert carols.reminders == reminders
    assert deals.owner == "alice"  # a new task without an owner of its own is the deal owner's
