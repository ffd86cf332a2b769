"""The search attributes of the process's runs and of its task workflows: what ops filter by in
the Web UI (Temporal's keys; the contract's models stay plain Python)."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

# Search attributes ops filter runs by in the Web UI: an opportunity's stage, owner and expected
# amount; a task's owner (`WorkflowType = 'SaleTask' AND TaskOwner = 'alice'`); the opportunity
# a run belongs to, on its process and its task workflows (`OpportunityId = 'opp-1'`), set when
# they start.
STAGE_ATTR = SearchAttributeKey.for_keyword("OpportunityStage")
OWNER_ATTR = SearchAttributeKey.for_keyword("OpportunityOwner")
AMOUNT_ATTR = SearchAttributeKey.for_float("OpportunityAmount")
TASK_OWNER_ATTR = SearchAttributeKey.for_keyword("TaskOwner")
OPPORTUNITY_ID_ATTR = SearchAttributeKey.for_keyword("OpportunityId")
SEARCH_ATTRIBUTES = (STAGE_ATTR, OWNER_ATTR, AMOUNT_ATTR, TASK_OWNER_ATTR, OPPORTUNITY_ID_ATTR)


def unregistered(message: str) -> bool:
    """Whether a start was refused for a search attribute the namespace has not registered."""
    return any(key.name in message for key in SEARCH_ATTRIBUTES)
