"""The expected close date, straight against the plain core: when its deadline is (the next day
begins, UTC), that a date the owner was told of, or a closed deal, has none; and the forecast's
default periods."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from starter.forecast import default_range
from tests.unit.test_rules import PROCESS
from workflows.contract import UpdateOpportunity
from workflows.state import SaleState


def test_a_close_date_passes_when_the_next_day_begins_and_is_told_once() -> None:
    state = SaleState(opportunity_id="o1", stage="Proposal", process=PROCESS, data={})
    assert state.close_date_deadline() is None
    state.data = {"expected_close_date": "2030-02-15"}
    assert state.close_date_deadline() == datetime(2030, 2, 16, tzinfo=UTC)
    state.close_date_noticed = "2030-02-15"
    assert state.close_date_deadline() is None  # told of this date already
    state.data = {"expected_close_date": "2030-03-31"}
    assert state.close_date_deadline() == datetime(2030, 4, 1, tzinfo=UTC)  # a new date: a new notice
    state.closed = True
    assert state.close_date_deadline() is None


def test_the_close_date_and_category_are_checked_as_data() -> None:
    update = UpdateOpportunity.model_validate(
        {"expected_close_date": "2030-02-15", "forecast_category": "best case"}
    )
    assert update.changes() == {"expected_close_date": "2030-02-15", "forecast_category": "best case"}
    with pytest.raises(ValidationError, match="forecast_category"):
        UpdateOpportunity.model_validate({"forecast_category": "maybe"})
    with pytest.raises(ValidationError, match="year must be between 1900 and 2200"):
        UpdateOpportunity.model_validate({"expected_close_date": "2999-01-01"})


def test_the_forecast_starts_at_the_current_period_and_runs_a_year() -> None:
    assert default_range("quarter", date(2030, 5, 20)) == (date(2030, 4, 1), date(2031, 3, 31))
    assert default_range("month", date(2030, 5, 20)) == (date(2030, 5, 1), date(2031, 4, 30))
