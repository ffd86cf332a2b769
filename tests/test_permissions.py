"""R24, who may do what: a task is completed by its owner, the deal's owner, the manager of either
or an admin; reassigning and closing are the owner's, their manager's or an admin's; anyone else
is refused and recorded. An actor can be trusted where a registered service signs the command;
the CLI acts as the operating-system user unless an admin names someone else."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError

from starter.client import CommandRefused, SaleClient
from tests.helpers import Sale, assert_the_database_is_the_runs, eventually
from workflows import contract as c
from workflows import signing
from workflows.permissions import Action, Asked, Directory, may

# The rules, as plain Python ----------------------------------------------------------------

COMPLETE = Asked(action=Action.COMPLETE_TASK, actor="x", owner="alice", task_owner="carol")


@pytest.mark.parametrize(
    ("actor", "directory", "allowed"),
    [
        ("carol", Directory(), True),  # the task's owner
        ("alice", Directory(), True),  # the deal's owner
        ("maria", Directory(manages=frozenset({"alice"})), True),  # the deal owner's manager
        ("tom", Directory(manages=frozenset({"carol"})), True),  # the task owner's manager
        ("adam", Directory(admin=True), True),
        ("mallory", Directory(), False),
        ("mallory", Directory(manages=frozenset({"bob"})), False),  # a manager, of someone else
        (None, Directory(), False),
    ],
)
def test_a_task_is_completed_by_its_owner_the_deals_owner_the_manager_of_either_or_an_admin(
    actor: str | None, directory: Directory, allowed: bool
) -> None:
    assert may(COMPLETE.model_copy(update={"actor": actor}), directory) is allowed


@pytest.mark.parametrize("action", [Action.CLOSE, Action.REASSIGN])
def test_closing_and_reassigning_are_the_owners_their_managers_or_an_admins(action: Action) -> None:
    def asked(actor: str) -> Asked:
        return Asked(action=action, actor=actor, owner="alice")

    assert may(asked("alice"), Directory())
    assert may(asked("maria"), Directory(manages=frozenset({"alice"})))
    assert may(asked("adam"), Directory(admin=True))
    assert not may(asked("mallory"), Directory())
    # The owner of some task of the deal is not the deal's owner.
    assert not may(Asked(action=action, actor="carol", owner="alice", task_owner="carol"), Directory())


@pytest.mark.parametrize("action", [Action.MOVE, Action.UPDATE, Action.ADD_TASK])
def test_moves_updates_and_tasks_of_ones_own_are_open_to_anyone(action: Action) -> None:
    assert may(Asked(action=action, actor="mallory", owner="alice"), Directory())


def test_a_signature_covers_the_command_as_sent_and_nothing_else() -> None:
    payload = {"stage": "Proposal", "actor": "bob", "budget": 1000.5, "request_id": "r1"}
    signed = signing.sign(
        payload, workflow_id="opportunity-o1", command="change_stage", service="erp", secret="k"
    )
    assert signing.matches("k", "opportunity-o1", "change_stage", signed)
    assert not signing.matches("other", "opportunity-o1", "change_stage", signed)
    assert not signing.matches("k", "opportunity-o2", "change_stage", signed)  # another deal
    assert not signing.matches("k", "opportunity-o1", "reassign", signed)  # another command
    assert not signing.matches("k", "opportunity-o1", "change_stage", {**signed, "actor": "alice"})
    reordered = dict(reversed(list(signed.items())))  # key order is not part of it (RFC 8785)
    assert signing.matches("k", "opportunity-o1", "change_stage", reordered)


# End to end ---------------------------------------------------------------------------------


async def _people(sale: Sale, *rows: tuple[str, ...]) -> None:
    for row in rows:
        result = await sale.cli("people", "set", *row)
        assert result.code == 0, result.stderr


async def _refused(sale: Sale, opp: str, update: str, payload: dict[str, Any]) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await sale.update(opp, update, payload)
    return str(refused.value.cause)


async def test_only_those_the_rules_name_complete_a_task_and_the_others_are_recorded(sale: Sale) -> None:
    suffix = uuid.uuid4().hex[:6]
    alice, maria, carol, adam, mallory = (
        f"{n}-{suffix}" for n in ("alice", "maria", "carol", "adam", "mallory")
    )
    await _people(sale, (alice, "--manager", maria), (adam, "--role", "admin"))
    _, opp = await sale.started(owner=alice)
    contact, prepare = f"{opp}:v1:contact-assess", f"{opp}:v1:prepare-presentation"
    await sale.update(opp, c.UPDATE_ADD_TASK, {"title": "Visit", "actor": alice, "owner": carol})

    why = await _refused(sale, opp, c.UPDATE_COMPLETE_TASK, {"task_id": contact, "actor": mallory})
    assert f"{mallory} may not complete {alice}'s task" in why
    await sale.signal(opp, c.SIGNAL_COMPLETE_TASK, {"task_id": prepare, "actor": mallory})
    state = await eventually(lambda: sale.state(opp), lambda s: len(s.rejected) == 2)
    assert [(r.command, r.reason.split(":")[0]) for r in state.rejected] == [
        (c.SIGNAL_COMPLETE_TASK, f"{mallory} may not complete {alice}'s task"),
        (c.SIGNAL_COMPLETE_TASK, f"{mallory} may not complete {alice}'s task"),
    ]  # the update's refusal is recorded too: who tried what
    assert state.tasks_done == 0
    assert {t["status"] for t in await sale.tasks(opp)} == {"open"}

    await sale.update(opp, c.UPDATE_COMPLETE_TASK, {"task_id": contact, "actor": maria})  # her report's
    await sale.update(opp, c.UPDATE_COMPLETE_TASK, {"task_id": f"{opp}:adhoc1", "actor": carol})  # hers
    state = await sale.update(opp, c.UPDATE_COMPLETE_TASK, {"task_id": prepare, "actor": adam})  # admin
    assert state.stage == "Presentation"
    done = {t["id"]: t["completed_by"] for t in await sale.tasks(opp) if t["status"] == "completed"}
    assert done == {contact: maria, f"{opp}:adhoc1": carol, prepare: adam}


async def test_reassigning_and_closing_are_the_owners_their_managers_or_an_admins(sale: Sale) -> None:
    suffix = uuid.uuid4().hex[:6]
    alice, maria, bob, mallory = (f"{n}-{suffix}" for n in ("alice", "maria", "bob", "mallory"))
    await _people(sale, (alice, "--manager", maria))
    _, opp = await sale.started(owner=alice)
    lost = {"stage": "Closed lost", "reason": "No budget"}

    assert "may not reassign" in await _refused(
        sale, opp, c.UPDATE_REASSIGN, {"owner": mallory, "actor": mallory}
    )
    assert "may not close" in await _refused(sale, opp, c.UPDATE_CHANGE_STAGE, {**lost, "actor": mallory})
    state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": mallory})
    assert state.stage == "Proposal"  # a move that closes nothing is anyone's

    state = await sale.update(opp, c.UPDATE_REASSIGN, {"owner": bob, "actor": maria})
    assert state.owner == bob
    # maria manages alice, not bob: the deal is no longer hers to close.
    assert "may not close" in await _refused(sale, opp, c.UPDATE_CHANGE_STAGE, {**lost, "actor": maria})
    state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, {**lost, "actor": bob})
    assert state.closed and state.stage == "Closed lost"
    assert (await sale.opportunity(opp))["stage"] == "Closed lost"


@pytest.fixture
async def require_signed(sale: Sale) -> AsyncIterator[None]:
    on = await sale.cli("setting", "RequireSignedCommands", "on")
    assert on.code == 0, on.stderr
    try:
        yield
    finally:
        off = await sale.cli("setting", "RequireSignedCommands", "off")
        assert off.code == 0, off.stderr


async def _key(sale: Sale, *args: str) -> tuple[str, str]:
    added = await sale.cli("services", "add", *args)
    assert added.code == 0, added.stderr
    return signing.parse_key(added.stdout.splitlines()[1])


async def test_a_signed_command_vouches_for_its_actor_and_a_forged_one_is_refused(
    sale: Sale, require_signed: None
) -> None:
    suffix = uuid.uuid4().hex[:6]
    erp, laptop = await _key(sale, f"erp-{suffix}"), await _key(sale, f"laptop-{suffix}", "--person", "alice")
    _, opp = await sale.started()
    move = c.ChangeStage(stage="Proposal", actor="bob")

    unsigned = SaleClient(sale.client, sale.task_queue)
    with pytest.raises(CommandRefused, match="Unsigned commands are refused here"):
        await unsigned.change_stage(opp, move)
    state = await SaleClient(sale.client, sale.task_queue, key=erp).change_stage(opp, move)
    assert state.stage == "Proposal"

    def signed(payload: dict[str, Any], key: tuple[str, str], at: datetime | None = None) -> dict[str, Any]:
        service, secret = key
        wid = c.workflow_id(opp)
        return signing.sign(
            payload, workflow_id=wid, command=c.SIGNAL_CHANGE_STAGE, service=service, secret=secret, at=at
        )

    to_contracting = {"stage": "Contracting", "actor": "bob"}
    forged = {**signed(to_contracting, erp), "stage": "Closed won"}  # changed after signing
    assert "does not match" in await _refused(sale, opp, c.UPDATE_CHANGE_STAGE, forged)
    stranger = signed(to_contracting, (f"nobody-{suffix}", "guess"))
    assert "is not registered" in await _refused(sale, opp, c.UPDATE_CHANGE_STAGE, stranger)
    stale = signed(to_contracting, erp, at=datetime.now(UTC) - timedelta(days=2))
    assert "too old" in await _refused(sale, opp, c.UPDATE_CHANGE_STAGE, stale)
    as_bob = signed(to_contracting, laptop)
    assert "signs only as alice, not as bob" in await _refused(sale, opp, c.UPDATE_CHANGE_STAGE, as_bob)
    state = await sale.update(
        opp, c.UPDATE_CHANGE_STAGE, signed({**to_contracting, "actor": "alice"}, laptop)
    )
    assert state.stage == "Contracting"

    revoked = await sale.cli("services", "revoke", erp[0])
    assert revoked.code == 0, revoked.stderr
    back = signed({"stage": "Proposal", "actor": "bob"}, erp)
    assert "is revoked" in await _refused(sale, opp, c.UPDATE_CHANGE_STAGE, back)
    assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", "Proposal", "Contracting"]
    listed = await sale.cli("services")
    assert erp[1] not in listed.stdout and laptop[1] not in listed.stdout  # secrets are shown once


async def test_the_cli_acts_as_the_operating_system_user_unless_an_admin_says_otherwise(sale: Sale) -> None:
    _, opp = await sale.started()
    mallory = {"USER": "mallory", "LOGNAME": "mallory", "CORPSALE_ACTOR": ""}

    posing = await sale.cli("move", opp, "Proposal", "--actor", "alice", env=mallory)
    assert posing.code == 1 and "you are 'mallory': only an admin acts as someone else" in posing.stderr
    moved = await sale.cli("move", opp, "Proposal", env=mallory)
    assert moved.code == 0, moved.stderr
    assert (await sale.visits(opp))[-1]["entered_by"] == "mallory"
    closing = await sale.cli("move", opp, "Closed lost", "--reason", "No budget", env=mallory)
    assert closing.code == 1 and "mallory may not close alice's opportunity" in closing.stderr
    inbox = await sale.cli("inbox", "alice", env=mallory)
    assert inbox.code == 1 and "'mallory' may not read 'alice''s notifications" in inbox.stderr
    own = await sale.cli("inbox", "alice", env={**mallory, "USER": "alice", "LOGNAME": "alice"})
    assert own.code == 0, own.stderr
    promote = await sale.cli("people", "set", "mallory", "--role", "admin", env=mallory)
    assert promote.code == 1 and "'mallory' is not an admin" in promote.stderr
    # The operator running these tests is an admin: they may act as alice, and close her deal.
    closed = await sale.cli("move", opp, "Closed lost", "--reason", "No budget", "--actor", "alice")
    assert closed.code == 0, closed.stderr


async def _local_activities(sale: Sale, opp: str) -> list[str]:
    """The types of the local activities in the opportunity's history, in order."""
    types = []
    async for event in sale.handle(opp).fetch_history_events():
        marker = event.marker_recorded_event_attributes
        if (
            event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and marker.marker_name == "core_local_activity"
        ):
            types.append(json.loads(marker.details["data"].payloads[0].data)["activity_type"])
    return types


