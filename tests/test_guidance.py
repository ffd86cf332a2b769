"""Stage guidance end to end (real Temporal, real PostgreSQL, the CLI as a process of its own):
each stage's goal and recommendations, and its key fields still to fill in, as `corpsale start`,
a command's answer, `corpsale state`, `corpsale show` and the run's details in the Web UI show
them, following the data as it is filled in and the deal as it moves."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from temporalio.api.sdk.v1 import WorkflowMetadata

from tests.helpers import Sale, eventually
from workflows import contract as c

QUALIFICATION_GOAL = "goal: Make sure the customer has allocated a budget, the need is well defined"


def _in_a_week() -> str:
    return (datetime.now(UTC) + timedelta(days=7)).isoformat()


async def _details(sale: Sale, opp: str) -> str:
    metadata = await sale.handle(opp).query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    details: str = metadata.current_details
    return details


async def test_each_stage_shows_its_goal_guidance_and_what_is_still_to_fill_in(sale: Sale) -> None:
    opp = f"opp-{uuid.uuid4().hex[:10]}"
    started = await sale.cli(
        "start", "--id", opp, "--title", "Fleet renewal", "--customer", "Initech", "--owner", "alice",
        "--set", "budget=50000", "--set", "need=Fleet tracking",
    )  # fmt: skip
    assert started.code == 0, started.stderr
    assert QUALIFICATION_GOAL in started.stdout
    fill = "to fill in: authority, timeframe, decision_maker, sales_tactics, presentation_at"
    assert fill in started.stdout
    assert "Fill in the BANT data" not in started.stdout  # a command's answer: the goal, not the advice

    state = await sale.cli("state", opp)
    assert state.code == 0, state.stderr
    assert QUALIFICATION_GOAL in state.stdout and fill in state.stdout
    assert "  · Fill in the BANT data: budget, authority, need, timeframe.\n" in state.stdout
    assert "  · Specify the decision maker.\n" in state.stdout
    assert (await _details(sale, opp)).endswith("; " + fill)

    # Filling fields in shortens the list, in the answer, the query, `show` and the details.
    updated = await sale.cli(
        "update", opp, "--set", "authority=CFO", "--set", "timeframe=Q3", "--set", "decision_maker=Jane Roe"
    )
    assert updated.code == 0, updated.stderr
    assert "to fill in: sales_tactics, presentation_at (corpsale update" in updated.stdout
    assert (await sale.state(opp)).to_fill == ["sales_tactics", "presentation_at"]
    shown = await sale.cli("show", opp)
    assert shown.code == 0, shown.stderr
    assert QUALIFICATION_GOAL in shown.stdout and "to fill in: sales_tactics, presentation_at" in shown.stdout
    assert (await _details(sale, opp)).endswith("; to fill in: sales_tactics, presentation_at")

    # Every key field filled: nothing to fill in; the next stage brings its own guide.
    await sale.update(
        opp,
        c.UPDATE_UPDATE_OPPORTUNITY,
        {"sales_tactics": "Lead with the pilot", "presentation_at": _in_a_week(), "actor": "alice"},
    )
    assert "to fill in" not in await _details(sale, opp)
    moved = await sale.cli("move", opp, "Presentation")
    assert moved.code == 0, moved.stderr
    assert "goal: Make the customer interested in your company" in moved.stdout
    assert "to fill in: meeting_notes" in moved.stdout
    assert (await _details(sale, opp)).endswith("; to fill in: meeting_notes")

    # A closed deal has no guide: its process has ended.
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Closed won", "actor": "alice"})
    final = await eventually(lambda: sale.state(opp), lambda s: s.closed)
    assert (final.stage_goal, final.stage_guidance, final.to_fill) == (None, [], [])
    assert "goal:" not in (await sale.cli("show", opp)).stdout
