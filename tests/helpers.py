"""What the tests do to a process and read back, through Temporal and PostgreSQL."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from starter.client import read_events
from worker.main import SANDBOX, WORKFLOWS
from workflows import contract as c
from workflows.contract import NewOpportunity, StateView
from workflows.state import ProcessInput

T = TypeVar("T")

# Whoever runs the tests operates the CLI, as an admin (tests/conftest.py makes them one): the
# actor of commands that only the owner, their manager or an admin may send (R24).
ADMIN = getpass.getuser()

HAPPY_PATH_TITLES = {
    "Qualification": [
        "Contact the client, assess the needs, coordinate the date and time of the presentation",
        "Prepare presentation",
    ],
    "Presentation": ["Presentation"],
    "Proposal": [
        "Present the proposal",
        "Contact the client to obtain comments and approval of the proposal",
        "Prepare and approve the contract within the company",
    ],
    "Contracting": [
        "Send the contract to the client",
        "Contact the client to clarify the contract status and the date to receive comments",
        "Approve and sign the contract with the client",
    ],
}


SCHEMAS = Path(__file__).parent.parent / "docs" / "schemas"


def assert_events_keep_the_contract(found: Sequence[dict[str, Any]]) -> None:
    """Each event's data is what its schema in docs/schemas says, formats included (a time is
    RFC 3339: `2030-05-04T10:00:00+00:00`, not `2030-05-04 10:00:00+00:00`), every task event
    names its task by `task_id`, and within an opportunity no event's time is before that of
    the event numbered before it."""
    from datetime import datetime

    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker()
    assert "date-time" in checker.checkers, "the date-time format goes unchecked: install rfc3339-validator"
    for event in found:
        kind = event["type"].removeprefix("com.corpsale.")
        schema = json.loads((SCHEMAS / f"event.{kind}.schema.json").read_text())
        problems = [
            e.message for e in Draft202012Validator(schema, format_checker=checker).iter_errors(event["data"])
        ]
        assert not problems, (event["id"], problems, event["data"])
        if kind.startswith("task."):
            assert "task_id" in event["data"], event
    last: dict[str, tuple[int, datetime]] = {}
    for event in sorted(found, key=lambda e: (e["subject"], e["sequence"])):
        at = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
        before = last.get(event["subject"])
        assert before is None or before[1] <= at, (event["subject"], before, event["sequence"], at)
        last[event["subject"]] = (event["sequence"], at)


async def eventually(
    probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], *, timeout: float = 20.0
) -> T:
    """Poll `probe` until `check` holds; fail with the last value seen."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.1)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


