"""The webhooks' plain rules, without a server: which events a subscriber's patterns take, what
an address and a secret must be, the wait before each retry, and the signature (checked with the
Standard Webhooks library, not the product's code). End to end: tests/test_webhooks.py."""

from __future__ import annotations

import fnmatch
import json
import time

import pytest
from standardwebhooks import Webhook

from activities.data.webhooks import _like, check_url, event_patterns, new_secret, signing_key
from worker.webhook_relay import Policy, WebhookRelay
from workflows.event_data import EVENTS
from workflows.refusals import Refused


def test_patterns_name_event_types_and_each_matches_one() -> None:
    assert event_patterns("stage.*, opportunity.won") == ["stage.*", "opportunity.won"]
    assert event_patterns("com.corpsale.task.created") == ["task.created"]
    assert fnmatch.filter(EVENTS, "*") == list(EVENTS)
    for wrong in ("stage.left", "opportunity", "", " , "):
        with pytest.raises(Refused):
            event_patterns(wrong)


@pytest.mark.parametrize(
    ("pattern", "like"),
    [("stage.*", "stage.%"), ("*", "%"), ("task.?reated", "task._reated"), ("a_b%c", "a\\_b\\%c")],
)
def test_a_pattern_reads_as_like_with_its_own_wildcards_escaped(pattern: str, like: str) -> None:
    assert _like(pattern) == like


def test_an_address_is_http_or_https_without_credentials() -> None:
    assert check_url("https://erp.example/hooks?x=1") == "https://erp.example/hooks?x=1"
    for wrong in ("ftp://erp.example/x", "erp.example/hooks", "https://", "https://u:p@erp.example/"):
        with pytest.raises(Refused):
            check_url(wrong)
    with pytest.raises(Refused, match="at most 2000"):
        check_url("https://erp.example/" + "x" * 2000)


def test_a_secret_is_whsec_and_base64_of_24_to_64_bytes() -> None:
    made = new_secret()
    assert made.startswith("whsec_") and len(signing_key(made)) == 32
    assert len(signing_key("whsec_" + "A" * 32)) == 24  # the prefix may be left out too
    assert len(signing_key("A" * 32)) == 24
    for wrong in ("hunter2", "whsec_" + "A" * 28, "whsec_" + "A" * 88, "whsec_not base64!"):
        with pytest.raises(Refused):
            signing_key(wrong)


def test_what_the_relay_posts_passes_a_standard_webhooks_check() -> None:
    """The body and headers the relay posts (its event as JSON, signed with the subscriber's key
    by the Standard Webhooks library) pass a receiver's check, and fail it under another key."""
    secret = new_secret()
    event = {"id": "opp-1:started", "subject": "opp-1", "data": {"title": "Fleet — Initech"}}
    body, headers = WebhookRelay._signed(Webhook(signing_key(secret)), event)
    assert headers["webhook-id"] == "opp-1:started" and json.loads(body) == event
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    Webhook(secret).verify(body, headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(body, headers)


def test_retries_wait_longer_each_time_half_fixed_half_random_up_to_the_cap() -> None:
    policy = Policy(attempts=6, backoff=2.0, backoff_cap=10.0)
    for attempt, full in ((1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (5, 10.0)):
        waits = [policy.retry_in(attempt) for _ in range(200)]
        assert all(w is not None and full / 2 <= w <= full for w in waits), (attempt, waits)
        assert len(set(waits)) > 100  # jitter: failed subscribers do not all come back at once
    assert policy.retry_in(6) is None  # the last attempt: the delivery is dead
    hours = sum(min(3600, 2 * 2 ** (a - 1)) for a in range(1, 20)) / 3600
    assert Policy().attempts == 20 and 4.5 < hours / 2 and hours < 9.2  # the documented 4½ to 9 hours