async def test_a_completion_is_checked_in_its_own_write_and_a_refused_one_writes_nothing(sale: Sale) -> None:
    """A task completion's permission is checked first in the completion's
    own write (one local activity, not two); a refusal rolls that write back: the task stays open,
    no completion event, the request is not known as applied."""
    suffix = uuid.uuid4().hex[:6]
    alice, mallory = f"alice-{suffix}", f"mallory-{suffix}"
    _, opp = await sale.started(owner=alice)
    contact = f"{opp}:v1:contact-assess"
    refused = {"task_id": contact, "actor": mallory, "request_id": f"try-{suffix}"}

    assert f"{mallory} may not complete {alice}'s task" in await _refused(
        sale, opp, c.UPDATE_COMPLETE_TASK, refused
    )
    await sale.update(opp, c.UPDATE_COMPLETE_TASK, {"task_id": contact, "actor": alice})

    steps = await _local_activities(sale, opp)
    assert "authorize" not in steps
    assert steps[steps.index("enter_stage") + 1 :] == [
        "complete_task",  # mallory's: refused in its transaction
        "record_refusal",  # R24: the refusal is an event
        "complete_task",  # alice's
    ]
    assert [(t["id"], t["completed_by"]) for t in await sale.tasks(opp) if t["status"] == "completed"] == [
        (contact, alice)
    ]

    async def events() -> list[str]:  # out once the run has confirmed its writes
        rows = await sale.pool.fetch(
            "SELECT type FROM events WHERE opportunity_id = $1 ORDER BY position", opp
        )
        return [r["type"] for r in rows]

    got = await eventually(events, lambda types: "task.completed" in types)
    assert got.count("task.completed") == 1 and got.count("command.refused") == 1
    assert not await sale.pool.fetchval(
        "SELECT count(*) FROM requests WHERE opportunity_id = $1 AND request_id = $2",
        opp,
        refused["request_id"],
    )


