"""An opportunity's data fields (R14), and a new opportunity's (R1): part of the public contract
(workflows/contract.py re-exports them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from workflows.fields import Day, ForecastCategory, Money, Name, Text, When


class OpportunityFields(BaseModel):
    """The opportunity's data fields (R14). Every field is optional: updates are partial."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: Name | None = None
    customer: Name | None = None
    contact: Name | None = Field(default=None, description="The customer's contact person.")
    budget: Money | None = None
    authority: Text | None = None
    need: Text | None = None
    timeframe: Text | None = None
    decision_maker: Name | None = None
    sales_tactics: Text | None = None
    presentation_at: When | None = None
    meeting_notes: Text | None = None
    expected_amount: Money | None = None
    expected_close_date: Day | None = Field(
        default=None, description="When the deal is expected to close; its owner is told once it has passed."
    )
    forecast_category: ForecastCategory | None = Field(
        default=None, description="How sure the owner is of closing by then (omitted: pipeline)."
    )


class NewOpportunity(OpportunityFields):
    """Data of an opportunity created by starting its process (R1)."""

    title: Name
    customer: Name
    owner: Name
