"""R1, R2, R4: starting for a new opportunity, for an existing one, and only once."""

from __future__ import annotations

import json

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import WorkflowAlreadyStartedError

from tests.helpers import HAPPY_PATH_TITLES, Sale
from workflows import contract as c


async def _existing(sale: Sale, stage: str | None) -> str:
    """An opportunity created in the CRM by hand, before any process ran for it."""
    opp = sale.new_id()
    await sale.pool.execute(
        "INSERT INTO opportunities (id, title, customer, owner, stage) VALUES ($1, $2, $3, $4, $5)",
        opp,
        "Fleet renewal",
        "Initech",
        "carol",
        stage,
    )
    return opp


async def test_starting_for_an_existing_opportunity_enters_its_current_stage(sale: Sale) -> None:
    opp = await _existing(sale, "Proposal")
    await sale.start(opp, new=False)

    state = await sale.wait_stage(opp, "Proposal")

    assert state.owner == "carol" and state.visit == 1
    assert [t.title for t in state.open_tasks] == HAPPY_PATH_TITLES["Proposal"]
    assert state.data["title"] == "Fleet renewal"
    assert {t["owner"] for t in await sale.tasks(opp)} == {"carol"}
    assert [(v["stage"], v["reason"]) for v in await sale.visits(opp)] == [
        ("Proposal", "process started for this opportunity")
    ]
    assert (await sale.opportunity(opp))["probability"] == 60


async def test_an_existing_opportunity_without_a_stage_starts_in_qualification(sale: Sale) -> None:
    opp = await _existing(sale, None)
    await sale.start(opp, new=False)
    await sale.wait_stage(opp, "Qualification")


async def test_a_closed_or_unknown_opportunity_cannot_start(sale: Sale) -> None:
    closed = await _existing(sale, "Closed won")
    # R22: a start that reaches a closed opportunity ends at once, closed, writing nothing.
    state = await (await sale.start(closed, new=False)).result()
    assert (state.stage, state.closed, state.visit) == ("Closed won", True, 0)
    assert "is closed in 'Closed won'" in state.rejected[0].reason
    assert await sale.visits(closed) == [] and await sale.tasks(closed) == []

    with pytest.raises(WorkflowFailureError) as failed:
        await (await sale.start("no-such-opp", new=False)).result()
    assert "No opportunity 'no-such-opp'" in str(failed.value.cause)


async def test_a_second_start_while_the_process_runs_is_refused(sale: Sale) -> None:
    _, opp = await sale.started()
    with pytest.raises(WorkflowAlreadyStartedError):
        await sale.start(opp)

    result = await sale.cli("start", "--existing", opp)
    assert result.code == 1
    assert result.stderr.strip() == (
        f"corpsale: Opportunity {opp!r} has a running process already (workflow"
        f" opportunity-{opp}); one process per opportunity."
    )
    assert len(await sale.visits(opp)) == 1


async def test_the_cli_starts_a_new_opportunity_and_drives_it(sale: Sale) -> None:
    started = await sale.cli(
        "start",
        "--title",
        "Cloud migration",
        "--customer",
        "Umbrella",
        "--owner",
        "dave",
        "--set",
        "budget=50000",
        "--json",
    )
    assert started.code == 0, started.stderr
    state = json.loads(started.stdout)
    opp = state["opportunity_id"]
    assert state["stage"] == "Qualification" and len(state["open_tasks"]) == 2
    row = await sale.opportunity(opp)
    assert (row["title"], row["customer"], row["owner"], str(row["budget"])) == (
        "Cloud migration",
        "Umbrella",
        "dave",
        "50000.00",
    )

    moved = await sale.cli("move", opp, "Proposal", "--reason", "fast track", "--json")
    assert moved.code == 0, moved.stderr
    task = json.loads(moved.stdout)["open_tasks"][0]["task_id"]
    done = await sale.cli("complete", opp, task, "--comment", "went well")
    assert done.code == 0 and "1 of 3 done" in done.stdout
    shown = await sale.cli("show", opp)
    assert "[x] " + task in shown.stdout and "fast track" in shown.stdout
    listed = json.loads((await sale.cli("list", "--owner", "dave", "--json")).stdout)
    assert [(o["id"], o["stage"]) for o in listed] == [(opp, "Proposal")]

    bad = await sale.cli("complete", opp, task)
    assert bad.code == 1 and "is completed already" in bad.stderr
    assert "Traceback" not in bad.stderr


async def test_a_new_process_for_an_opportunity_whose_process_was_terminated_goes_on_from_there(
    sale: Sale,
) -> None:
    handle, opp = await sale.started()
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "bob"})
    await handle.terminate("ops stopped it")

    await sale.start(opp, new=False)
    state = await sale.wait_stage(opp, "Proposal", visit=3)

    visits = await sale.visits(opp)
    assert [(v["visit_no"], v["stage"]) for v in visits] == [
        (1, "Qualification"),
        (2, "Proposal"),
        (3, "Proposal"),
    ]
    assert visits[1]["left_at"] is not None
    rows = await sale.tasks(opp)
    assert sorted(r["id"] for r in rows if r["status"] == "open") == sorted(
        t.task_id for t in state.open_tasks
    )
    assert len(rows) == 2 + 3 + 3
    # Whatever the terminated run's children did or not, entering the stage canceled the rest.
    assert all(r["status"] == "canceled" for r in rows if r["visit_id"] == f"{opp}:v2")


async def test_without_a_worker_the_cli_says_so_in_one_line(sale: Sale) -> None:
    sale.task_queue = "nobody-polls-this-queue"  # the CLI starts it where no worker listens
    started = await sale.cli(
        "start",
        "--title",
        "T",
        "--customer",
        "C",
        "--owner",
        "o",
        "--id",
        sale.new_id(),
        env={"CORPSALE_COMMAND_TIMEOUT": "2"},
    )
    assert started.code == 1 and "no worker has picked it up" in started.stderr
    opp = started.stderr.split("started opportunity-", 1)[1].split(",", 1)[0]
    moved = await sale.cli("move", opp, "Proposal", env={"CORPSALE_COMMAND_TIMEOUT": "2"})
    assert moved.code == 1 and "is a worker running" in moved.stderr
    assert "Traceback" not in started.stderr + moved.stderr