async def test_a_refused_completion_that_would_finish_its_stage_enters_no_stage(sale: Sale) -> None:
    """The completion of a stage's last task carries the next stage's entry in its write (patch
    `stage-entered-with-completion`): refused, the write is rolled back whole, and the run's state
    with it. No Presentation visit, task or event; the deal is where it was, and the owner's
    completion then enters Presentation as visit 2."""
    suffix = uuid.uuid4().hex[:6]
    alice, mallory = f"alice-{suffix}", f"mallory-{suffix}"
    _, opp = await sale.started(owner=alice)
    await sale.complete(opp, f"{opp}:v1:contact-assess", actor=alice)
    last = {"task_id": f"{opp}:v1:prepare-presentation", "actor": mallory}

    assert f"{mallory} may not complete {alice}'s task" in await _refused(
        sale, opp, c.UPDATE_COMPLETE_TASK, last
    )
    state = await sale.state(opp)
    assert (state.stage, state.visit) == ("Qualification", 1)
    assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification"]
    assert not [t for t in await sale.tasks(opp) if t["stage"] == "Presentation"]

    state = await sale.complete(opp, last["task_id"], actor=alice)
    assert (state.stage, state.visit) == ("Presentation", 2)
    assert [(v["visit_no"], v["stage"]) for v in await sale.visits(opp)] == [
        (1, "Qualification"),
        (2, "Presentation"),
    ]
    await assert_the_database_is_the_runs(sale, opp)


