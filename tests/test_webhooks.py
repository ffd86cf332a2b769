"""Webhooks, end to end (real Temporal, real PostgreSQL, a real HTTP receiver): every event of
every opportunity reaches each subscriber that wants it, in order per opportunity, each id taken
once, every signature good: through a receiver that fails, hangs and stops, two relays at once
and a worker killed meanwhile. A paused subscriber gets nothing until resumed, then everything; a
dead one stops, is reported, and goes on with `retry`; `replay` sends events again with their
ids; `corpsale webhooks` refuses what is wrong with one line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import Client

from starter.client import read_events
from tests.helpers import Sale, eventually, journal_settled
from tests.processes import worker_process
from tests.webhook_receiver import Receiver
from worker.webhook_relay import Policy, WebhookRelay
from workflows import contract as c

SECRET = "whsec_" + "c2VjcmV0IGtleSBvZiB0aGUgdGVzdHMgKDMyIGJ5dGVzKQ=="

IN_FLIGHT = 0.5  # seconds a post sent by a worker as it is killed may take to reach the receiver


async def _won(sale: Sale, opp: str, tag: str) -> None:
    """A deal through data, an ad-hoc task, a reassignment, two stages and its contract."""
    steps: list[tuple[str, dict[str, Any]]] = [
        (c.UPDATE_UPDATE_OPPORTUNITY, {"budget": 1000, "actor": "alice"}),
        (c.UPDATE_ADD_TASK, {"title": "Call", "actor": "alice"}),
        (c.UPDATE_REASSIGN, {"owner": "bob", "actor": "alice"}),
        (c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "bob"}),
        (c.UPDATE_CHANGE_STAGE, {"stage": "Contracting", "actor": "bob"}),
    ]
    for n, (update, payload) in enumerate(steps):
        await sale.update(opp, update, payload | {"request_id": f"{tag}{n}"})
    visit = (await sale.state(opp)).visit
    for key in ("send-contract", "contract-status", "sign-contract"):
        done: dict[str, Any] = {
            "task_id": f"{opp}:v{visit}:{key}",
            "actor": "bob",
            "request_id": f"{tag}{key}",
        }
        if key == "sign-contract":
            done |= {"outcome": "signed", "actual_income": 900}
        await sale.update(opp, c.UPDATE_COMPLETE_TASK, done)


async def _subscribe(sale: Sale, url: str, *extra: str) -> str:
    added = await sale.cli("webhooks", "add", url, *extra)
    assert added.code == 0, added.stderr
    return added.stdout.rsplit("shown once): ", 1)[1].strip() if "shown once" in added.stdout else ""


async def _all_arrived(
    sale: Sale, receiver: Receiver, opps: list[str], timeout: float
) -> dict[str, list[str]]:
    """Each opportunity's event ids in the feed (once their writes are confirmed), once the
    receiver took them all."""
    for o in opps:
        await journal_settled(sale, o, timeout=timeout)

    async def feed() -> dict[str, list[str]]:
        return {o: [e["id"] for e in await read_events(sale.database_url, opportunity_id=o)] for o in opps}

    async def taken() -> bool:
        wanted = await feed()
        return all({e["id"] for e in receiver.of(o)} >= set(wanted[o]) for o in opps)

    await eventually(taken, bool, timeout=timeout)
    return await feed()


@contextlib.asynccontextmanager
async def _relay(pool: asyncpg.Pool, policy: Policy) -> AsyncIterator[None]:
    stop = asyncio.Event()
    running = asyncio.create_task(WebhookRelay(pool, policy).run(stop))
    try:
        yield
    finally:
        stop.set()
        await running


async def test_every_event_arrives_in_order_once_through_failures_kills_and_two_relays(
    client: Client, pool: asyncpg.Pool, database_url: str
) -> None:
    sale = Sale(client, pool, f"corpsale-webhooks-{uuid.uuid4()}", database_url)
    receiver = Receiver(seed=20261129, fail=0.15, hang=0.05, hang_seconds=6.0)
    await receiver.start()
    env = sale.worker_env(
        CORPSALE_WEBHOOK_TIMEOUT="3",  # a hang outlasts it; a busy machine does not
        CORPSALE_WEBHOOK_BACKOFF="0.1",
        CORPSALE_WEBHOOK_BACKOFF_CAP="1",
        CORPSALE_WEBHOOK_ATTEMPTS="1000",
    )
    receiver.trust(await _subscribe(sale, receiver.url))  # a secret made for it
    injected: list[str] = []
    killed_at: list[float] = []
    try:
        async with worker_process(env) as first, worker_process(env):  # two relays (and workers)
            opps = [(await sale.started())[1] for _ in range(5)]

            async def chaos() -> None:
                await asyncio.sleep(1.5)
                killed_at.append(asyncio.get_running_loop().time())
                first.send_signal(signal.SIGKILL)  # mid-delivery: its claims post again after their lease
                await first.wait()
                injected.append("worker killed")
                await receiver.stop()
                injected.append("receiver stopped")
                await asyncio.sleep(2.0)
                await receiver.start()  # on the same port

            async with worker_process(env):  # a third joins as the first dies
                await asyncio.gather(*(_won(sale, o, f"{o}-") for o in opps), chaos())
                feed = await _all_arrived(sale, receiver, opps, timeout=90)
    finally:
        await receiver.stop()
        await sale.cli("webhooks", "remove", receiver.url)

    print(f"\n{injected}; on the wire {receiver.answered}; posted {sum(receiver.on_wire.values())} times")
    assert injected == ["worker killed", "receiver stopped"]
    assert receiver.bad_signatures == []
    assert receiver.answered["500"] and receiver.answered["hung"], receiver.answered  # the faults happened
    for opp in opps:  # each opportunity's events, all, in their order, each once
        taken = receiver.of(opp)
        assert [e["id"] for e in taken] == feed[opp]
        assert [e["sequence"] for e in taken] == list(range(1, len(taken) + 1))
        assert taken[-1]["type"] == "com.corpsale.opportunity.won"
    # On the wire, before the receiver drops repeats: an event is posted again after it was taken
    # only when its sender never heard the answer: the post hung past the time-out, or its relay
    # was killed before marking it (a post it sent just before it died lands a moment after the
    # kill: IN_FLIGHT). Anything else would be a relay sending a delivered event.
    repeated = {i for i, answer, _ in receiver.log if answer == "again"}
    assert repeated, receiver.answered  # the faults made some
    for event_id in repeated:
        answers = receiver.answers(event_id)
        taken_at = next(at for answer, at in answers if answer == "ok")
        assert any(a == "hung" for a, _ in answers) or taken_at < killed_at[0] + IN_FLIGHT, (
            event_id,
            answers,
        )
    assert set(receiver.on_wire) == {i for o in opps for i in feed[o]}  # nothing else was posted


async def test_paused_gets_all_when_resumed_dead_stops_and_retries_replay_sends_again(sale: Sale) -> None:
    paused, dying = Receiver(), Receiver()
    await paused.start()
    await dying.start()
    dying.ok = False  # answers 500 to everything
    quick = Policy(timeout=1, attempts=3, backoff=0.05, backoff_cap=0.1, interval=0.2)
    try:
        paused.trust(await _subscribe(sale, paused.url))
        assert (
            await _subscribe(sale, dying.url, "--events", "stage.*,opportunity.won", "--secret", SECRET) == ""
        )
        dying.trust(SECRET)  # given, so not printed
        assert (await sale.cli("webhooks", "pause", paused.url)).code == 0
        async with _relay(sale.pool, quick), _relay(sale.pool, quick):
            _, opp = await sale.started()
            await _won(sale, opp, "w")
            shown = await eventually(
                lambda: _shown(sale, dying.url), lambda s: s["state"] == "stopped", timeout=30
            )
            assert (
                shown["dead"] == 1
                and shown["waiting"][0]["last_error"] == "answered 500 Internal Server Error"
            )
            assert (
                shown["waiting"][0]["event_id"] == f"{opp}:v1:entered"
                and shown["waiting"][0]["attempts"] == 3
            )
            checked = await sale.cli("check", opp, "--json")
            assert checked.code == 1, checked
            stopped = [v for v in json.loads(checked.stdout)["violations"] if v["kind"] == "webhook stopped"]
            assert len(stopped) == 1 and dying.url in stopped[0]["detail"] and "retry" in stopped[0]["detail"]
            await asyncio.sleep(1.0)
            assert paused.accepted == [] and dying.accepted == []  # paused: nothing; stopped: nothing more

            assert (await sale.cli("webhooks", "resume", paused.url)).code == 0
            feed = await _all_arrived(sale, paused, [opp], timeout=30)
            assert [e["id"] for e in paused.of(opp)] == feed[opp]

            dying.ok = True
            retried = await sale.cli("webhooks", "retry", dying.url)
            assert retried.code == 0 and "1 dead event to send again" in retried.stdout, retried
            its = [i for i in feed[opp] if i.endswith((":entered", ":closed"))]
            await eventually(lambda: _ids(dying, opp), lambda ids: ids == its, timeout=30)
            assert [e["type"] for e in dying.of(opp)] == ["com.corpsale.stage.entered"] * 4 + [
                "com.corpsale.opportunity.won"
            ]

            events = await read_events(sale.database_url, opportunity_id=opp)
            since = events[-1]["time"]  # the closing's events, all of one moment
            again = [e["id"] for e in events if e["time"] >= since]
            replayed = await sale.cli("webhooks", "replay", paused.url, "--since", since)
            assert replayed.code == 0, replayed
            # Of every opportunity in the test database (others' may carry later times): ours too.
            assert int(replayed.stdout.split(": ", 1)[1].split()[0]) >= len(again), replayed
            await eventually(lambda: _sent(paused, again), lambda n: n == {2}, timeout=30)
        assert [e["id"] for e in paused.of(opp)] == feed[opp]  # the repeats, same ids: taken once
        # The receiver code of docs/contract.md says yes to a real post, and no to a changed one.
        verified = _contract_receiver_code()
        assert paused.first is not None
        headers, body = paused.first
        assert verified(SECRET, headers, body) is False  # another subscriber's secret
        assert dying.first is not None and verified(SECRET, *dying.first) is True
        changed = dying.first[1].replace(b'"visit":1', b'"visit":2')
        assert changed != dying.first[1] and verified(SECRET, dying.first[0], changed) is False
        listed = await sale.cli("webhooks", "list", "--json")
        rows = {r["url"]: r for r in json.loads(listed.stdout)}
        assert rows[paused.url]["state"] == "active" and rows[paused.url]["pending"] == 0
        assert rows[dying.url]["dead"] == 0 and rows[dying.url]["delivered"] == 5
        assert (await sale.cli("check", opp)).code == 0
    finally:
        for r in (paused, dying):
            await r.stop()
            await sale.cli("webhooks", "remove", r.url)


async def test_webhooks_refuses_what_is_wrong_with_one_line(sale: Sale) -> None:
    url = f"http://127.0.0.1:9/{uuid.uuid4().hex}"
    for args, says in (
        (["add", "ftp://host/x"], "not a web address"),
        (["add", "https://user:pw@host/x"], "no user name or password"),
        (["add", url, "--events", "stage.left"], "no event type matches 'stage.left'; there are:"),
        (["add", url, "--events", ","], "name the events to send"),
        (["add", url, "--secret", "hunter2"], "a secret is whsec_ and the base64 of 24 to 64 random bytes"),
        (["add", url, "--secret", "whsec_" + "A" * 8], "24 to 64 random bytes"),
        (["show", url], f"no subscriber {url}"),
        (["retry", url], f"no subscriber {url}"),
        (["replay", url, "--since", "yesterday"], "not a date or date-time"),
    ):
        done = await sale.cli("webhooks", *args)
        assert done.code == 1 and says in done.stderr and "Traceback" not in done.stderr, (args, done)
    try:
        assert (await sale.cli("webhooks", "add", url)).code == 0
        again = await sale.cli("webhooks", "add", url)
        assert again.code == 1 and "is a subscriber already" in again.stderr, again
        not_admin = await sale.cli("webhooks", "list", env={"CORPSALE_ACTOR": "mallory"})
        assert not_admin.code == 1 and "only an admin manages webhooks" in not_admin.stderr, not_admin
        shown = json.loads((await sale.cli("webhooks", "show", url, "--json")).stdout)
        assert "secret" not in shown and shown["events"] == ["*"]
    finally:
        await sale.cli("webhooks", "remove", url)


def _contract_receiver_code() -> Any:
    text = (Path(__file__).parent.parent / "docs" / "contract.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text.split("## Webhooks", 1)[1], flags=re.S)[0]
    space: dict[str, Any] = {}
    exec(code, space)  # the page's own lines, as a receiver copies them
    return space["verified"]


async def _shown(sale: Sale, url: str) -> dict[str, Any]:
    shown = await sale.cli("webhooks", "show", url, "--json")
    assert shown.code == 0, shown.stderr
    found: dict[str, Any] = json.loads(shown.stdout)
    return found


async def _ids(receiver: Receiver, opp: str) -> list[str]:
    return [e["id"] for e in receiver.of(opp)]


async def _sent(receiver: Receiver, ids: list[str]) -> set[int]:
    return {receiver.on_wire[i] for i in ids}


async def test_a_slow_subscriber_holds_up_no_other(sale: Sale) -> None:
    """One subscriber keeps every post past the time-out; another answers at once. The quick one
    gets every event of 24 deals, while the slow one is never posted more than 16 at once (the
    relay's limit per subscriber, of 64 in all) and had that many."""
    slow, quick = Receiver(hang=1.0, hang_seconds=30.0), Receiver()
    policy = Policy(timeout=1.0, backoff=5.0, backoff_cap=10.0, attempts=1000)  # the limits as shipped
    try:
        for r in (slow, quick):
            await r.start()
            r.trust(await _subscribe(sale, r.url))
        opps = [(await sale.started())[1] for _ in range(24)]
        for opp in opps:  # their events written, waiting for the relay: 24 deals' at once
            await journal_settled(sale, opp, timeout=20)
        async with _relay(sale.pool, policy):
            feed = await _all_arrived(sale, quick, opps, timeout=60)
        assert all([e["id"] for e in quick.of(o)] == feed[o] for o in opps)
        assert slow.most_in_flight == policy.per_subscriber == 16, slow.most_in_flight
    finally:
        for r in (slow, quick):
            await r.stop()
            await sale.cli("webhooks", "remove", r.url)


async def test_a_redirect_is_not_an_answer_and_a_subscriber_gets_events_from_when_it_is_added(
    sale: Sale,
) -> None:
    """A subscriber that answers with a redirect has not taken the event: it is not followed (the
    place redirected to gets nothing) and the event waits, the error shown, until the subscriber
    answers 2xx itself. A subscriber added after a deal began gets that deal's events from then
    on, not the earlier ones."""
    moved, elsewhere = Receiver(), Receiver()
    policy = Policy(timeout=1.0, backoff=0.1, backoff_cap=0.2, attempts=1000, interval=0.2)
    try:
        for r in (moved, elsewhere):
            await r.start()
        _, opp = await sale.started()
        await journal_settled(sale, opp, timeout=20)
        before = [e["id"] for e in await read_events(sale.database_url, opportunity_id=opp)]
        assert before  # the deal's first events, written before the subscriber came
        moved.trust(await _subscribe(sale, moved.url))
        elsewhere.trust(SECRET)  # not a subscriber: it would get only what a redirect sent it
        moved.redirect = elsewhere.url
        async with _relay(sale.pool, policy):
            await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "alice"})
            shown = await eventually(
                lambda: _shown(sale, moved.url),
                lambda s: bool(s["waiting"]) and s["waiting"][0]["attempts"] >= 3,
                timeout=30,
            )
            assert shown["waiting"][0]["last_error"] == "answered 307 Temporary Redirect", shown
            assert moved.accepted == [] and sum(elsewhere.on_wire.values()) == 0
            moved.redirect = None
            await journal_settled(sale, opp, timeout=20)
            feed = [e["id"] for e in await read_events(sale.database_url, opportunity_id=opp)]
            since = [i for i in feed if i not in before]  # what came after it was added
            await eventually(lambda: _ids(moved, opp), lambda ids: ids == since, timeout=30)
        assert feed[: len(before)] == before and since
        assert since[0] == shown["waiting"][0]["event_id"]  # the one that waited, redirected
    finally:
        for r in (moved, elsewhere):
            await r.stop()
        await sale.cli("webhooks", "remove", moved.url)
