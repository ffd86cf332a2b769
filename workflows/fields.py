"""The contract's bounded types: what a payload's names, texts, ids, times and amounts may be.
Each refuses what PostgreSQL could not store (a NUL in text, a year it cannot hold) before a
command reaches a workflow, so bad input cannot be expressed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints


def _storable(text: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it here rather than fail the database step (pydantic
    # refuses a lone surrogate already).
    if "\x00" in text:
        raise ValueError("text must not contain the NUL character")
    return text


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_storable),
]
Text = Annotated[str, StringConstraints(max_length=4000), AfterValidator(_storable)]
Identifier = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[\w.\-:]+$")
]
# A sales process's name in the process library: `corporate-sale`, `small-business-sale`, ...
DEFAULT_PROCESS = "corporate-sale"  # the process of every run and deal from before there were others
ProcessName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{0,62}$")]
# A team as a task's owner or approver: `team:legal` (`corpsale teams`).
TeamRef = Annotated[str, StringConstraints(pattern=r"^team:[a-z0-9][a-z0-9\-]{0,62}$")]
TEAM_PREFIX = "team:"
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]


def _plausible(value: datetime) -> datetime:
    # Bounded, so that every value converts to UTC and fits PostgreSQL's timestamptz.
    if not 1900 <= value.year <= 2200:
        raise ValueError("the year must be between 1900 and 2200")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


When = Annotated[datetime, AfterValidator(_plausible)]


def _plausible_day(value: date) -> date:
    if not 1900 <= value.year <= 2200:
        raise ValueError("the year must be between 1900 and 2200")
    return value


Day = Annotated[date, AfterValidator(_plausible_day)]
ForecastCategory = Literal["pipeline", "best case", "commit"]
Hours = Annotated[Decimal, Field(ge=0, max_digits=10, decimal_places=2)]
