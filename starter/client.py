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

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from workflows import contract as c
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

SIGNALS: dict[type[BaseModel], str] = {
    ChangeStage: c.SIGNAL_CHANGE_STAGE,
    CompleteTask: c.SIGNAL_COMPLETE_TASK,
    UpdateOpportunity: c.SIGNAL_UPDATE_OPPORTUNITY,
    Reassign: c.SIGNAL_REASSIGN,
    AddTask: c.SIGNAL_ADD_TASK,
}
UPDATES: dict[type[BaseModel], str] = {
    ChangeStage: c.UPDATE_CHANGE_STAGE,
    CompleteTask: c.UPDATE_COMPLETE_TASK,
    UpdateOpportunity: c.UPDATE_UPDATE_OPPORTUNITY,
    Reassign: c.UPDATE_REASSIGN,
    AddTask: c.UPDATE_ADD_TASK,
}
Command = ChangeStage | CompleteTask | UpdateOpportunity | Reassign | AddTask


def _payload(command: Command) -> dict[str, Any]:
    """The command's JSON with only the fields it was given: an update of one field must not
    send the others as nulls (which would mean "clear them")."""
    return command.model_dump(mode="json", exclude_unset=True)


class CommandRefused(Exception):
    """The process refused a command; the message says why and what to do instead."""


class SaleClient:
    def __init__(self, client: Client, task_queue: str = c.DEFAULT_TASK_QUEUE) -> None:
        """`client` must use the product's data converter (`worker.config.data_converter()`)."""
        self.client, self.task_queue = client, task_queue

    @classmethod
    async def connect(
        cls, address: str | None = None, *, task_queue: str = c.DEFAULT_TASK_QUEUE
    ) -> SaleClient:
        """Connect as the worker does (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and the encryption key
        from the environment), to `address` if given."""
        from worker.config import connect_temporal

        return cls(await connect_temporal(address), task_queue)

    def handle(self, opportunity_id: str) -> WorkflowHandle[Any, StateView]:
        return self.client.get_workflow_handle(c.workflow_id(opportunity_id), result_type=StateView)

    async def start(
        self, opportunity_id: str, *, actor: str, new: NewOpportunity | None = None
    ) -> WorkflowHandle[Any, StateView]:
        """Start the process: for a new opportunity with `new` (R1), else for an existing one at
        its stage (R2). A second start while one runs raises WorkflowAlreadyStartedError (R4)."""
        summary = (
            c.start_summary(opportunity_id, new.title, new.customer)
            if new
            else c.start_summary(opportunity_id)
        )
        return await self.client.start_workflow(
            "CorporateSale",
            StartProcess(opportunity_id=opportunity_id, actor=actor, new=new),
            id=c.workflow_id(opportunity_id),
            task_queue=self.task_queue,
            result_type=StateView,
            static_summary=summary,
        )

    async def state(self, opportunity_id: str) -> StateView:
        state: StateView = await self.handle(opportunity_id).query(
            c.QUERY_STATE, result_type=StateView, rpc_timeout=timedelta(seconds=10)
        )
        return state

    async def send(self, opportunity_id: str, command: Command) -> StateView:
        """The command as an update: the new state, or CommandRefused."""
        try:
            state: StateView = await self.handle(opportunity_id).execute_update(
                UPDATES[type(command)], _payload(command), result_type=StateView
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "CommandRefused":
                raise CommandRefused(cause.message) from None
            raise
        return state

    async def signal(self, opportunity_id: str, command: Command) -> None:
        """The command as a signal: applied in order, a refusal recorded in `state().rejected`."""
        await self.handle(opportunity_id).signal(SIGNALS[type(command)], _payload(command))

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
