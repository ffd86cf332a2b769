"""Bulk commands' plain rules, without a server: what `--where` selects, and the request id each
opportunity's command carries (the same on every retry, always a valid request id). End to end:
tests/test_bulk.py."""

from __future__ import annotations

import pytest

from activities.data.bulk import parse_where
from workflows.contract import UpdateOpportunity, bulk_request_id
from workflows.operations import Selection
from workflows.refusals import Refused


@pytest.mark.parametrize(
    ("text", "selection"),
    [
        ("stage=Proposal", Selection(stage="Proposal")),
        ("owner=alice  version=4", Selection(owner="alice", version=4)),
        ("owner=alice,quiet>=90", Selection(owner="alice", quiet_days=90)),
        ("stage='Closed lost' owner=bob", Selection(stage="Closed lost", owner="bob")),
        ("", Selection()),
    ],
)
def test_where_reads_its_terms(text: str, selection: Selection) -> None:
    assert parse_where(text) == selection


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("colour=red", "cannot read 'colour=red'"),
        ("owner>=alice", "write owner=VALUE"),
        ("quiet=90", "write quiet>=DAYS"),
        ("version=four", "version takes a whole number"),
        ("quiet>=-1", "quiet takes a whole number"),
        ("owner=a owner=b", "owner is named twice"),
        ("version=999999999", "version takes a whole number"),
    ],
)
def test_where_refuses_what_it_cannot_read(text: str, says: str) -> None:
    with pytest.raises(Refused, match=says):
        parse_where(text)


def test_a_bulk_request_id_is_the_same_each_time_and_always_a_valid_request_id() -> None:
    assert bulk_request_id("ab12", "opp-7") == "bulk-ab12-opp-7" == bulk_request_id("ab12", "opp-7")
    long_ids = ["x" * 100, "x" * 99 + "y"]
    made = {bulk_request_id("0123456789ab", o) for o in long_ids}
    assert len(made) == 2
    for request_id in made:
        assert len(request_id) <= 100
        UpdateOpportunity(actor="alice", request_id=request_id)  # the contract takes it
