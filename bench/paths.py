"""The paths a benchmark takes through the stages (`--path`), and what one opportunity's workflows
on it cost in workflow tasks and history events (read from their histories)."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.baseline import STAGE_TASKS
from workflows import contract as c
from workflows.definition import load_default_definition

STAGES = load_default_definition().stages


@dataclass(frozen=True)
class Segment:
    """One stage visit: complete the first `complete` tasks (all when None), then move to
    stage index `move_to` if set."""

    stage: int
    complete: int | None = None
    move_to: int | None = None

    def tasks(self) -> int:
        return len(STAGES[self.stage].tasks) if self.complete is None else self.complete


PATHS = {
    "happy": [Segment(0), Segment(1), Segment(2), Segment(3)],
    "revisit": [
        Segment(0),
        Segment(1),
        Segment(2, complete=1, move_to=0),
        Segment(0),
        Segment(1),
        Segment(2),
        Segment(3),
    ],
}


def workflow_ids(kind: str, run_id: str, path: list[Segment]) -> tuple[str, list[str]]:
    """The first opportunity's workflow id and those of its tasks' workflows, on `path`."""
    if kind == "corporate sale":
        opp = f"bench-{run_id}-0"
        tasks = [
            c.task_workflow_id(f"{opp}:v{visit}:{task.key}")
            for visit, segment in enumerate(path, start=1)
            for task in STAGES[segment.stage].tasks
        ]
        return c.workflow_id(opp), tasks
    wid = f"{kind}-{run_id}-0"
    tasks = [
        f"{wid}-v{visit}-t{t}"
        for visit, segment in enumerate(path, start=1)
        for t in range(STAGE_TASKS[segment.stage])
    ]
    return wid, tasks


async def history_costs(client: Client, kind: str, run_id: str, path: list[Segment]) -> dict[str, float]:
    """Workflow tasks, history events and their size, of the first opportunity's workflow and of
    its tasks'."""
    opportunity, tasks = workflow_ids(kind, run_id, path)
    costs: dict[str, float] = {}
    for label, ids in (("opportunity", [opportunity]), ("tasks", tasks)):
        events = [e for wid in ids for e in (await client.get_workflow_handle(wid).fetch_history()).events]
        costs[f"{label} workflow tasks"] = sum(
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in events
        )
        costs[f"{label} history events"] = len(events)
        costs[f"{label} history KiB"] = round(sum(e.ByteSize() for e in events) / 1024, 1)
    return costs
