"""R11: bad commands get a clear error as updates and are recorded in `rejected` as signals;
they never fail a workflow task, never leave the process stuck, never change data."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError

from tests.helpers import Sale, eventually
from workflows import contract as c

BAD_MOVES: list[tuple[str, Any, str]] = [
    ("unknown stage", {"stage": "Negotiation", "actor": "bob"}, "Unknown stage 'Negotiation'"),
    ("missing actor", {"stage": "Proposal"}, "actor: Field required"),
    ("extra field", {"stage": "Proposal", "actor": "bob", "colour": "red"}, "colour: Extra"),
    ("not an object", "Proposal", "Malformed payload"),
    ("no payload", None, "Malformed payload"),
    ("wrong type", {"stage": 42, "actor": "bob"}, "stage: Input should be a valid string"),
    (
        "income when lost",
        {"stage": "Closed lost", "actor": "bob", "actual_income": 5},
        "only when closing as won",
    ),
    (
        "negative income",
        {"stage": "Closed won", "actor": "bob", "actual_income": -5},
        "greater than or equal to 0",
    ),
]

BAD_COMPLETIONS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown task", {"task_id": "nope", "actor": "bob"}, "Unknown task 'nope'"),
    (
        "bad outcome",
        {"task_id": "{first}", "actor": "bob", "outcome": "maybe"},
        "has no outcome 'maybe'; choose one of: done",
    ),
    ("canceled task", {"task_id": "{canceled}", "actor": "bob"}, "was canceled"),
    ("completed task", {"task_id": "{completed}", "actor": "bob"}, "is completed already"),
]

BAD_UPDATES: list[tuple[str, Any, str]] = [
    ("negative budget", {"budget": -1}, "budget: Input should be greater than or equal to 0"),
    ("unknown field", {"colour": "red"}, "colour: Extra inputs are not permitted"),
    ("nothing to update", {}, "No field to update"),
    ("bad date", {"presentation_at": "next tuesday"}, "presentation_at"),
]


async def _prepared(sale: Sale) -> tuple[str, dict[str, str]]:
    """An opportunity in Presentation visit 3 with a canceled and a completed task behind it."""
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    q1 = await sale.wait_stage(opp, "Qualification")
    completed = q1.open_tasks[0].task_id
    await sale.complete(opp, completed)
    canceled = q1.open_tasks[1].task_id
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "bob"})
    state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Presentation", "actor": "b"})
    return opp, {"first": state.open_tasks[0].task_id, "canceled": canceled, "completed": completed}


def _fill(payload: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    return {k: v.format(**ids) if isinstance(v, str) else v for k, v in payload.items()}


async def _snapshot(sale: Sale, opp: str) -> tuple[Any, ...]:
    row = await sale.opportunity(opp)
    return (
        dict(row),
        [dict(t) for t in await sale.tasks(opp)],
        [dict(v) for v in await sale.visits(opp)],
        len(await sale.notifications(opp)),
    )


async def test_bad_updates_are_refused_with_a_clear_error_and_change_nothing(sale: Sale) -> None:
    opp, ids = await _prepared(sale)
    before = await _snapshot(sale, opp)
    cases = [(c.UPDATE_CHANGE_STAGE, p, m) for _, p, m in BAD_MOVES]
    cases += [(c.UPDATE_COMPLETE_TASK, _fill(p, ids), m) for _, p, m in BAD_COMPLETIONS]
    cases += [(c.UPDATE_UPDATE_OPPORTUNITY, p, m) for _, p, m in BAD_UPDATES]
    for update, payload, message in cases:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await sale.update(opp, update, payload)
        assert message in str(refused.value.cause), (update, payload, refused.value.cause)

    assert await _snapshot(sale, opp) == before
    state = await sale.state(opp)
    assert state.rejected == []  # refused updates leave no trace in the run's history
    await _assert_still_advances(sale, opp)


async def test_bad_signals_are_recorded_as_rejected_and_change_nothing(sale: Sale) -> None:
    opp, ids = await _prepared(sale)
    before = await _snapshot(sale, opp)
    cases = [(c.SIGNAL_CHANGE_STAGE, p, m) for _, p, m in BAD_MOVES]
    cases += [(c.SIGNAL_COMPLETE_TASK, _fill(p, ids), m) for _, p, m in BAD_COMPLETIONS]
    cases += [(c.SIGNAL_UPDATE_OPPORTUNITY, p, m) for _, p, m in BAD_UPDATES]
    for name, payload, _ in cases:
        await sale.signal(opp, name, payload)

    state = await eventually(lambda: sale.state(opp), lambda s: len(s.rejected) == len(cases))
    for (name, payload, message), rejection in zip(cases, state.rejected, strict=True):
        assert rejection.command == name and message in rejection.reason, (payload, rejection)
    assert await _snapshot(sale, opp) == before
    await _assert_still_advances(sale, opp)
    history = await sale.handle(opp).fetch_history()
    failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert failed == []


async def test_a_signal_with_several_arguments_is_recorded_not_fatal(sale: Sale) -> None:
    handle, opp = await sale.started()
    await handle.signal(c.SIGNAL_CHANGE_STAGE, args=[{"stage": "Proposal", "actor": "a"}, "x"])
    await handle.signal(c.SIGNAL_CHANGE_STAGE, {"stage": "Presentation", "actor": "a"})
    state = await sale.wait_stage(opp, "Presentation")
    assert state.visit == 2
    assert [r.reason for r in state.rejected] == ["Malformed payload: send one JSON object, not 2 arguments."]


async def _assert_still_advances(sale: Sale, opp: str) -> None:
    state = await sale.complete_stage(opp)
    assert state.stage == "Proposal" and not state.closed


async def test_a_binary_payload_is_recorded_and_the_state_stays_readable(sale: Sale) -> None:
    handle, opp = await sale.started(continue_as_new_after_events=100)
    await handle.signal(c.SIGNAL_CHANGE_STAGE, b"\xff\xfe not json")
    await handle.signal(c.SIGNAL_UPDATE_OPPORTUNITY, {"need": "x" * 4000, "meeting_notes": "y" * 4000})
    state = await eventually(lambda: sale.state(opp), lambda s: len(s.rejected) == 1)
    assert "Malformed payload" in state.rejected[0].reason
    assert state.rejected[0].payload == repr(b"\xff\xfe not json")
    # The run still hands over and goes on with its state intact.
    for stage in ["Proposal", "Qualification"] * 3:
        await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": stage, "actor": "b"})
    state = await sale.wait_stage(opp, "Qualification", visit=7)
    assert len(state.rejected) == 1 and state.data["need"] == "x" * 4000


async def test_a_refused_command_is_one_line_in_the_workers_log(
    client: Client, pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """A refusal is an answer, not an error of the worker: one line naming the opportunity, the
    command and the reason, and no traceback."""
    sale = Sale(client, pool, f"corpsale-log-{uuid.uuid4()}", database_url)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.main", env=sale.worker_env(),
            stdout=out, stderr=out,
        )  # fmt: skip
        try:
            _, opp = await sale.started()
            with pytest.raises(WorkflowUpdateFailedError):
                await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Nowhere", "actor": "bob"})
            with pytest.raises(WorkflowUpdateFailedError):
                await sale.update(opp, c.UPDATE_REASSIGN, {"owner": "bob", "actor": "mallory"})
            await sale.signal(opp, c.SIGNAL_COMPLETE_TASK, {"task_id": "nope", "actor": "alice"})
            await eventually(lambda: sale.state(opp), lambda s: len(s.rejected) == 2)
        finally:
            worker.terminate()
            await worker.wait()
    text = log.read_text()
    assert "Traceback" not in text, text
    refused = [line for line in text.splitlines() if " refused (" in line]
    assert [line.split(" refused (")[0].split()[-1] for line in refused] == [
        "change_stage", "reassign", "complete_task",
    ], text  # fmt: skip
    assert all(opp in line for line in refused), refused
    assert "Unknown stage 'Nowhere'" in refused[0] and "mallory may not reassign" in refused[1]
