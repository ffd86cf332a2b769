"""The webhook relay: posts each business event to each subscriber that wants it.

Exactly once in effect. Every event reaches every subscriber that wants it (a delivery row per
event, written before it is posted, and marked only once the subscriber answered 2xx), each
opportunity's in order (the next is posted only once the one before arrived), signed, and with
its id as `webhook-id`, the same on every attempt, for the receiver to drop repeats by: a relay
killed after the post and before the mark posts it again once its claim's lease runs out.

A subscriber that fails is tried again after an exponential backoff with jitter; after the last
attempt its delivery is dead and the subscriber stops there (`corpsale check` and `webhooks
show` say so, `webhooks retry` goes on). Posts run side by side, a few per subscriber at most, so
a slow or dead subscriber holds up neither the process (which only writes the events) nor the
other subscribers. Signatures follow Standard Webhooks: `webhook-signature` is `v1,` and the
base64 HMAC-SHA256, with the subscriber's key, of `{webhook-id}.{webhook-timestamp}.{body}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
from standardwebhooks import Webhook

from activities.data import webhooks

log = logging.getLogger("corpsale.webhooks")

CHANNEL = "corpsale_events"  # activities/data/events.py notifies it when a transaction wrote events


@dataclass(frozen=True)
class Policy:
    timeout: float = 10.0  # seconds a subscriber has to answer
    attempts: int = 20  # then the delivery is dead (after 4.5 to 9 hours, as backoff and jitter fall)
    backoff: float = 2.0  # seconds before the first retry, doubled each time ...
    backoff_cap: float = 3600.0  # ... up to this
    in_flight: int = 64  # posts at once, in all
    per_subscriber: int = 16  # posts at once to one subscriber (different opportunities')
    interval: float = 1.0  # seconds between passes when nothing wakes the relay
    settle: float = 0.1  # seconds a woken relay waits for more to come, and takes it all in one pass

    def retry_in(self, attempt: int) -> float | None:
        """Seconds to wait after failed attempt `attempt` (1, 2 ...), or None: it was the last.
        Half the backoff is fixed, half random (jitter), so failed subscribers do not come back
        all at once."""
        if attempt >= self.attempts:
            return None
        wait = min(self.backoff_cap, self.backoff * 2 ** (attempt - 1))
        jittered: float = wait / 2 + random.uniform(0, wait / 2)
        return jittered


class WebhookRelay:
    def __init__(self, pool: asyncpg.Pool, policy: Policy | None = None, *, batch: int = 500) -> None:
        self._pool, self._policy, self._batch = pool, policy or Policy(), batch
        self._wake = asyncio.Event()
        self._posting: set[asyncio.Task[None]] = set()
        self._per_subscriber: Counter[int] = Counter()
        self._session: aiohttp.ClientSession | None = None
        self._taken: list[tuple[int, int, uuid.UUID]] = []  # posts answered 2xx, to mark in the next pass
        self._unheard = False  # the last pass served no subscriber

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set: at once when events are written or a post ends, else every
        `interval` seconds. A failed pass (the database away) is logged and tried again."""
        timeout = aiohttp.ClientTimeout(total=self._policy.timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout, headers={"user-agent": "corpsale-webhooks/1"}) as session,
            self._listening(),
        ):
            self._session = session
            try:
                while not stop.is_set():
                    try:
                        while await self.pass_once() and not stop.is_set():
                            pass
                    except Exception as err:  # the database away: go on
                        log.warning("webhook relay: %r; trying again in %.0f s", err, self._policy.interval)
                    self._wake.clear()
                    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
                    await asyncio.wait(
                        waits, timeout=self._policy.interval, return_when=asyncio.FIRST_COMPLETED
                    )
                    for w in waits:
                        w.cancel()
                    await asyncio.sleep(self._policy.settle)
            finally:  # posts under way end (a claim not marked is posted again after its lease)
                for task in self._posting:
                    task.cancel()
                await asyncio.gather(*self._posting, return_exceptions=True)
                with contextlib.suppress(Exception):  # what is not marked is posted again, once
                    async with self._pool.acquire() as conn:
                        await webhooks.delivered(conn, self._taken)

    @contextlib.asynccontextmanager
    async def _listening(self) -> Any:
        """Woken by the database when events are written (best effort: the passes go on anyway)."""
        try:
            conn = await self._pool.acquire()
        except Exception as err:  # the database away: passes find the events later
            log.warning("webhook relay: not woken by new events (%r)", err)
            yield
            return

        def woken(*_: object) -> None:
            self._wake.set()

        try:
            await conn.add_listener(CHANNEL, woken)
            yield
        finally:
            try:
                await conn.remove_listener(CHANNEL, woken)
            except Exception:  # still listening: the session goes
                conn.terminate()
            await self._pool.release(conn)

    async def pass_once(self) -> bool:
        """Fan new events out and start the posts that are due; True when there is more at once."""
        free = self._policy.in_flight - len(self._posting)
        chains: list[list[dict[str, Any]]] = []
        if self._unheard and not self._taken and not self._posting:  # a pass only once anyone listens
            async with self._pool.acquire() as conn:
                if not await webhooks.any_subscriber(conn):
                    return False
        # One transaction a pass, not waiting for its commit to reach the disk: what a crash
        # loses of it (a fan-out, a mark, a claim) is done again, at worst a post sent twice.
        taken, self._taken = self._taken, []
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                await webhooks.delivered(conn, taken)
                scanned, served = await webhooks.fan_out(conn, self._batch)
                self._unheard = not served  # none the last pass: the next one looks first
                if free > 0:
                    lease = self._policy.timeout + 1  # a post's longest, and its mark
                    posting = {w: n for w, n in self._per_subscriber.items() if n}
                    token, chains = await webhooks.claim(
                        conn, lease, self._policy.per_subscriber, free, posting
                    )
        except BaseException:
            self._taken[:0] = taken  # marked in a later pass
            raise
        for chain in chains:
            self._per_subscriber[chain[0]["webhook_id"]] += 1
            task = asyncio.create_task(self._post(token, chain))
            self._posting.add(task)
            task.add_done_callback(self._posted)
        return scanned >= self._batch or 0 < free <= len(chains)

    def _posted(self, task: asyncio.Task[None]) -> None:
        self._posting.discard(task)
        self._wake.set()  # a slot is free, and the next event of that opportunity may be due

    async def _post(self, token: uuid.UUID, chain: list[dict[str, Any]]) -> None:
        """Post an opportunity's events to a subscriber one after the other, until one fails."""
        webhook_id, url = chain[0]["webhook_id"], chain[0]["url"]
        try:
            signer = Webhook(webhooks.signing_key(chain[0]["secret"]))
            for i, delivery in enumerate(chain):
                event = delivery["event"]
                error = await self._send(url, *self._signed(signer, event))
                if error is None:
                    self._taken.append((webhook_id, event["position"], token))
                    continue
                attempt = delivery["attempts"] + 1
                retry_in = self._policy.retry_in(attempt)
                rest = [d["event"]["position"] for d in chain[i + 1 :]]
                async with self._pool.acquire() as conn:
                    await webhooks.failed(conn, webhook_id, event["position"], token, error, retry_in, rest)
                if retry_in is None:
                    log.error(
                        "webhook %s stopped at event %s after %d attempts: %s;"
                        " fix it, then `corpsale webhooks retry %s`",
                        url, event["id"], attempt, error, url,
                    )  # fmt: skip
                else:
                    log.warning(
                        "webhook %s, event %s: %s; again in %.1f s", url, event["id"], error, retry_in
                    )
                return
        except Exception as err:  # the database away: the claims' lease runs out, they are posted again
            log.warning("webhook %s: %r", url, err)
        finally:
            self._per_subscriber[webhook_id] -= 1

    @staticmethod
    def _signed(signer: Webhook, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The body and the Standard Webhooks headers (the library signs it)."""
        text = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        now = datetime.now(UTC).replace(microsecond=0)
        return text.encode(), {
            "content-type": "application/cloudevents+json",
            "webhook-id": event["id"],
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(event["id"], now, text),
        }

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        """Post; None when the subscriber took it (2xx), else what went wrong."""
        assert self._session is not None
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as answer:
                if 200 <= answer.status < 300:
                    return None
                return f"answered {answer.status} {answer.reason or ''}".strip()
        except TimeoutError:
            return f"no answer in {self._policy.timeout:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as err:  # an attempt that failed, whatever broke
            return f"{type(err).__name__}: {err}"
