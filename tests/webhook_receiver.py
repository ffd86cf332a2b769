"""A webhook subscriber for the tests: a real HTTP server (aiohttp) that checks each event's
signature as a receiver would (the Standard Webhooks library, not the product's code), keeps the
first of each id in the order it took them, counts every post on the wire, and misbehaves on
purpose: answers 500 at times, hangs past the sender's time-out at times, stops for a while, or
redirects; it counts the posts it is answering at once."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


class Receiver:
    def __init__(
        self, *, seed: int = 0, fail: float = 0.0, hang: float = 0.0, hang_seconds: float = 2.0
    ) -> None:
        self._verifier: Webhook | None = None
        self._rng = random.Random(seed)
        self._fail, self._hang, self._hang_seconds = fail, hang, hang_seconds
        self.accepted: list[dict[str, Any]] = []  # each id once, in the order taken
        self.on_wire: Counter[str] = Counter()  # every post, duplicates too
        self.answered: Counter[str] = Counter()  # "500", "hung", "bad signature", "ok", "again"
        self.bad_signatures: list[str] = []
        self.first: tuple[dict[str, str], bytes] | None = None  # the first post taken: headers, body
        self.ok = True  # False: answer 500 to everything
        self.redirect: str | None = None  # answer every post with a redirect to this URL
        self.in_flight = 0  # posts being answered now
        self.log: list[tuple[str, str, float]] = []  # (webhook-id, answer, when: the loop's clock)
        self.most_in_flight = 0  # the most at once, so far
        self._ids: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def trust(self, secret: str) -> None:
        """Check signatures with this secret (the one `webhooks add` was given or made)."""
        self._verifier = Webhook(secret)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def of(self, opportunity_id: str) -> list[dict[str, Any]]:
        return [e for e in self.accepted if e["subject"] == opportunity_id]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._take)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _note(self, event_id: str, answer: str) -> None:
        self.answered[answer] += 1
        self.log.append((event_id, answer, asyncio.get_running_loop().time()))

    def answers(self, event_id: str) -> list[tuple[str, float]]:
        """What the receiver answered to each post of this event, in order, and when."""
        return [(answer, at) for i, answer, at in self.log if i == event_id]

    async def _take(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id = request.headers.get("webhook-id", "")
        self.on_wire[event_id] += 1
        if self.redirect is not None:
            self._note(event_id, "redirected")
            raise web.HTTPTemporaryRedirect(self.redirect)
        try:
            assert self._verifier is not None, "trust() a secret first"
            self._verifier.verify(body, {k.lower(): v for k, v in request.headers.items()})
        except WebhookVerificationError:
            self.bad_signatures.append(event_id)
            self._note(event_id, "bad signature")
            return web.Response(status=400)
        luck = self._rng.random()
        if not self.ok or luck < self._fail:
            self._note(event_id, "500")
            return web.Response(status=500)
        if luck < self._fail + self._hang:  # the sender gives up first; taken all the same, later
            self._note(event_id, "hung")
            await self._hang_up_to(request, self._hang_seconds)
        if event_id in self._ids:
            self._note(event_id, "again")
        else:
            self._note(event_id, "ok")
            self._ids.add(event_id)
            self.accepted.append(json.loads(body))
            if self.first is None:
                self.first = ({k.lower(): v for k, v in request.headers.items()}, body)
        return web.Response(status=204)

    @staticmethod
    async def _hang_up_to(request: web.Request, seconds: float) -> None:
        """Wait `seconds`, or until the sender has given up and closed the connection (then the
        post no longer counts as in flight)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        transport = request.transport
        # A closing transport sets no event to wait on: look at it every 20 ms.
        while loop.time() < until and transport is not None and not transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