async def test_a_completion_signed_by_a_service_is_checked_in_its_write_too(
    sale: Sale, require_signed: None
) -> None:
    suffix = uuid.uuid4().hex[:6]
    laptop = await _key(sale, f"laptop-{suffix}", "--person", "alice")
    _, opp = await sale.started()
    contact, prepare = f"{opp}:v1:contact-assess", f"{opp}:v1:prepare-presentation"
    service, secret = laptop

    def signed(payload: dict[str, Any]) -> dict[str, Any]:
        return signing.sign(
            payload,
            workflow_id=c.workflow_id(opp),
            command=c.SIGNAL_COMPLETE_TASK,
            service=service,
            secret=secret,
        )

    assert "Unsigned commands are refused here" in await _refused(
        sale, opp, c.UPDATE_COMPLETE_TASK, {"task_id": contact, "actor": "alice"}
    )
    forged = {**signed({"task_id": contact, "actor": "alice"}), "task_id": prepare}  # changed after signing
    assert "does not match" in await _refused(sale, opp, c.UPDATE_COMPLETE_TASK, forged)
    assert "signs only as alice, not as bob" in await _refused(
        sale, opp, c.UPDATE_COMPLETE_TASK, signed({"task_id": contact, "actor": "bob"})
    )
    assert {t["status"] for t in await sale.tasks(opp)} == {"open"}
    state = await sale.update(opp, c.UPDATE_COMPLETE_TASK, signed({"task_id": contact, "actor": "alice"}))
    assert state.tasks_done == 1
    assert "authorize" not in await _local_activities(sale, opp)


