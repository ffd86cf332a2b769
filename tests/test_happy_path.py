"""R1, R5, R6, R7: a new opportunity goes from Qualification to Closed won by completing its
tasks, in any order within a stage."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from tests.helpers import HAPPY_PATH_TITLES, Sale
from worker.config import Settings
from worker.main import serving
from workflows.contract import StateView
from workflows.search_attributes import OWNER_ATTR, STAGE_ATTR


@pytest.fixture(params=[True, False], ids=["sandboxed", "as in production"])
async def worker(
    request: pytest.FixtureRequest, client: Client, pool: asyncpg.Pool, task_queue: str
) -> AsyncIterator[Worker]:
    """The happy path on both runners: in the sandbox, as the rest of the suite runs, and without
    it, as production runs (the setting's default)."""
    settings = Settings(workflow_sandbox=request.param)
    async with serving(client, pool, task_queue=task_queue, settings=settings) as worker:
        runner = worker.config()["workflow_runner"]
        assert isinstance(runner, SandboxedWorkflowRunner if request.param else UnsandboxedWorkflowRunner)
        yield worker


async def test_new_opportunity_enters_qualification_with_its_tasks(sale: Sale) -> None:
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    state = await sale.wait_stage(opp, "Qualification")

    assert [t.title for t in state.open_tasks] == HAPPY_PATH_TITLES["Qualification"]
    assert all(t.owner == "alice" and t.due_at > t.start_at for t in state.open_tasks)
    row = await sale.opportunity(opp)
    assert (row["stage"], row["probability"], row["owner"]) == ("Qualification", 10, "alice")
    tasks = await sale.tasks(opp)
    assert [(t["title"], t["status"], t["owner"]) for t in tasks] == [
        (title, "open", "alice") for title in HAPPY_PATH_TITLES["Qualification"]
    ]
    notes = await sale.notifications(opp)
    assert sorted(n["task_id"] for n in notes) == sorted(t["id"] for t in tasks)
    assert all(n["recipient"] == "alice" and n["kind"] == "task_assigned" for n in notes)
    visits = await sale.visits(opp)
    assert [(v["stage"], v["entered_by"], v["reason"]) for v in visits] == [
        ("Qualification", "operator", "new opportunity")
    ]
    # R15: what ops read in the Web UI: the search attributes and the run's current detail.
    attrs = (await handle.describe()).typed_search_attributes
    assert (attrs.get(STAGE_ATTR), attrs.get(OWNER_ATTR)) == ("Qualification", "alice")
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    first_due = min(t.due_at for t in state.open_tasks)
    assert metadata.current_details == (
        f"Qualification: 0 of 2 tasks done, next due {first_due:%Y-%m-%d %H:%M} UTC; to fill in: budget,"
        " authority, need, timeframe, decision_maker, sales_tactics, presentation_at"
    )


async def test_completing_every_task_walks_the_stages_to_closed_won(sale: Sale) -> None:
    handle, opp = await sale.started()

    seen: dict[str, list[str]] = {}
    state: StateView = await sale.state(opp)
    while not state.closed:
        stage = state.stage
        seen[stage] = [t.title for t in state.open_tasks]
        # R6: any order within the stage: last task first.
        for task in reversed(state.open_tasks):
            state = await sale.complete(opp, task.task_id)

    assert seen == HAPPY_PATH_TITLES
    assert state.stage == "Closed won" and state.closed and state.open_tasks == []
    result = await handle.result()
    assert result.stage == "Closed won"
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED

    row = await sale.opportunity(opp)
    assert (row["stage"], row["probability"]) == ("Closed won", 100)
    assert row["closed_at"] is not None
    tasks = [t for t in await sale.tasks(opp) if t["kind"] == "process"]
    assert len(tasks) == 9 and {t["status"] for t in tasks} == {"completed"}
    assert {t["outcome"] for t in tasks} == {"done", "approved", "signed"}
    follow_up = [t for t in await sale.tasks(opp) if t["kind"] == "follow-up"]  # R13
    assert [t["status"] for t in follow_up] == ["open", "open"]
    visits = await sale.visits(opp)
    assert [v["stage"] for v in visits] == [*HAPPY_PATH_TITLES, "Closed won"]
    assert all(v["left_at"] is not None for v in visits)
    kinds = [n["kind"] for n in await sale.notifications(opp)]
    assert kinds.count("task_assigned") == 9 + 2 and kinds.count("closed_won") == 1
