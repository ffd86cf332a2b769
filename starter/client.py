"""A typed client for Python services: start an opportunity's process, send it commands, read its
state. It speaks the public contract (docs/contract.md) through Temporal, as any other service
does; services in other languages send the same JSON.

    sale = await SaleClient.connect("localhost:7233")
    await sale.start("opp-42", actor="crm-sync", new=NewOpportunity(title=..., customer=..., owner=...))
    state = await sale.change_stage("opp-42", ChangeStage(stage="Proposal", actor="bob"))
    await sale.signal("opp-42", CompleteTask(task_id="opp-42:v2:present-proposal", actor="alice"))
    print((await sale.state("opp-42")).open_tasks)

Commands sent as updates answer with the new state or raise `CommandRefused` with the reason;
commands sent as signals (`signal`) answer nothing and a refusal lands in `state().rejected`.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from tenacity import AsyncRetrying, retry_if_exception, stop_before_delay, wait_exponential

from workflows import contract as c
from workflows import signing
from workflows.contract import (
    AddTask,
    ChangeStage,
    CompleteTask,
    NewOpportunity,
    Reassign,
    StartProcess,
    StateView,
    UpdateOpportunity,
)
from workflows.search_attributes import OPPORTUNITY_ID_ATTR, PROCESS_ATTR, start_with

# Every command of the contract's table, by its model: `send` and `signal` take any of them.
UPDATES: dict[type[BaseModel], str] = {spec.model: spec.update for spec in c.COMMANDS}
Command = BaseModel


def _update_of(command: Command) -> str:
    if type(command) not in UPDATES:
        raise TypeError(
            f"{type(command).__name__} is not a command of the contract's table (contract.COMMANDS)"
        )
    return UPDATES[type(command)]


# Answers that say "not now", not "no", or leave the outcome unknown ("workflow update was
# aborted", "unexpected workflow task failure": UNAVAILABLE): the same request is sent again
# (same request id, so it is applied once) until it is answered or the time is up.
RETRY_STATUSES = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.ABORTED,
}
QUERY_TIMEOUT = timedelta(seconds=10)


def new_request_id() -> str:
    return f"r-{uuid.uuid4().hex}"


def _payload(command: Command) -> dict[str, Any]:
    """The command's JSON with only the fields it was given: an update of one field must not
    send the others as nulls (which would mean "clear them")."""
    return command.model_dump(mode="json", exclude_unset=True)


class CommandRefused(Exception):
    """The process refused a command; the message says why and what to do instead."""


class NoProcess(CommandRefused):
    """No process was ever started for the opportunity (or it does not exist)."""


class CommandUnanswered(Exception):
    """No answer in time. The command may still be applied when a worker takes it up: send it
    again with the same request id (`request_id`), which applies it once."""

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def _retryable(err: BaseException) -> bool:
    if isinstance(err, WorkflowUpdateRPCTimeoutOrCancelledError):
        return True
    if isinstance(err, WorkflowUpdateFailedError):
        cause = err.cause
        return isinstance(cause, ApplicationError) and cause.type in c.NOT_NOW
    if isinstance(err, RPCError):
        # A run whose workflow task is failing refuses updates for a moment.
        return err.status in RETRY_STATUSES or "Workflow Task in failed state" in err.message
    return False


class SaleClient:
    def __init__(
        self,
        client: Client,
        task_queue: str = c.DEFAULT_TASK_QUEUE,
        *,
        key: tuple[str, str] | None = None,
    ) -> None:
        """`client` must use the product's data converter (`worker.config.data_converter()`);
        `key` (service, secret), from `corpsale services add`, signs every command (R24)."""
        self.client, self.task_queue, self.key = client, task_queue, key

    @classmethod
    async def connect(
        cls, address: str | None = None, *, task_queue: str = c.DEFAULT_TASK_QUEUE
    ) -> SaleClient:
        """Connect as the worker does (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and the encryption key
        from the environment), to `address` if given; sign with CORPSALE_SERVICE_KEY if set."""
        from worker.config import connect_temporal, current

        return cls(await connect_temporal(address), task_queue, key=current().signing_key())

    def _signed(self, opportunity_id: str, command: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self.key is None:
            return payload
        service, secret = self.key
        workflow_id = c.workflow_id(opportunity_id)
        return signing.sign(payload, workflow_id=workflow_id, command=command, service=service, secret=secret)

    def handle(self, opportunity_id: str) -> WorkflowHandle[Any, StateView]:
        return self.client.get_workflow_handle(c.workflow_id(opportunity_id), result_type=StateView)

    async def start(
        self,
        opportunity_id: str,
        *,
        actor: str,
        new: NewOpportunity | None = None,
        process: str | None = None,
    ) -> WorkflowHandle[Any, StateView]:
        """Start the process: for a new opportunity with `new` (R1), else for an existing one at
        its stage (R2); `process`, the sales process to run (default: the deal's own, a new
        one's the library's default). Refused (CommandRefused) while one runs (R4) and for a
        closed opportunity (R22: a run that ended is only followed by another if it failed)."""
        return await start_process(
            self.client,
            StartProcess(opportunity_id=opportunity_id, actor=actor, new=new, process=process),
            task_queue=self.task_queue,
        )

    async def state(self, opportunity_id: str) -> StateView:
        state: StateView = await self.handle(opportunity_id).query(
            c.QUERY_STATE, result_type=StateView, rpc_timeout=QUERY_TIMEOUT
        )
        return state

    async def send(self, opportunity_id: str, command: Command, *, timeout: float = 60.0) -> StateView:
        """The command as an update: the new state, or CommandRefused. Sent again on its own,
        with the same request id, while the answer is "not now" (a run handing over to the
        next, a server busy); CommandUnanswered when `timeout` seconds pass without an answer."""
        return await self.execute(opportunity_id, _update_of(command), _payload(command), timeout=timeout)

    async def execute(
        self, opportunity_id: str, update: str, payload: dict[str, Any], *, timeout: float = 60.0
    ) -> StateView:
        """`send` for a payload as JSON (the CLI's): the same request id on every attempt; one is
        made up when the payload has none."""
        request_id = payload.get("request_id") or new_request_id()
        payload = self._signed(
            opportunity_id, c.COMMAND_OF_UPDATE[update], {**payload, "request_id": request_id}
        )
        handle = self.handle(opportunity_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # 0.1 s, 0.2 s ... up to 2 s between attempts, none that would end after the deadline.
        attempts = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            stop=stop_before_delay(timeout),
            reraise=True,
        )
        try:
            async for attempt in attempts:
                with attempt:
                    state: StateView = await asyncio.wait_for(
                        handle.execute_update(update, payload, id=request_id, result_type=StateView),
                        max(deadline - loop.time(), 0.001),
                    )
                    return state
        except TimeoutError:
            raise self._unanswered(opportunity_id, request_id, timeout) from None
        except (WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as err:
            if _retryable(err):  # "not now" until the time was up
                raise self._unanswered(opportunity_id, request_id, timeout) from None
            await self._refusal(opportunity_id, err)
            raise
        raise AssertionError("an attempt either answers or raises")

    @staticmethod
    def _unanswered(opportunity_id: str, request_id: str, timeout: float) -> CommandUnanswered:
        return CommandUnanswered(
            f"no answer from the process of opportunity {opportunity_id!r} within {timeout:.0f} s: is a"
            " worker running? The command may still be applied when one takes it up; to be safe, send"
            f" it again with request id {request_id!r}, which applies it once.",
            request_id,
        )

    async def _refusal(self, opportunity_id: str, err: BaseException) -> None:
        """Raise CommandRefused for an answer a person can act on."""
        if isinstance(err, WorkflowUpdateFailedError):
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == c.COMMAND_REFUSED:
                raise CommandRefused(cause.message) from None
            return
        if isinstance(err, RPCError):
            closed = await closed_stage(self.client, opportunity_id)
            if closed is not None:
                raise CommandRefused(
                    f"Opportunity {opportunity_id!r} is closed in {closed!r}; a final stage is never left"
                    " and its process takes no more commands."
                ) from None
            if err.status == RPCStatusCode.NOT_FOUND:
                raise NoProcess(
                    f"No process for opportunity {opportunity_id!r}: start it first"
                    f" (`corpsale start --existing {opportunity_id}`)."
                ) from None

    async def signal(self, opportunity_id: str, command: Command) -> str:
        """The command as a signal: applied in order, a refusal recorded in `state().rejected`.
        Returns its request id (made up when the command has none): send a retry with it."""
        name = c.COMMAND_OF_UPDATE[_update_of(command)]
        payload = _payload(command)
        payload.setdefault("request_id", new_request_id())
        await self.handle(opportunity_id).signal(name, self._signed(opportunity_id, name, payload))
        request_id: str = payload["request_id"]
        return request_id

    async def change_stage(self, opportunity_id: str, command: ChangeStage) -> StateView:
        return await self.send(opportunity_id, command)

    async def complete_task(self, opportunity_id: str, command: CompleteTask) -> StateView:
        return await self.send(opportunity_id, command)

    async def update_opportunity(self, opportunity_id: str, command: UpdateOpportunity) -> StateView:
        return await self.send(opportunity_id, command)

    async def reassign(self, opportunity_id: str, command: Reassign) -> StateView:
        return await self.send(opportunity_id, command)

    async def add_task(self, opportunity_id: str, command: AddTask) -> StateView:
        return await self.send(opportunity_id, command)


async def closed_stage(client: Client, opportunity_id: str) -> str | None:
    """The final stage the opportunity's process ended in, or None if it has not."""
    handle = client.get_workflow_handle(c.workflow_id(opportunity_id))
    try:
        desc = await handle.describe()
        if desc.status != WorkflowExecutionStatus.COMPLETED:
            return None
        state = await handle.query(c.QUERY_STATE, result_type=StateView, rpc_timeout=QUERY_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError):
        return None
    return state.stage if state.closed else None


async def start_process(
    client: Client, start: StartProcess, *, task_queue: str, summary: str | None = None
) -> WorkflowHandle[Any, StateView]:
    """Start an opportunity's process (the CLI, the lead relay and SaleClient all start here).
    Temporal's id reuse policy keeps a closed opportunity closed: a new run follows only a run
    that failed, was terminated or canceled (R4, R22)."""
    opportunity_id = start.opportunity_id
    new = start.new
    if summary is None:
        summary = c.start_summary(opportunity_id, new.title if new else None, new.customer if new else None)
    pairs: list[SearchAttributePair[str]] = [SearchAttributePair(OPPORTUNITY_ID_ATTR, opportunity_id)]
    if start.process is not None:
        pairs.append(SearchAttributePair(PROCESS_ATTR, start.process))
    attributes = TypedSearchAttributes(pairs)

    async def started(search: TypedSearchAttributes) -> WorkflowHandle[Any, StateView]:
        return await client.start_workflow(
            c.WORKFLOW_TYPE,
            start,
            id=c.workflow_id(opportunity_id),
            task_queue=task_queue,
            result_type=StateView,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            static_summary=summary,
            search_attributes=search,  # its tasks' workflows carry the same (`OpportunityId = ...`)
        )

    try:
        return await start_with(attributes, started)
    except WorkflowAlreadyStartedError:
        closed = await closed_stage(client, opportunity_id)
        if closed is not None:
            raise CommandRefused(
                f"Opportunity {opportunity_id!r} is closed in {closed!r}; a final stage is never left,"
                " so its process does not start again."
            ) from None
        raise CommandRefused(
            f"Opportunity {opportunity_id!r} has a running process already (workflow"
            f" {c.workflow_id(opportunity_id)}); one process per opportunity."
        ) from None


async def read_events(
    database_url: str, since: int = 0, opportunity_id: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """The business events after position `since` (of one opportunity), oldest first, as
    CloudEvents 1.0 dicts; the last one's `position` is where to read on from."""
    import asyncpg

    from activities.data import events

    conn = await asyncpg.connect(database_url)
    try:
        return await events.read(conn, since, opportunity_id, limit)
    finally:
        await conn.close()