async def test_signals_too_must_be_signed_where_signatures_are_required_and_the_cli_signs_with_its_key(
    sale: Sale, require_signed: None
) -> None:
    """With RequireSignedCommands on, an unsigned or forged signal is refused and recorded in
    `rejected` (a signal answers nothing); a signed one is applied. The CLI signs every command
    with CORPSALE_SERVICE_KEY, and without it is refused."""
    suffix = uuid.uuid4().hex[:6]
    service, secret = await _key(sale, f"erp-{suffix}")
    _, opp = await sale.started()
    wid = c.workflow_id(opp)

    def signed(payload: dict[str, Any]) -> dict[str, Any]:
        return signing.sign(
            payload, workflow_id=wid, command=c.SIGNAL_CHANGE_STAGE, service=service, secret=secret
        )

    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Presentation", "actor": "bob"})
    forged = {**signed({"stage": "Presentation", "actor": "bob"}), "stage": "Contracting"}
    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, forged)
    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, signed({"stage": "Proposal", "actor": "bob"}))
    state = await eventually(lambda: sale.state(opp), lambda s: s.stage == "Proposal")
    assert [(r.command, r.reason.split(":")[0]) for r in state.rejected] == [
        (c.SIGNAL_CHANGE_STAGE, "Unsigned commands are refused here (setting RequireSignedCommands)"),
        (c.SIGNAL_CHANGE_STAGE, f"The signature of {service!r} does not match the command"),
    ]
    assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", "Proposal"]

    unsigned = await sale.cli("move", opp, "Presentation")
    assert unsigned.code == 1 and "Unsigned commands are refused here" in unsigned.stderr
    keyed = await sale.cli("move", opp, "Presentation", env={"CORPSALE_SERVICE_KEY": f"{service}:{secret}"})
    assert keyed.code == 0, keyed.stderr
    assert (await sale.state(opp)).stage == "Presentation"


async def test_a_signature_dated_ahead_of_the_process_clock_is_refused_a_slow_clock_is_not(
    sale: Sale, require_signed: None
) -> None:
    """A signature dated a day ahead would stay good for two: refused, saying so. A signer whose
    clock runs a minute fast is let through (up to five)."""
    suffix = uuid.uuid4().hex[:6]
    service, secret = await _key(sale, f"erp-{suffix}")
    _, opp = await sale.started()

    def signed(stage: str, ahead: timedelta) -> dict[str, Any]:
        return signing.sign(
            {"stage": stage, "actor": "bob"},
            workflow_id=c.workflow_id(opp),
            command=c.SIGNAL_CHANGE_STAGE,
            service=service,
            secret=secret,
            at=datetime.now(UTC) + ahead,
        )

    why = await _refused(sale, opp, c.UPDATE_CHANGE_STAGE, signed("Contracting", timedelta(days=1)))
    assert "ahead of the process's clock" in why and "check the signer's clock" in why
    state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, signed("Proposal", timedelta(minutes=1)))
    assert state.stage == "Proposal"
