"""R28: no payload stops a deal. Text PostgreSQL cannot hold (a NUL, a lone surrogate) in any
field of any command, sent as a signal or as an update, is refused at the model and recorded
safely, and the deal takes the next command at once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import RawValue

from tests.helpers import ADMIN, Sale, assert_the_database_is_the_runs
from workflows import contract as c


def _valid(opp: str, task_id: str) -> dict[str, dict[str, Any]]:
    """A payload each command takes in Qualification (the poison goes into one field at a time)."""
    return {
        c.SIGNAL_CHANGE_STAGE: {"stage": "Proposal", "actor": ADMIN, "reason": "r"},
        c.SIGNAL_COMPLETE_TASK: {"task_id": task_id, "actor": ADMIN, "comment": "c", "outcome": "done"},
        c.SIGNAL_UPDATE_OPPORTUNITY: {"need": "n", "actor": ADMIN},
        c.SIGNAL_REASSIGN: {"owner": "bob", "actor": ADMIN, "reason": "r"},
        c.SIGNAL_ADD_TASK: {"title": "t", "actor": ADMIN, "owner": "bob"},
        c.MIGRATE: {"version": 1, "actor": ADMIN},
        "snooze_task": {
            "task_id": task_id,
            "due_at": (datetime.now(UTC) + timedelta(days=9)).isoformat(),
            "actor": ADMIN,
            "reason": "r",
        },
        "claim_task": {"task_id": task_id, "actor": ADMIN},
        "release_task": {"task_id": task_id, "actor": ADMIN, "reason": "r"},
    }


def _raw(payload: dict[str, Any]) -> RawValue:
    """The payload as a service in any language may send it: JSON text, its poison escaped."""
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(payload).encode()))


def _text_fields(name: str) -> list[str]:
    """Every field of the command's payload that takes text (from its JSON Schema, the contract)."""
    model = c.UPDATE_ONLY.get(name) or next(spec.model for spec in c.COMMANDS if spec.name == name)
    fields = []
    for field, schema in model.model_json_schema()["properties"].items():
        kinds = [schema, *schema.get("anyOf", [])]
        if any(k.get("type") == "string" and "format" not in k and "enum" not in k for k in kinds):
            fields.append(field)
    return fields


@pytest.mark.parametrize("poison", ["a\x00b", "a\ud800b"], ids=["NUL", "lone surrogate"])
async def test_text_postgresql_cannot_hold_is_refused_in_every_field_and_the_deal_goes_on(
    sale: Sale, poison: str
) -> None:
    _, opp = await sale.started()
    task = (await sale.state(opp)).open_tasks[0].task_id
    sent = 0
    commands = _valid(opp, task)
    assert set(commands) == {spec.name for spec in c.COMMANDS} | set(c.UPDATE_ONLY)  # every one
    for name, payload in commands.items():
        fields = _text_fields(name)
        assert "actor" in fields and "request_id" in fields, (name, fields)
        for n, field in enumerate(fields):
            bad = {**payload, field: poison}
            if field != "request_id":
                bad["request_id"] = f"{name}-{n}"
            update = next((s.update for s in c.COMMANDS if s.name == name), c.UPDATE_MIGRATE)
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await sale.handle(opp).execute_update(update, _raw(bad))
            assert "Malformed payload" in str(refused.value.cause), (name, field, refused.value.cause)
            if name in c.UPDATE_ONLY:
                continue
            await sale.handle(opp).signal(name, _raw(bad))
            sent += 1
    # A signal of no known name, its actor poisoned too: refused, and recorded as text PostgreSQL holds.
    await sale.handle(opp).signal("poison", _raw({"actor": poison, "request_id": "unknown-name"}))
    # The deal takes the next command at once.
    state = await asyncio.wait_for(
        sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": "after the poison", "actor": ADMIN}), 10
    )
    assert state.data["need"] == "after the poison"
    assert len(state.rejected) == sent + 1
    assert all("Malformed payload" in r.reason or "Unknown" in r.reason for r in state.rejected)
    events = await assert_the_database_is_the_runs(sale, opp)
    recorded = [e["data"] for e in events if e["type"].endswith("command.refused")]
    assert len(recorded) == sent + 1  # one per signal; an update its validator refused is answered only
    unknown = next(r for r in recorded if r["command"] == "poison")
    if "\x00" in poison:  # its actor stored as text PostgreSQL holds: the NUL escaped
        assert unknown["actor"] == "a\\u0000b"
    else:  # a lone surrogate: not JSON the process reads, refused as a whole
        assert "Malformed payload" in unknown["reason"] and unknown["actor"] is None
    assert all(r["digest"] and len(r["digest"]) == 16 for r in recorded)