class Sale:
    def __init__(self, client: Client, pool: asyncpg.Pool, task_queue: str, database_url: str) -> None:
        self.client, self.pool, self.task_queue = client, pool, task_queue
        self.database_url = database_url

    def cli_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TEMPORAL_ADDRESS": self.client.service_client.config.target_host,
            "DATABASE_URL": self.database_url,
            "CORPSALE_TASK_QUEUE": self.task_queue,
        }

    def worker_env(self, **settings: str) -> dict[str, str]:
        """A worker process's environment (tests/processes.py), with `settings` (CORPSALE_...)."""
        return {**self.cli_env(), "PYTHONPATH": os.getcwd(), **settings}

    async def cli(self, *args: str, env: dict[str, str] | None = None) -> CliResult:
        """Run `corpsale` as an operator would: a process of its own."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starter.cli",
            *args,
            env={**self.cli_env(), **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return CliResult(proc.returncode, out.decode(), err.decode())

    @asynccontextmanager
    async def definition(self, change: Callable[[dict[str, Any]], None]) -> AsyncIterator[int]:
        """Publish the definition in force as `change` edits it; publish the original again at the
        end (publishing changes what every later new run does). Yields the new version."""
        exported = await self.cli("definition", "export")
        assert exported.code == 0, exported.stderr
        changed = json.loads(exported.stdout)
        change(changed)
        with tempfile.TemporaryDirectory() as folder:
            edited, original = Path(folder, "edited.json"), Path(folder, "original.json")
            edited.write_text(json.dumps(changed))
            original.write_text(exported.stdout)
            published = await self.cli("definition", "publish", str(edited))
            assert published.code == 0 and "published version" in published.stdout, published
            try:
                yield int(published.stdout.split()[2].rstrip(":"))
            finally:
                restored = await self.cli("definition", "publish", str(original))
                assert restored.code == 0, restored.stderr

    def new_id(self) -> str:
        return f"opp-{uuid.uuid4().hex[:12]}"

    async def start(
        self,
        opportunity_id: str | None = None,
        *,
        new: bool = True,
        owner: str = "alice",
        **kwargs: Any,
    ) -> WorkflowHandle[Any, StateView]:
        opportunity_id = opportunity_id or self.new_id()
        data = (
            NewOpportunity(title=f"Deal {opportunity_id}", customer="Acme Ltd", owner=owner) if new else None
        )
        return await self.client.start_workflow(
            c.WORKFLOW_TYPE,
            ProcessInput(opportunity_id=opportunity_id, actor="operator", new=data, **kwargs),
            id=c.workflow_id(opportunity_id),
            task_queue=self.task_queue,
            result_type=StateView,
        )

    async def started(self, **kwargs: Any) -> tuple[WorkflowHandle[Any, StateView], str]:
        """A new opportunity's process, once it is in Qualification with its tasks."""
        handle = await self.start(**kwargs)
        opportunity_id = handle.id.removeprefix(c.WORKFLOW_ID_PREFIX)
        await self.wait_stage(opportunity_id, "Qualification")
        return handle, opportunity_id

    def handle(self, opportunity_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(c.workflow_id(opportunity_id))

    async def state(self, opportunity_id: str) -> StateView:
        state: StateView = await self.handle(opportunity_id).query(c.QUERY_STATE, result_type=StateView)
        return state

    async def wait_stage(
        self, opportunity_id: str, stage: str, visit: int | None = None, *, timeout: float = 20.0
    ) -> StateView:
        return await eventually(
            lambda: self.state(opportunity_id),
            lambda s: (
                s.stage == stage and (visit is None or s.visit == visit) and (s.closed or s.tasks_total > 0)
            ),
            timeout=timeout,
        )

    async def update(self, opportunity_id: str, name: str, payload: Any) -> StateView:
        state: StateView = await self.handle(opportunity_id).execute_update(
            name, payload, result_type=StateView
        )
        return state

    async def signal(self, opportunity_id: str, name: str, payload: Any) -> None:
        await self.handle(opportunity_id).signal(name, payload)

    async def complete(self, opportunity_id: str, task_id: str, **extra: Any) -> StateView:
        """Complete a task as the opportunity's owner, unless `actor` says who."""
        actor = extra.pop("actor", None) or (await self.state(opportunity_id)).owner
        return await self.update(
            opportunity_id, c.UPDATE_COMPLETE_TASK, {"task_id": task_id, "actor": actor, **extra}
        )

    async def complete_stage(self, opportunity_id: str) -> StateView:
        state = await self.state(opportunity_id)
        stage = state.stage
        for task in [t for t in state.open_tasks if t.stage == stage and not t.adhoc]:
            state = await self.complete(opportunity_id, task.task_id)
        return state

    # PostgreSQL ------------------------------------------------------------------------------

    async def opportunity(self, opportunity_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow("SELECT * FROM opportunities WHERE id = $1", opportunity_id)
        assert row is not None, f"no opportunity row {opportunity_id}"
        return row

    async def tasks(self, opportunity_id: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT * FROM tasks WHERE opportunity_id = $1 ORDER BY start_at, id", opportunity_id
        )
        return rows

    async def visits(self, opportunity_id: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT * FROM stage_visits WHERE opportunity_id = $1 ORDER BY visit_no",
            opportunity_id,
        )
        return rows

    async def notifications(self, opportunity_id: str, kind: str | None = None) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT * FROM notifications WHERE opportunity_id = $1 AND ($2::text IS NULL OR kind = $2)"
            " ORDER BY created_at, id",
            opportunity_id,
            kind,
        )
        return rows


async def journal_settled(sale: Sale, opportunity_id: str, *, timeout: float = 60.0) -> None:
    """Wait until every write of the opportunity's process is confirmed (or undone) and every task
    workflow operation carried out (activities/data/journal.py, worker/journal_relay.py)."""

    async def left() -> int:
        return int(
            await sale.pool.fetchval(
                "SELECT (SELECT count(*) FROM journal WHERE opportunity_id = $1)"
                " + (SELECT count(*) FROM task_ops WHERE opportunity_id = $1)",
                opportunity_id,
            )
        )

    try:
        await eventually(left, lambda n: n == 0, timeout=timeout)
    except AssertionError:
        rows = await sale.pool.fetch(
            "SELECT 'journal' AS what, number, step, run_no, history_length, NULL AS kind FROM journal"
            " WHERE opportunity_id = $1 UNION ALL SELECT 'op', number, NULL, NULL, NULL, kind"
            " FROM task_ops WHERE opportunity_id = $1 ORDER BY 2",
            opportunity_id,
        )
        head = await sale.pool.fetchrow("SELECT * FROM projections WHERE opportunity_id = $1", opportunity_id)
        left_over = [dict(r) for r in rows]
        raise AssertionError(
            f"{opportunity_id}: not confirmed within {timeout} s: {left_over}; head {dict(head or {})}"
        ) from None


async def assert_the_database_is_the_runs(
    sale: Sale, opportunity_id: str, *, never: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """PostgreSQL holds what the run decided and nothing else (R28): once its writes are confirmed,
    the rows of its visits, tasks and notifications are those its events (the feed, confirmed
    decisions only) report, the run's state agrees on where it is, each task has its workflow, and
    no task of `never` (a lost attempt's) has a row, an event or a workflow. Returns the events."""
    await journal_settled(sale, opportunity_id)
    events = await read_events(sale.database_url, opportunity_id=opportunity_id)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    entered = [
        (e["data"]["visit"], e["data"]["stage"]) for e in events if e["type"].endswith("stage.entered")
    ]
    visits = [(v["visit_no"], v["stage"]) for v in await sale.visits(opportunity_id)]
    assert visits == entered, f"visits {visits} but the feed says {entered}"
    state = await sale.state(opportunity_id)
    assert (state.visit, state.stage) == visits[-1], (
        f"the run is at {state.visit, state.stage}, PostgreSQL {visits[-1]}"
    )
    stage_of = dict(visits)
    tasks = {t["id"]: t for t in await sale.tasks(opportunity_id)}
    created = [e["data"]["task_id"] for e in events if e["type"].endswith("task.created")]
    assert sorted(created) == sorted(tasks), "tasks and their task.created events differ"
    ended = {
        e["data"]["task_id"]: e["type"].rsplit(".", 1)[1]
        for e in events
        if e["type"].endswith(("task.completed", "task.canceled"))
    }
    for task_id, task in tasks.items():
        visit = int(task["visit_id"].rsplit(":v", 1)[1])
        assert task["stage"] == stage_of[visit], (
            f"{task_id} is a {task['stage']} task in a {stage_of[visit]} visit"
        )
        assert ended.get(task_id, "open") == task["status"], (
            f"{task_id}: {task['status']}, events {ended.get(task_id)}"
        )
    assigned = [n["task_id"] for n in await sale.notifications(opportunity_id, "task_assigned")]
    assert sorted(assigned) == sorted(tasks), "one task_assigned notification per task"
    open_in_run = {t.task_id for t in state.open_tasks}  # a won deal's follow-ups are PostgreSQL's alone
    open_rows = {i for i, t in tasks.items() if t["status"] == "open" and t["kind"] != "follow-up"}
    assert open_in_run == open_rows, (
        f"open in the run only {open_in_run - open_rows}, in PostgreSQL only {open_rows - open_in_run}"
    )
    for task_id, task in tasks.items():  # every task has its workflow, open while the task is
        # Told, it ends once a worker takes its workflow task (after a worker killed, its sticky
        # queue's time-out first).
        workflow = sale.client.get_workflow_handle(c.task_workflow_id(task_id))
        want_running = task["status"] == "open" or task["kind"] == "follow-up"
        try:
            await eventually(
                workflow.describe,
                lambda d, want=want_running: (d.status == WorkflowExecutionStatus.RUNNING) == want,  # type: ignore[misc]
            )
        except AssertionError:
            seen = [e.WhichOneof("attributes") async for e in workflow.fetch_history_events()]
            raise AssertionError(f"{task_id} is {task['status']}, its workflow: {seen}") from None
    for task_id in never:
        assert task_id not in tasks and task_id not in created
        with pytest.raises(RPCError) as missing:
            await sale.client.get_workflow_handle(c.task_workflow_id(task_id)).describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND, task_id
    checked = await sale.cli("check", opportunity_id)
    assert checked.code == 0, checked.stdout + checked.stderr
    return events


async def assert_replays(client: Client, opportunity_ids: list[str]) -> int:
    """Replay every run of these opportunities' processes, and of their task workflows, against
    the code as the worker runs it: what a run did must be what its code does again from its
    history (a difference would stop the run at its next replay). Returns how many replayed."""
    ids = " OR ".join(
        f"WorkflowId = '{c.workflow_id(o)}' OR WorkflowId STARTS_WITH 'task-{o}:'" for o in opportunity_ids
    )
    histories = [h async for h in client.list_workflows(ids).map_histories()]
    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=pydantic_data_converter,
        workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX),
    )
    replayed = 0

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    async with replayer.workflow_replay_iterator(each()) as results:
        async for result in results:
            if result.replay_failure is not None:  # kept, to replay and read again
                history = histories[replayed]
                kept = Path(tempfile.gettempdir(), "corpsale-replay-failures", f"{history.workflow_id}.json")
                kept.parent.mkdir(exist_ok=True)
                kept.write_text(history.to_json())
                failure = result.replay_failure
                raise AssertionError(
                    f"{history.workflow_id} does not replay (its history: {kept}): {failure!r}"
                )
            replayed += 1
    return replayed
