"""Business events out, end to end (real Temporal, real PostgreSQL, the real activities): a deal
driven from its start to Closed won leaves one CloudEvent per change, in order, numbered 1, 2,
3 ... without a gap, each id once, written with the change itself; `corpsale events` and the
Python client read them, after a position and for one opportunity. (A step run again writes
none twice: tests/test_exactly_once.py.)"""

from __future__ import annotations

import json
import uuid

from starter.client import read_events
from tests.helpers import Sale
from workflows import contract as c


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
    for e in found:  # each kind's data is what its schema (docs/schemas/event.*) says
        c.EVENTS[e["type"].removeprefix("com.corpsale.")].model_validate(e["data"])
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
    table = await sale.cli("events", "--opportunity", opp, "--since", str(found[-2]["position"]))
    assert table.code == 0 and "#21   opportunity.won" in table.stdout, table.stdout
    assert (await sale.cli("events", "--opportunity", f"opp-{uuid.uuid4().hex}")).stdout == ""
