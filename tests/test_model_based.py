"""A stateful property-based test: random sequences of commands, valid and not, sent as
signals and as updates to a real run; after every step the run's `state` and the database
must agree with a small reference model of the spec's rules (R6 to R12, R18, R21, R23). Runs
hand over often (every 100 events or 10 updates), with ad-hoc tasks kept open across."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Worker

from tests.helpers import Sale, assert_replays, eventually
from workflows import contract as c
from workflows.definition import Effect, load_default_definition

DEFINITION = load_default_definition()
ORDER = ["Qualification", "Presentation", "Proposal", "Contracting", "Closed won", "Closed lost"]
FINAL = {"Closed won", "Closed lost"}
LOST = {"Closed lost"}
CLOSE_REASONS = {"No budget", "Price too high"}  # two of the lookup's (R9)
STAGE_NAMES = [*ORDER, "Negotiation"]


@dataclass
class ModelTask:
    stage: str
    visit: int
    key: str
    status: str = "open"
    adhoc: bool = False


@dataclass
class Model:
    """The spec's rules, as small as they can be said."""

    opp: str
    stage: str = "Qualification"
    visit: int = 1
    tasks: dict[str, ModelTask] = field(default_factory=dict)
    rejected: int = 0
    seen: set[str] = field(default_factory=set)  # request ids answered: applied or refused
    refused: set[str] = field(default_factory=set)  # those answered with a refusal
    recorded: set[str] = field(default_factory=set)  # refusals in `rejected` (a signal brought them)
    adhoc: int = 0
    follow_up: dict[str, str] = field(default_factory=dict)  # R13: rows only, open after the end

    def __post_init__(self) -> None:
        self._open_tasks()

    @property
    def closed(self) -> bool:
        return self.stage in FINAL

    def _open_tasks(self) -> None:
        for st_ in DEFINITION.stages:
            if st_.stage == self.stage:
                for t in st_.tasks:
                    self.tasks[f"{self.opp}:v{self.visit}:{t.key}"] = ModelTask(self.stage, self.visit, t.key)

    def enter(self, stage: str) -> None:
        for t in self.tasks.values():
            if t.status == "open" and (not t.adhoc or stage in FINAL):  # R18: closing cancels them
                t.status = "canceled"
        self.stage, self.visit = stage, self.visit + 1
        self._open_tasks()
        if stage == "Closed won":
            self.follow_up = {f"{self.opp}:followup:{t.key}": "open" for t in DEFINITION.follow_up}

    def move(self, stage: str, restart: bool, reason: str | None = None) -> bool:
        if self.closed or stage not in ORDER or (stage == self.stage and not restart):
            return False
        if stage in LOST and reason not in CLOSE_REASONS:
            return False
        self.enter(stage)
        return True

    def outcomes(self, task: ModelTask) -> list[Any]:
        stage = next(s for s in DEFINITION.stages if s.stage == task.stage)
        return list(next(t for t in stage.tasks if t.key == task.key).outcomes)

    def visit_tasks(self) -> list[ModelTask]:
        return [t for t in self.tasks.values() if t.visit == self.visit and not t.adhoc]

    def add_task(self) -> bool:
        if self.closed:
            return False
        self.adhoc += 1
        self.tasks[f"{self.opp}:adhoc{self.adhoc}"] = ModelTask(self.stage, self.visit, "adhoc", adhoc=True)
        return True

    def complete(self, task_id: str, outcome: str | None) -> bool:
        task = self.tasks.get(task_id)
        if self.closed or task is None or task.status != "open":
            return False
        if task.adhoc:  # R18: one outcome, and it moves nothing
            task.status = "completed" if outcome in (None, "done") else task.status
            return task.status == "completed"
        options = {o.name: o for o in self.outcomes(task)}
        chosen = options.get(outcome) if outcome else self.outcomes(task)[0]
        if chosen is None:
            return False
        task.status = "completed"
        if chosen.effect is Effect.MOVE:
            self.enter(chosen.stage)
        elif all(t.status == "completed" for t in self.visit_tasks()):
            self.enter(ORDER[ORDER.index(self.stage) + 1])
        return True


