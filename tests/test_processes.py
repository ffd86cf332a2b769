"""Several sales processes side by side (issue 26), end to end on the real stack: the process
library holds the bundled `corporate-sale` and `small-business-sale`, each with versions of its
own; a deal runs the process its start names (else the library's default) to its end; a process
of listed stages only refuses a move to another stage of the lookup; what the deal leaves in
PostgreSQL, its events and its run's search attributes say which process made it."""

from __future__ import annotations

import json

from starter.client import read_events
from tests.helpers import Sale, journal_settled
from workflows import contract as c
from workflows.search_attributes import PROCESS_ATTR


async def test_two_deals_on_two_processes_run_side_by_side_to_their_ends(sale: Sale) -> None:
    listed = await sale.cli("processes", "--json")
    assert listed.code == 0, listed.stderr
    library = {row["process"]: row for row in json.loads(listed.stdout)}
    assert library["corporate-sale"]["default"] and library["corporate-sale"]["latest"] >= 5
    assert (library["small-business-sale"]["default"], library["small-business-sale"]["latest"]) == (False, 1)

    small, corporate = sale.new_id(), sale.new_id()
    for opp, option in ((small, ["--process", "small-business-sale"]), (corporate, [])):
        started = await sale.cli(
            "start", "--id", opp, "--title", "Vans", "--customer", "Initech", "--owner", "alice", *option
        )
        assert started.code == 0, started.stderr
    assert (await sale.state(small)).process == "small-business-sale"
    assert (await sale.state(corporate)).process == "corporate-sale"  # the default

    # The small-business sale: Qualification -> Proposal -> Closed won, nothing else.
    state = await sale.state(small)
    assert (state.stage, [t.task_id for t in state.open_tasks]) == (
        "Qualification",
        [f"{small}:v1:qualifying-call"],
    )
    moved = await sale.cli("move", small, "Presentation")
    assert moved.code == 1 and "The small-business-sale process has no stage 'Presentation'" in moved.stderr
    state = await sale.complete_stage(small)
    assert state.stage == "Proposal" and {t.task_id for t in state.open_tasks} == {
        f"{small}:v2:send-offer",
        f"{small}:v2:close-call",
    }
    await sale.complete(small, f"{small}:v2:send-offer")
    await sale.update(
        small,
        c.UPDATE_COMPLETE_TASK,
        {"task_id": f"{small}:v2:close-call", "actor": "alice", "outcome": "accepted", "actual_income": 9000},
    )
    won = await sale.wait_stage(small, "Closed won")
    assert won.closed and won.definition_version == 1

    # The corporate sale beside it, stage by stage, as ever.
    for stage in ("Presentation", "Proposal", "Contracting", "Closed won"):
        await sale.complete_stage(corporate)
        await sale.wait_stage(corporate, stage)

    for opp, process in ((small, "small-business-sale"), (corporate, "corporate-sale")):
        row = await sale.opportunity(opp)
        assert (row["process"], row["stage"]) == (process, "Closed won")
        visits = await sale.pool.fetch(
            "SELECT DISTINCT process FROM stage_visits WHERE opportunity_id = $1", opp
        )
        assert [v["process"] for v in visits] == [process]
        await journal_settled(sale, opp)
        found = await read_events(sale.database_url, opportunity_id=opp)
        assert found and {e["process"] for e in found} == {process}
        described = await sale.handle(opp).describe()
        assert described.typed_search_attributes.get(PROCESS_ATTR) == process  # `SaleProcess` in the Web UI
    follow_up = await sale.pool.fetch(
        "SELECT task_key FROM tasks WHERE opportunity_id = $1 AND kind = 'follow-up'", small
    )
    assert [r["task_key"] for r in follow_up] == ["welcome-call"]

    shown = await sale.cli("definition", "show", "--process", "small-business-sale")
    assert shown.code == 0 and shown.stdout.startswith("Small business sale (small-business-sale), version 1")
    assert "Presentation" not in shown.stdout and "Only the stages below" in shown.stdout
    versions = await sale.cli("definition", "versions", "--process", "small-business-sale", "--json")
    assert [(v["process"], v["version"]) for v in json.loads(versions.stdout)] == [("small-business-sale", 1)]
    unknown = await sale.cli(
        "start", "--title", "X", "--customer", "Y", "--owner", "alice", "--process", "nosuch"
    )
    assert (
        unknown.code == 1 and "no process 'nosuch' in the process library; its processes:" in unknown.stderr
    )
