"""Several sales processes side by side (issue 26), end to end on the real stack: the process
library holds the bundled `corporate-sale` and `small-business-sale`, each with versions of its
own; a deal runs the process its start names (else the library's default) to its end; a process
of listed stages only refuses a move to another stage of the lookup; what the deal leaves in
PostgreSQL, its events and its run's search attributes say which process made it."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from activities.data import leads
from starter.client import read_events
from tests.helpers import Sale, eventually, journal_settled
from tests.test_leads import AWAITING, has_process, relay, start_setting  # noqa: F401  (a fixture)
from workflows import contract as c
from workflows.search_attributes import PROCESS_ATTR


async def test_two_deals_on_two_processes_run_side_by_side_to_their_ends(sale: Sale) -> None:
    listed = await sale.cli("processes", "--json")
    assert listed.code == 0, listed.stderr
    library = {row["process"]: row for row in json.loads(listed.stdout)}
    assert library["corporate-sale"]["default"] and library["corporate-sale"]["latest"] >= 5
    assert (library["small-business-sale"]["default"], library["small-business-sale"]["latest"]) == (False, 1)

    small, corporate, owner = sale.new_id(), sale.new_id(), f"o{uuid.uuid4().hex[:8]}"
    for opp, option in ((small, ["--process", "small-business-sale"]), (corporate, [])):
        started = await sale.cli(
            "start", "--id", opp, "--title", "Vans", "--customer", "Initech", "--owner", owner, *option
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
        {"task_id": f"{small}:v2:close-call", "actor": owner, "outcome": "accepted", "actual_income": 9000},
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

    # The report and the forecast, split by process and for one.
    report = json.loads((await sale.cli("report", "--owner", owner, "--json")).stdout)
    split = {r["process"]: (r["won"], r["income_won"]) for r in report["by_process"]}
    assert split == {"corporate-sale": (1, "0"), "small-business-sale": (1, "9000.00")}, split
    one = json.loads(
        (await sale.cli("report", "--owner", owner, "--process", "small-business-sale", "--json")).stdout
    )
    assert (one["closings"]["won"], [r["process"] for r in one["by_process"]]) == (1, ["small-business-sale"])
    table = await sale.cli("report", "--owner", owner)
    assert "By sales process" in table.stdout and "small-business-sale" in table.stdout
    for process, income in (("small-business-sale", "9000.00"), ("corporate-sale", "0.00")):
        ahead = await sale.cli("forecast", "--owner", owner, "--process", process, "--json")
        assert [Decimal(r["won"]) for r in json.loads(ahead.stdout)] == [Decimal(income)], ahead.stdout
    split_forecast = json.loads(
        (await sale.cli("forecast", "--owner", owner, "--by-process", "--json")).stdout
    )
    assert {r["process"]: Decimal(r["won"]) for r in split_forecast} == {
        "corporate-sale": Decimal(0),
        "small-business-sale": Decimal(9000),
    }, split_forecast
    whole = json.loads((await sale.cli("forecast", "--owner", owner, "--json")).stdout)
    assert [Decimal(r["won"]) for r in whole] == [Decimal(9000)] and "process" not in whole[0]

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


@pytest.mark.usefixtures("start_setting")
async def test_a_lead_starts_the_process_its_rule_picks(sale: Sale) -> None:
    kind = f"smb-{uuid.uuid4().hex[:8]}"
    rules = []
    for extra in ([], ["--budget-under", "1000"]):
        rule = ["small-business-sale", "--type", kind + str(len(extra)), *extra, "--json"]
        added = await sale.cli("processes", "add-rule", *rule)
        assert added.code == 0, added.stderr
        rules.append(json.loads(added.stdout)["id"])
    try:
        cases = {  # the lead's type and budget -> the process its deal runs
            (kind + "0", None): "small-business-sale",
            (kind + "2", Decimal(500)): "small-business-sale",
            (kind + "2", Decimal(5000)): "corporate-sale",  # over the rule's ceiling: the default
            (None, None): "corporate-sale",
        }
        ids = {}
        async with relay(sale.pool, sale.client, sale.task_queue), sale.pool.acquire() as conn:
            for (lead_type, budget), process in cases.items():
                lead = f"L{uuid.uuid4().hex[:10]}"
                new = leads.NewLead(
                    id=lead, title="Chairs", customer="Hooli", owner="bob", lead_type=lead_type, budget=budget
                )
                await leads.add_lead(conn, new)
                await leads.move_lead(conn, lead, AWAITING)
                ids[lead] = process
            for lead, process in ids.items():
                opp = leads.opportunity_id_for(lead)
                await eventually(lambda: has_process(sale.client, opp), bool)  # noqa: B023  (awaited here)
                state = await sale.wait_stage(opp, "Qualification")
                assert state.process == process, (lead, state.process)
                shown = (await sale.handle(opp).describe()).typed_search_attributes.get(PROCESS_ATTR)
                assert shown == process
        listed = await sale.cli("processes", "rules")
        assert (
            f"{kind}0" in listed.stdout
            and "a lead no rule matches: corporate-sale (the default)" in listed.stdout
        )
    finally:
        for rule in rules:
            assert (await sale.cli("processes", "remove-rule", str(rule))).code == 0
    assert (await sale.cli("processes", "remove-rule", str(rules[0]))).code == 1  # gone


async def test_a_migration_across_processes_moves_the_deals_whose_stage_it_has_all_or_nothing(
    sale: Sale,
) -> None:
    owner = f"o{uuid.uuid4().hex[:8]}"
    fits, misses = sale.new_id(), sale.new_id()
    for opp in (fits, misses):  # through the CLI: their runs show SaleProcess
        started = await sale.cli(
            "start", "--id", opp, "--title", "Vans", "--customer", "Initech", "--owner", owner
        )
        assert started.code == 0, started.stderr
    await sale.update(misses, c.UPDATE_CHANGE_STAGE, {"stage": "Presentation", "actor": "bob"})
    where = f"process=corporate-sale owner={owner}"
    onto = ["definition", "migrate", "--process", "small-business-sale", "--to", "1", "--where", where]

    version = (await sale.state(fits)).definition_version  # the corporate sale's in force
    dry = await sale.cli(*onto, "--dry-run")
    assert dry.code == 0, dry.stderr
    assert "onto small-business-sale version 1 (a dry run)" in dry.stdout
    expected = f"{fits}: Qualification, corporate-sale {version} → small-business-sale 1: keeps none; cancels"
    assert expected in dry.stdout, dry.stdout
    assert (
        f"{misses}: refused: The small-business-sale process (version 1) has no stage 'Presentation'"
        in dry.stdout
    )
    assert (await sale.state(fits)).process == "corporate-sale"  # a dry run changes nothing

    moved = await sale.cli(*onto)
    assert moved.code == 0, moved.stderr
    assert "2 selected, 2 sent: 1 done, 1 refused, 0 skipped" in moved.stdout, moved.stdout
    state = await sale.state(fits)
    assert (state.process, state.definition_version, [t.task_id for t in state.open_tasks]) == (
        "small-business-sale", 1, [f"{fits}:v1:qualifying-call"]
    )  # fmt: skip
    assert (await sale.state(misses)).process == "corporate-sale"  # refused: as it was
    assert (await sale.opportunity(fits))["process"] == "small-business-sale"
    visit = await sale.pool.fetchrow("SELECT process, definition_version, migrated_from FROM stage_visits"
                                     " WHERE opportunity_id = $1", fits)  # fmt: skip
    assert tuple(visit) == ("small-business-sale", 1, version)
    shown = (await sale.handle(fits).describe()).typed_search_attributes.get(PROCESS_ATTR)
    assert shown == "small-business-sale"
    await journal_settled(sale, fits)
    migrated = [
        e for e in await read_events(sale.database_url, opportunity_id=fits) if e["type"].endswith("migrated")
    ]
    assert [(e["data"]["to_process"], e["process"]) for e in migrated] == [("small-business-sale",) * 2]

    # It runs the small-business sale from now on: Qualification's tasks done, on to Proposal.
    await sale.complete_stage(fits)
    assert (await sale.wait_stage(fits, "Proposal")).process == "small-business-sale"


async def test_a_definition_file_names_its_process_and_a_check_holds_it_to_it(
    sale: Sale, tmp_path: Path
) -> None:
    exported = await sale.cli("definition", "export", "--process", "small-business-sale")
    assert exported.code == 0 and json.loads(exported.stdout)["process"] == "small-business-sale"
    path = tmp_path / "small.json"
    path.write_text(exported.stdout)
    same = await sale.cli("definition", "validate", str(path), "--process", "small-business-sale")
    assert same.code == 0 and "no change against version 1" in same.stdout, same
    for command in ("validate", "publish"):
        wrong = await sale.cli("definition", command, str(path), "--process", "corporate-sale")
        assert (
            wrong.code == 1
            and "is a definition of the small-business-sale process, not of corporate-sale" in wrong.stderr
        )
    # A team the definition names must exist.
    doc = json.loads(exported.stdout)
    doc["stages"][0]["tasks"][0]["assignee"] = "team:nosuch-team"
    path.write_text(json.dumps(doc))
    missing = await sale.cli("definition", "validate", str(path))
    assert missing.code == 1 and "team 'nosuch-team' does not exist" in missing.stderr, missing