class SaleMachine(RuleBasedStateMachine):
    """Drives one opportunity per example from a thread of its own with its own event loop."""

    target_host: str
    database_url: str
    task_queue: str
    opened: list[str]  # every example's opportunity, replayed at the end

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.client = self.run(Client.connect(self.target_host, data_converter=pydantic_data_converter))
        self.pool = self.run(asyncpg.create_pool(self.database_url, min_size=1, max_size=2))
        self.sale = Sale(self.client, self.pool, self.task_queue, self.database_url)
        self.model: Model | None = None
        self.last: tuple[str, dict[str, Any]] | None = None

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.pool.close())
        self.loop.close()

    @initialize()
    def start(self) -> None:
        handle = self.run(self.sale.start(continue_as_new_after_events=100, continue_as_new_after_updates=10))
        self.opp = handle.id.removeprefix("opportunity-")
        self.opened.append(self.opp)
        self.model = Model(self.opp)
        self.run(self.sale.wait_stage(self.opp, "Qualification"))

    def send(self, name: str, payload: dict[str, Any], accepted: bool, as_update: bool) -> None:
        """Send a command the model has judged. R23: its request id is spent with the answer,
        applied or refused; a later delivery gets that answer again and changes nothing."""
        assert self.model is not None
        self.last = (name, payload)
        request_id = payload.get("request_id")
        if request_id is not None:
            self.model.seen.add(request_id)
            if not accepted:
                self.model.refused.add(request_id)
                if not as_update:
                    self.model.recorded.add(request_id)
        self.deliver(name, payload, accepted, as_update, records_refusal=True)

    def deliver(
        self, name: str, payload: dict[str, Any], accepted: bool, as_update: bool, *, records_refusal: bool
    ) -> None:
        if as_update:
            try:
                self.run(self.sale.update(self.opp, name + "_update", payload))
                assert accepted, f"{name} {payload} was accepted; the model refuses it"
            except WorkflowUpdateFailedError as err:
                assert not accepted, f"{name} {payload} was refused: {err.cause}"
        else:
            assert self.model is not None
            self.run(self.sale.signal(self.opp, name, payload))
            if not accepted and records_refusal:
                self.model.rejected += 1

    def request_id(self, payload: dict[str, Any], with_id: bool) -> dict[str, Any]:
        if with_id:
            payload["request_id"] = f"r-{uuid.uuid4().hex[:8]}"
        return payload

    @precondition(lambda self: self.model is not None and not self.model.closed)
    @rule(
        stage=st.sampled_from(STAGE_NAMES),
        restart=st.booleans(),
        reason=st.sampled_from([None, "No budget", "Price too high", "made up"]),
        as_update=st.booleans(),
        with_id=st.booleans(),
    )
    def change_stage(
        self, stage: str, restart: bool, reason: str | None, as_update: bool, with_id: bool
    ) -> None:
        assert self.model is not None
        payload = self.request_id({"stage": stage, "actor": "alice", "restart": restart}, with_id)
        if reason is not None:
            payload["reason"] = reason
        self.send(c.SIGNAL_CHANGE_STAGE, payload, self.model.move(stage, restart, reason), as_update)

    @precondition(lambda self: self.model is not None and not self.model.closed)
    @rule(
        pick=st.integers(min_value=0),
        outcome=st.sampled_from(
            [None, None, "approved", "changes requested", "rejected", "signed", "declined", "bogus"]
        ),
        as_update=st.booleans(),
        with_id=st.booleans(),
    )
    def complete_task(self, pick: int, outcome: str | None, as_update: bool, with_id: bool) -> None:
        assert self.model is not None
        ids = [*self.model.tasks, f"{self.opp}:v99:nope"]
        task_id = ids[pick % len(ids)]
        payload = self.request_id({"task_id": task_id, "actor": "alice"}, with_id)
        if outcome:
            payload["outcome"] = outcome
        self.send(c.SIGNAL_COMPLETE_TASK, payload, self.model.complete(task_id, outcome), as_update)

    @precondition(lambda self: self.model is not None and not self.model.closed)
    @rule(
        budget=st.one_of(st.integers(min_value=-5, max_value=10**9), st.just("lots")),
        need=st.text(max_size=30),
        as_update=st.booleans(),
    )
    def update_opportunity(self, budget: Any, need: str, as_update: bool) -> None:
        payload = {"budget": budget, "need": need}
        accepted = isinstance(budget, int) and 0 <= budget < 10**12 and "\x00" not in need
        self.send(c.SIGNAL_UPDATE_OPPORTUNITY, payload, accepted, as_update)

    @precondition(lambda self: self.model is not None and not self.model.closed)
    @rule(as_update=st.booleans(), with_id=st.booleans())
    def add_task(self, as_update: bool, with_id: bool) -> None:
        """R18: an ad-hoc task, which stays open across stage changes and hand-overs."""
        assert self.model is not None
        payload = self.request_id({"title": "Follow up", "actor": "alice"}, with_id)
        self.send(c.SIGNAL_ADD_TASK, payload, self.model.add_task(), as_update)

    @precondition(
        lambda self: (
            self.last is not None
            and "request_id" in self.last[1]
            and self.model is not None
            and not self.model.closed
        )
    )
    @rule(as_update=st.booleans())
    def duplicate(self, as_update: bool) -> None:
        """The last command again, with its request id (R23): the answer it had, and no change: an
        applied one answers success, a refused one the same refusal (recorded in `rejected` once,
        by the first signal that brings it)."""
        assert self.last is not None and self.model is not None
        name, payload = self.last
        request_id = payload["request_id"]
        refused = request_id in self.model.refused
        first_record = refused and not as_update and request_id not in self.model.recorded
        if first_record:
            self.model.recorded.add(request_id)
        self.deliver(name, payload, not refused, as_update, records_refusal=first_record)

    @precondition(lambda self: self.model is not None and self.model.closed)
    @rule(stage=st.sampled_from(STAGE_NAMES))
    def move_after_close(self, stage: str) -> None:
        """R9: nothing moves a closed opportunity; its process has ended."""
        with pytest.raises((WorkflowUpdateFailedError, RPCError)):
            self.run(self.sale.update(self.opp, c.UPDATE_CHANGE_STAGE, {"stage": stage, "actor": "p"}))

    @invariant()
    def run_and_database_agree_with_the_model(self) -> None:
        model = self.model
        if model is None:
            return
        expected_open = sorted(i for i, t in model.tasks.items() if t.status == "open")

        def matches(s: c.StateView) -> bool:
            return (s.stage, s.visit, s.closed, len(s.rejected)) == (
                model.stage,
                model.visit,
                model.closed,
                min(model.rejected, 100),
            ) and sorted(t.task_id for t in s.open_tasks) == expected_open

        self.run(eventually(lambda: self.sale.state(self.opp), matches))
        rows = self.run(self.sale.tasks(self.opp))
        assert {r["id"]: r["status"] for r in rows} == {
            **{i: t.status for i, t in model.tasks.items()},
            **model.follow_up,
        }
        assert self.run(self.sale.opportunity(self.opp))["stage"] == model.stage
        visits = self.run(self.sale.visits(self.opp))
        assert [v["visit_no"] for v in visits] == list(range(1, model.visit + 1))


@pytest.mark.parametrize("examples", [12])
async def test_random_command_sequences_follow_the_rules(
    client: Client,
    pool: asyncpg.Pool,
    database_url: str,
    worker: Worker,
    task_queue: str,
    examples: int,
) -> None:
    SaleMachine.target_host = client.service_client.config.target_host
    SaleMachine.database_url = database_url
    SaleMachine.task_queue = task_queue
    SaleMachine.opened = []
    machine = SaleMachine.TestCase
    machine.settings = settings(
        max_examples=examples,
        stateful_step_count=12,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    await asyncio.to_thread(machine().runTest)
    # Each run, as commands and hand-overs interleaved in it, replays from its history.
    assert await assert_replays(client, SaleMachine.opened) > len(SaleMachine.opened)
