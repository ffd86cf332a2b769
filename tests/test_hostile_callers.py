"""R22 and R23 against callers that lie, race and send garbage: a run belongs to its opportunity,
a start that does not decode fails at once saying why, a closed opportunity gets no new run,
every delivery of one request gets the answer of the one applied, a request id is one command's,
and a payload that is not JSON is refused and recorded like any malformed command."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import asyncpg
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import RawValue, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from starter.client import CommandRefused, SaleClient
from tests.helpers import Sale, eventually
from tests.processes import worker_process
from workflows import contract as c
from workflows.contract import StateView


def _json(value: Any) -> RawValue:
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode()))


def _raw(data: bytes) -> RawValue:
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=data))


DEEP = b"[" * 5_000 + b"]" * 5_000


async def _start_raw(sale: Sale, workflow_id: str, *args: Any) -> WorkflowHandle[Any, Any]:
    return await sale.client.start_workflow(
        c.WORKFLOW_TYPE, args=list(args), id=workflow_id, task_queue=sale.task_queue
    )


async def _failure(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 20)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


def _new(opp: str, **fields: Any) -> dict[str, Any]:
    return {"title": "Deal", "customer": "Acme", "owner": "alice", **fields}


BAD_STARTS: list[tuple[str, list[Any], str]] = [
    ("a string", [_json("just a string")], "valid dictionary"),
    ("no actor", [_json({"opportunity_id": "{opp}", "new": _new("{opp}")})], "actor: Field required"),
    ("an id with a space", [_json({"opportunity_id": "b 1", "actor": "x"})], "opportunity_id: String"),
    ("an extra field", [_json({"opportunity_id": "{opp}", "actor": "x", "colour": 1})], "colour: Extra"),
    (
        "a negative budget",
        [_json({"opportunity_id": "{opp}", "actor": "x", "new": _new("{opp}", budget=-1)})],
        "new.budget: Input should be greater than or equal to 0",
    ),
    (
        "NUL in the title",
        [_json({"opportunity_id": "{opp}", "actor": "x", "new": _new("{opp}", title="a\x00b")})],
        "new.title: Value error, text must not contain the NUL character",
    ),
    ("not JSON", [_raw(b"{not json")], "not JSON the process can read"),
    ("not UTF-8", [_raw(b'{"opportunity_id": "\xff\xfe"}')], "not JSON the process can read"),
    ("nested 5,000 deep", [_raw(DEEP)], "not JSON the process can read"),
    ("no input", [], "The start has no input"),
    (
        "a forged hand-over state",
        [_json({"opportunity_id": "{opp}", "actor": "x", "resume": {"opportunity_id": "{opp}"}})],
        "resume is the process's own hand-over",
    ),
]


@pytest.mark.parametrize(("case", "args", "why"), BAD_STARTS, ids=[b[0] for b in BAD_STARTS])
async def test_a_start_that_does_not_decode_fails_at_once_saying_why(
    sale: Sale, case: str, args: list[Any], why: str
) -> None:
    opp = sale.new_id()
    args = [_raw(a.payload.data.replace(b"{opp}", opp.encode())) for a in args]
    handle = await _start_raw(sale, c.workflow_id(opp), *args)

    failure = await _failure(handle)

    assert failure.type == "InvalidStart" and why in failure.message, failure.message
    history = await handle.fetch_history()
    assert not [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert await sale.pool.fetchval("SELECT count(*) FROM opportunities WHERE id = $1", opp) == 0


async def test_a_run_refuses_a_workflow_id_that_is_not_its_opportunitys(sale: Sale) -> None:
    opp = sale.new_id()
    start = {"opportunity_id": opp, "actor": "x", "new": _new(opp)}
    impostor = await _start_raw(sale, f"{c.workflow_id(opp)}-other", _json(start))

    failure = await _failure(impostor)

    assert failure.type == "InvalidStart"
    assert f"its process runs as {c.workflow_id(opp)!r}" in failure.message
    assert await sale.pool.fetchval("SELECT count(*) FROM opportunities WHERE id = $1", opp) == 0
    # The opportunity's own id still starts it, as the only process writing its rows.
    await _start_raw(sale, c.workflow_id(opp), _json(start))
    await sale.wait_stage(opp, "Qualification")
    assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification"]


async def test_a_closed_opportunity_gets_no_new_run_from_any_entry(sale: Sale) -> None:
    handle, opp = await sale.started()
    lost = {"stage": "Closed lost", "actor": "alice", "reason": "No budget"}
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, lost)
    closed_run = (await handle.describe()).run_id
    client = SaleClient(sale.client, sale.task_queue)

    with pytest.raises(CommandRefused, match="is closed in 'Closed lost'"):
        await client.start(opp, actor="crm-sync")
    with pytest.raises(CommandRefused, match="is closed in 'Closed lost'; a final stage is never left"):
        await client.change_stage(opp, c.ChangeStage(stage="Proposal", actor="alice"))
    cli = await sale.cli("start", "--existing", opp)
    assert cli.code == 1 and "closed in 'Closed lost'" in cli.stderr
    with pytest.raises(WorkflowAlreadyStartedError):  # what the contract tells services to send
        await sale.client.start_workflow(
            c.WORKFLOW_TYPE,
            {"opportunity_id": opp, "actor": "x"},
            id=c.workflow_id(opp),
            task_queue=sale.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )
    assert (await handle.describe()).run_id == closed_run

    # A caller that allows duplicates gets a run that ends at once, as closed, writing nothing.
    other = await _start_raw(sale, c.workflow_id(opp), _json({"opportunity_id": opp, "actor": "x"}))
    result = StateView.model_validate(await asyncio.wait_for(other.result(), 20))
    assert (result.stage, result.closed) == ("Closed lost", True)
    assert "is closed in 'Closed lost'" in result.rejected[-1].reason
    assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", "Closed lost"]
    shown = await sale.cli("state", opp)
    assert shown.code == 0 and "Closed lost (closed)" in shown.stdout, shown


BAD_PAYLOADS: list[tuple[str, list[RawValue], str]] = [
    ("not JSON", [_raw(b"{not json")], "not JSON the process can read"),
    ("not UTF-8", [_raw(b'{"stage": "\xff"}')], "not JSON the process can read"),
    ("nested 5,000 deep", [_raw(DEEP)], "not JSON the process can read"),
    ("two arguments", [_json({"stage": "Proposal"}), _json({"actor": "b"})], "not 2 arguments"),
]


@pytest.mark.parametrize(("case", "args", "why"), BAD_PAYLOADS, ids=[b[0] for b in BAD_PAYLOADS])
async def test_a_payload_that_does_not_decode_is_refused_and_recorded(
    sale: Sale, case: str, args: list[RawValue], why: str
) -> None:
    _, opp = await sale.started()
    handle = sale.handle(opp)

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(c.UPDATE_CHANGE_STAGE, args=args)
    assert why in str(refused.value.cause)
    await handle.signal(c.SIGNAL_CHANGE_STAGE, args=args)
    state = await eventually(lambda: sale.state(opp), lambda s: len(s.rejected) == 1)

    assert state.rejected[0].command == c.SIGNAL_CHANGE_STAGE and why in state.rejected[0].reason
    history = await handle.fetch_history()
    assert not [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    state = await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "b"})
    assert state.stage == "Proposal"  # and the process goes on


async def test_unknown_command_names_are_refused_and_recorded(sale: Sale) -> None:
    _, opp = await sale.started()
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await sale.update(opp, "close_deal_update", {"actor": "b"})
    assert "Unknown update 'close_deal_update'" in str(refused.value.cause)
    await sale.signal(opp, "close_deal", {"actor": "b"})
    state = await eventually(lambda: sale.state(opp), lambda s: len(s.rejected) == 1)
    assert "Unknown command 'close_deal'" in state.rejected[0].reason


async def test_every_delivery_of_one_request_gets_the_answer_of_the_one_applied(sale: Sale) -> None:
    _, opp = await sale.started()
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "alice"})
    approval = f"{opp}:v2:proposal-approval"
    payload = {"task_id": approval, "actor": "alice", "outcome": "changes requested", "request_id": "once"}

    # Three deliveries at once, each with an update id of its own (as plain SDK callers send).
    answers = await asyncio.gather(
        *(
            sale.handle(opp).execute_update(
                c.UPDATE_COMPLETE_TASK, payload, id=str(uuid.uuid4()), result_type=StateView
            )
            for _ in range(3)
        )
    )

    assert {(a.stage, a.visit) for a in answers} == {("Proposal", 3)}
    (row,) = [t for t in await sale.tasks(opp) if t["id"] == approval]
    assert (row["status"], row["outcome"]) == ("completed", "changes requested")
    assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", "Proposal", "Proposal"]
    # A refused request is refused alike each time it comes, with the same reason.
    unknown = {"task_id": "nope", "actor": "alice", "request_id": "refused-once"}
    reasons = set()
    for _ in range(2):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await sale.update(opp, c.UPDATE_COMPLETE_TASK, unknown)
        reasons.add(str(refused.value.cause))
    assert len(reasons) == 1 and "Unknown task 'nope'" in reasons.pop()


async def test_a_request_id_used_for_another_command_is_refused(sale: Sale) -> None:
    _, opp = await sale.started()
    await sale.update(opp, c.UPDATE_ADD_TASK, {"title": "Call", "actor": "a", "request_id": "dup"})

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await sale.update(opp, c.UPDATE_ADD_TASK, {"title": "Visit", "actor": "a", "request_id": "dup"})
    assert "Request id 'dup' was used for another command" in str(refused.value.cause)
    await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": "Proposal", "actor": "a", "request_id": "dup"})
    state = await eventually(lambda: sale.state(opp), lambda s: len(s.rejected) == 1)

    assert "'dup' was used for another command" in state.rejected[0].reason
    assert state.stage == "Qualification"
    assert [t["title"] for t in await sale.tasks(opp) if t["task_key"] == "adhoc"] == ["Call"]


async def test_runs_hand_over_before_the_servers_update_limit(sale: Sale) -> None:
    handle, opp = await sale.started(continue_as_new_after_updates=10)
    for i in range(45):
        await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"meeting_notes": f"call {i}", "actor": "a"})

    runs = [r async for r in sale.client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) >= 4
    for run in runs:
        history = await sale.client.get_workflow_handle(handle.id, run_id=run.run_id).fetch_history()
        accepted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        assert sum(e.event_type == accepted for e in history.events) <= 12
    assert (await sale.opportunity(opp))["meeting_notes"] == "call 44"
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING


async def test_commands_racing_frequent_hand_overs_are_all_applied_once(sale: Sale) -> None:
    """The caller never sees a hand-over: SaleClient sends a "not now" again itself."""
    handle, opp = await sale.started(continue_as_new_after_events=100, continue_as_new_after_updates=10)
    client = SaleClient(sale.client, sale.task_queue)
    await sale.update(opp, c.UPDATE_ADD_TASK, {"title": "Kept open", "actor": "a"})

    async def caller(n: int) -> None:
        for i in range(15):
            await client.add_task(opp, c.AddTask(title=f"{n}-{i}", actor="a", request_id=f"t{n}-{i}"))

    await asyncio.gather(*(caller(n) for n in range(3)))

    titles = sorted(t["title"] for t in await sale.tasks(opp) if t["task_key"] == "adhoc")
    assert titles == sorted(["Kept open", *(f"{n}-{i}" for n in range(3) for i in range(15))])
    runs = [r async for r in sale.client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) >= 3
    state = await sale.state(opp)
    assert len([t for t in state.open_tasks if t.adhoc]) == 46 and state.rejected == []


async def test_a_cli_command_without_an_answer_is_sent_again_safely_with_the_request_id_it_printed(
    client: Client, pool: asyncpg.Pool, database_url: str
) -> None:
    """R23: the CLI gives every command a request id; after a time-out the operator sends the
    command again with the one it printed, and it is applied once."""
    sale = Sale(client, pool, f"corpsale-retry-{uuid.uuid4()}", database_url)
    env = sale.worker_env()
    async with worker_process(env) as worker:
        _, opp = await sale.started()
        worker.kill()
        await worker.wait()

    unanswered = await sale.cli("add-task", opp, "Call the CFO", env={"CORPSALE_COMMAND_TIMEOUT": "3"})
    assert unanswered.code == 1 and "may still be applied" in unanswered.stderr, unanswered
    found = re.search(r"--request-id '([^']+)'", unanswered.stderr)
    assert found is not None, unanswered.stderr
    async with worker_process(env):
        for _ in range(2):
            again = await sale.cli("add-task", opp, "Call the CFO", "--request-id", found.group(1))
            assert again.code == 0, again.stderr
    calls = [t for t in await sale.tasks(opp) if t["title"] == "Call the CFO"]
    assert len(calls) == 1
