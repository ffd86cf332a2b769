"""Business events out, end to end (real Temporal, real PostgreSQL, the real activities): a deal
driven from its start to Closed won leaves one CloudEvent per change, in order, numbered 1, 2,
3 ... without a gap, each id once, written with the change itself; `corpsale events` and the
Python client read them, after a position and for one opportunity. (A step run again writes
none twice: tests/test_exactly_once.py.)"""

from __future__ import annotations

import json
import uuid

from starter.client import read_events
from tests.helpers import Sale, assert_events_keep_the_contract, journal_settled
from workflows import contract as c
from workflows import event_data


async def test_a_deal_leaves_one_event_per_change_in_order_without_gaps(sale: Sale) -> None:
    _, opp = await sale.started(owner="alice")
    await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"budget": 50000, "actor": "alice"})
    await sale.update(opp, c.UPDATE_ADD_TASK, {"title": "Call the CFO", "actor": "alice"})
    await sale.update(opp, c.UPDATE_REASSIGN, {"owner": "bob", "actor": "alice", "reason": "territory"})
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Contracting", "actor": "bob"})
    for key in ("send-contract", "contract-status"):
        await sale.update(opp, c.UPDATE_COMPLETE_TASK, {"task_id": f"{opp}:v2:{key}", "actor": "bob"})
    done = {"task_id": f"{opp}:v2:sign-contract", "actor": "bob", "outcome": "signed", "actual_income": 48000}
    await sale.update(opp, c.UPDATE_COMPLETE_TASK, done)

    await journal_settled(sale, opp)  # the last change's events go out once it is confirmed (R28)
    found = await read_events(sale.database_url, opportunity_id=opp)
    kinds = [e["type"].removeprefix("com.corpsale.") for e in found]
    assert kinds == [
        "opportunity.started",
        "stage.entered", "task.created", "task.created",  # Qualification
        "opportunity.updated",
        "task.created",  # the ad-hoc task
        "opportunity.reassigned",
        "task.canceled", "task.canceled", "stage.entered", "task.created", "task.created", "task.created",
        "task.completed", "task.completed", "task.completed",
        "task.canceled",  # closing cancels the ad-hoc task
        "stage.entered", "task.created", "task.created",  # Closed won, its follow-up tasks
        "opportunity.won",
    ]  # fmt: skip
    assert [e["sequence"] for e in found] == list(range(1, len(found) + 1))
    for e in found:  # each kind's data is what its model and its schema (docs/schemas/event.*) say
        event_data.EVENTS[e["type"].removeprefix("com.corpsale.")].model_validate(e["data"])
    assert_events_keep_the_contract(found)  # times in RFC 3339 and in order, tasks by id
    assert len({e["id"] for e in found}) == len(found)
    envelope = ("1.0", "/corporate-sale", opp, "application/json")
    assert all((e["specversion"], e["source"], e["subject"], e["datacontenttype"]) == envelope for e in found)
    entered = [e["data"] for e in found if e["type"].endswith("stage.entered")]
    assert [(d["stage"], d["left"]) for d in entered] == [
        ("Qualification", None), ("Contracting", "Qualification"), ("Closed won", "Contracting")
    ]  # fmt: skip
    assert found[4]["data"] == {"changes": {"budget": "50000"}}
    assert found[6]["data"]["from"] == "alice" and found[6]["data"]["to"] == "bob"
    won = found[-1]["data"]
    assert (won["actual_income"], won["order"]["id"]) == ("48000", f"{opp}:order")
    assert won["order"]["amount"] == "48000.00"

    # The feed: after a position, and through the CLI as one CloudEvent per line.
    later = await read_events(sale.database_url, since=found[16]["position"], opportunity_id=opp)
    assert [e["id"] for e in later] == [e["id"] for e in found[17:]]
    printed = await sale.cli("events", "--opportunity", opp, "--json")
    assert printed.code == 0, printed.stderr
    assert [json.loads(line)["id"] for line in printed.stdout.splitlines()] == [e["id"] for e in found]
    table = await sale.cli("events", "--opportunity", opp, "--since", str(found[-4]["position"]))
    assert table.code == 0 and "#21   opportunity.won" in table.stdout, table.stdout
    assert f"#19   task.created           {opp}:followup:" in table.stdout, table.stdout  # its task, by id
    assert (await sale.cli("events", "--opportunity", f"opp-{uuid.uuid4().hex}")).stdout == ""


async def test_the_feed_never_passes_an_event_that_commits_after_a_later_one(sale: Sale) -> None:
    """A position is taken at insert: an event can commit after one with a larger position. A
    reader that went by positions alone would pass it for good; the feed waits for it."""
    import asyncpg

    from activities.data import events

    first, second = f"opp-{uuid.uuid4().hex}", f"opp-{uuid.uuid4().hex}"
    slow, quick = await asyncpg.connect(sale.database_url), await asyncpg.connect(sale.database_url)
    try:
        ours = {f"{first}:started", f"{second}:started"}
        cursor = (await events.read(quick, limit=1_000_000) or [{"position": 0}])[-1]["position"]
        slow_tx = slow.transaction()
        await slow_tx.start()
        await events.lock(slow, first)
        started = "opportunity.started"
        await events.emit(slow, first, f"{first}:started", started, None, {"title": "slow"})
        async with events.transaction(quick, second):
            await events.emit(quick, second, f"{second}:started", started, None, {"title": "quick"})
        where = "SELECT position FROM events WHERE id = $1"
        assert await quick.fetchval(where, f"{second}:started") > await slow.fetchval(
            where, f"{first}:started"
        )
        early = [e for e in await events.read(quick, cursor) if e["id"] in ours]
        assert early == [], "read before the earlier transaction ended"
        await slow_tx.commit()
        seen = [e["id"] for e in await events.read(quick, cursor) if e["id"] in ours]
        assert seen == [f"{first}:started", f"{second}:started"]
        # A transaction that writes before it takes an opportunity's lock is refused.
        async with quick.transaction():
            await quick.execute("UPDATE events SET time = time WHERE id = $1", f"{first}:started")
            try:
                await events.lock(quick, first)
            except AssertionError as err:
                assert "before its transaction writes anything" in str(err)
            else:
                raise AssertionError("a lock after a write was taken")
        unknown = await sale.cli("events", "--since", "999999999")
        assert unknown.code != 0 and "no event at position 999999999" in unknown.stderr, unknown
    finally:
        await slow.close()
        await quick.close()


async def test_a_refused_command_is_an_event_once_however_often_it_comes(sale: Sale) -> None:
    _, opp = await sale.started(owner="alice")
    wrong = {"stage": "Nowhere", "actor": "alice", "request_id": "r1"}
    for _ in range(2):  # a broker delivering twice
        await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, wrong)
    await sale.signal(opp, "change_stage_please", {"stage": "Proposal", "actor": "mallory"})
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "alice"})  # after them

    await journal_settled(sale, opp)
    found = await read_events(sale.database_url, opportunity_id=opp)
    refused = [e for e in found if e["type"] == "com.corpsale.command.refused"]
    assert [e["id"] for e in refused] == [f"{opp}:refused1", f"{opp}:refused2"]
    first, second = (event_data.CommandRefused.model_validate(e["data"]) for e in refused)
    assert (first.command, first.request_id, first.actor) == ("change_stage", "r1", "alice")
    assert "Nowhere" in first.reason
    assert (second.command, second.actor) == ("change_stage_please", "mallory")
    assert "Unknown signal" in second.reason or "unknown" in second.reason.lower(), second.reason
    assert [e["sequence"] for e in found] == list(range(1, len(found) + 1))
