"""The search attributes of the process's runs and of its task workflows: what ops filter by in
the Web UI (Temporal's keys; the contract's models stay plain Python)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.common import SearchAttributeKey, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

T = TypeVar("T")
log = logging.getLogger(__name__)

# Search attributes ops filter runs by in the Web UI: an opportunity's stage, owner and expected
# amount; a task's owner (`WorkflowType = 'SaleTask' AND TaskOwner = 'alice'`); the opportunity
# a run belongs to, on its process and its task workflows (`OpportunityId = 'opp-1'`), set when
# they start.
STAGE_ATTR = SearchAttributeKey.for_keyword("OpportunityStage")
OWNER_ATTR = SearchAttributeKey.for_keyword("OpportunityOwner")
AMOUNT_ATTR = SearchAttributeKey.for_float("OpportunityAmount")
TASK_OWNER_ATTR = SearchAttributeKey.for_keyword("TaskOwner")
OPPORTUNITY_ID_ATTR = SearchAttributeKey.for_keyword("OpportunityId")
# The sales process a deal's run follows (`SaleProcess = 'small-business-sale'`), set when it starts
# (by the CLI, SaleClient with a process, the lead relay) and carried on to its next runs.
PROCESS_ATTR = SearchAttributeKey.for_keyword("SaleProcess")
SEARCH_ATTRIBUTES = (STAGE_ATTR, OWNER_ATTR, AMOUNT_ATTR, TASK_OWNER_ATTR, OPPORTUNITY_ID_ATTR, PROCESS_ATTR)


async def start_with(
    attributes: TypedSearchAttributes, start: Callable[[TypedSearchAttributes], Awaitable[T]]
) -> T:
    """`start(attributes)`; in a namespace that has not registered one of them (an upgrade the
    compose job or `corpsale dev` has not seen yet), `start` again without any: a run matters
    more than what ops can filter it by."""
    try:
        return await start(attributes)
    except RPCError as err:
        if err.status != RPCStatusCode.INVALID_ARGUMENT or not any(
            key.name in err.message for key in SEARCH_ATTRIBUTES
        ):
            raise
        log.warning("search attributes not registered, started without them: %s", err.message)
        return await start(TypedSearchAttributes.empty)
