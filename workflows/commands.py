"""How a process takes its commands (R11, R23): one path for signals and updates. Payloads are
read raw (workflows/payloads.py), so that whatever a sender put in them is refused with a reason
instead of failing a workflow task; every request id gets one answer, given again to every later
delivery; a signal never raises (its refusal is recorded); an update answers the new state or
`CommandRefused`. What a command does is the process's (`apply`); this is the plumbing around it.

A command is all or nothing (its writes are journaled): one refused half-way, or whose
step gave up (`Unavailable`: PostgreSQL not answering), leaves the state as it found it. Such an
update is answered `Unavailable` (the same request sent again is applied); such a signal waits in
the run, in order with those after it, and is tried again on its own. For a while after a step
gave up, commands are not tried: signals wait, updates are answered `Unavailable` at once, so the
process's lock stays free (to hand over, to answer queries) while PostgreSQL is away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import contract as c
    from workflows.contract import StateView
    from workflows.handover import Handover
    from workflows.journal import Journal
    from workflows.payloads import decode
    from workflows.refusals import (
        RETRY_AFTER,
        AlreadyApplied,
        HandingOver,
        NotAllowed,
        Refused,
        Unavailable,
        one_payload,
        parse_command,
        request_id_of,
    )
    from workflows.rules import Rules
    from workflows.state import DeferredCommand, SaleState, fingerprint, printable
    from workflows.steps import RefusalRow, RequestMark


_AWAY = (
    "Not applied now: PostgreSQL did not answer a moment ago; send the command again with the same"
    " request id in a few seconds."
)

METRICS = {
    "corpsale_stage_transitions": "Stage entries, by stage.",
    "corpsale_tasks_created": "Tasks opened (the process's and ad-hoc ones).",
    "corpsale_tasks_completed": "Tasks completed.",
    "corpsale_tasks_canceled": "Open tasks canceled by a stage change or a closing.",
    "corpsale_commands_rejected": "Commands refused, by command and by how they came (signal or update).",
}


def count(name: str, value: int = 1, **attributes: str) -> None:
    """Add to one of the product's counters (exported with the SDK's metrics; not during replay)."""
    if value:
        workflow.metric_meter().create_counter(name, METRICS[name]).add(value, attributes)


@dataclass(frozen=True)
class Refusal:
    """A command not applied, as a value: why (`reason`); which kind of refusal (`kind`, the
    rules' class for it, which says how the caller is answered); whether it was decided for this
    delivery (`new`: else an answer given before, given again); whether it is the answer the
    ledger keeps for its request (`kept`: a signal that records it marks that answer recorded)."""

    reason: str
    kind: type[Refused] = Refused
    new: bool = False
    kept: bool = False

    @property
    def final(self) -> bool:
        """Refused for good, not "later" (handing over, or not now): the request's answer."""
        return not issubclass(self.kind, HandingOver)

    def answer(self) -> ApplicationError:
        """The refusal as an update's caller gets it (docs/contract.md, Errors)."""
        if issubclass(self.kind, Unavailable):
            return ApplicationError(self.reason, type=c.UNAVAILABLE)
        if issubclass(self.kind, HandingOver):
            return ApplicationError(self.reason, type=c.HANDING_OVER)
        return ApplicationError(self.reason, type=c.COMMAND_REFUSED, non_retryable=True)


def refusal_of(err: Refused, *, new: bool = False, kept: bool = False) -> Refusal:
    return Refusal(str(err), type(err), new=new, kept=kept)


def request_key(payload: Any) -> str | None:
    """The one key of a request, in the ledger and among the updates admitted: the request id its
    payload carries, else (an update) the update's id."""
    info = workflow.current_update_info()
    return request_id_of(payload) or (info.id if info else None)


class CommandDesk:
    """A process's desk for its commands: it decodes them, keeps the answer to each request,
    serialises them under the process's lock and hands each new one to `apply`. The rules refuse
    by raising `Refused`; here a refusal becomes a value (`Refusal`) at once, and is answered in
    one place for each way a command comes (`apply_signal`, `update`, `validate`)."""

    def __init__(
        self,
        state: SaleState,
        lock: asyncio.Lock,
        rules: Rules,
        *,
        apply: Callable[[str, BaseModel, Any], Awaitable[None]],
        ready: Callable[[], bool],
        handover: Handover,
        record: Callable[[RefusalRow], Awaitable[None]],
        journal: Journal,
    ) -> None:
        self._state, self._lock, self._rules = state, lock, rules
        self._do, self._ready, self._handover = apply, ready, handover
        self.record = record  # a refusal's business event
        self.journal = journal
        self._admitted: dict[str, str] = {}  # request key -> fingerprint, of updates let in (validators)
        # A step gave up: commands are not tried until the run's retry timer has run out. (A flag
        # set by a failure and cleared by a timer, both in history: not a time compared with now,
        # which a local activity's result can make differ between a run and its replay.)
        self.away = False

    async def apply(
        self, name: str, payload: Any, request_id: str | None, *, signal: bool = False
    ) -> Refusal | None:
        """Apply a command once per request id: a request answered before gets that answer again,
        and nothing is applied twice. None: applied (now or before)."""
        print_ = fingerprint(name, payload)
        try:
            known = self._rules.recall(request_id, print_)
        except Refused as err:  # the request id came with another command
            return refusal_of(err)
        if known is not None:
            return None if known.refusal is None else Refusal(known.refusal, kept=True)
        before = self._state.checkpoint()  # all or nothing: a command refused half-way leaves none
        if request_id is not None:
            self.journal.request = RequestMark(request_id=request_id, fingerprint=print_)
        try:
            if signal and name in c.UPDATE_ONLY:
                raise Refused(f"{name!r} is sent as an update only, to be answered: {c.UPDATE_MIGRATE}.")
            await self._do(name, parse_command(name, payload), payload)
        except AlreadyApplied as applied:  # long ago: the run's ledger no longer had it
            self._state.roll_back(before)
            self._state.remember(request_id, applied.fingerprint)  # its retries: applied
            if applied.fingerprint == print_:
                return None
            return refusal_of(self._rules.reused(request_id), new=True)
        except Refused as err:
            self._state.roll_back(before)
            if isinstance(err, Unavailable):
                self.away = True
            if isinstance(err, HandingOver):
                return refusal_of(err)  # not an answer: the same request is applied later
            self._state.remember(request_id, print_, str(err))
            return refusal_of(err, new=True, kept=True)
        finally:
            self.journal.request = None
        self._state.remember(request_id, print_)
        return None

    async def refused_event(self, refusal: Refusal, name: str, payload: Any, request_id: str | None) -> None:
        """The business event of a refusal decided now (not of a repeat, answered from the
        ledger), once the refusal is in the state."""
        if refusal.new:
            await self._recorded(name, refusal.reason, payload, request_id)

    async def _recorded(self, name: str, reason: str, payload: Any, request_id: str | None) -> None:
        """A refusal's business event, once per request (a repeat is answered from the ledger):
        what a sender put in it stored safely (text PostgreSQL can hold, bounded), with the
        command's fingerprint to tell which it was. If it cannot be written now, the refusal is
        in `rejected` all the same."""
        self._state.refusals += 1
        actor = payload.get("actor") if isinstance(payload, dict) else None
        row = RefusalRow(
            opportunity_id=self._state.opportunity_id,
            number=self._state.refusals,
            command=printable(name, 200),
            reason=printable(reason, 1000),
            request_id=printable(request_id, 200) if isinstance(request_id, str) else None,
            actor=printable(actor, 200) if isinstance(actor, str) else None,
            at=workflow.now(),
            digest=fingerprint(name, payload),
        )
        try:
            await self.record(row)
        except Refused as err:  # not now, or data the database would not take: in `rejected` only
            self._state.refusals -= 1
            workflow.logger.warning("the refusal of %s is not an event: %s", name, err)

    async def apply_signal(self, name: str, args: Sequence[Any]) -> None:
        """Signals never raise: a refused one is recorded in `rejected` with the reason, once
        however often its request is delivered; one whose step gave up waits (`retry`)."""
        payload = args[0] if len(args) == 1 else list(args)
        request_id = request_id_of(payload)
        refusal = await self._signalled(name, args, payload, request_id)
        if refusal is None:
            return
        if issubclass(refusal.kind, Unavailable):
            self._state.retry.append(DeferredCommand(name=name, args=list(args)))
            return
        self.reject(name, refusal.reason, payload, via="signal")
        answer = self._state.answer(request_id) if refusal.kept else None
        if answer is not None:
            answer.recorded = True
        await self.refused_event(refusal, name, payload, request_id)

    async def _signalled(
        self, name: str, args: Sequence[Any], payload: Any, request_id: str | None
    ) -> Refusal | None:
        """What becomes of a signal: a request refused before as an update is refused again here,
        to be recorded (once); one answered otherwise before is done."""
        try:
            known = self._rules.recall(request_id, fingerprint(name, payload))
        except Refused as err:
            return refusal_of(err)
        if known is not None:
            if known.refusal is not None and not known.recorded:
                return Refusal(known.refusal, kept=True)
            return None
        try:
            one = one_payload(args)
        except Refused as err:
            return refusal_of(err)
        return await self.apply(name, one, request_id, signal=True)

    def reject(self, name: str, reason: str, payload: Any, *, via: str) -> None:
        """Record a refused command in `rejected`."""
        self._state.reject(workflow.now(), name, reason, payload)
        self.refused(name, reason, via=via)

    @staticmethod
    def refused(name: str, reason: str, *, via: str) -> None:
        """Count a refusal and say it in one line (the log names the opportunity): a refused
        command is an answer, not an error of the worker."""
        count("corpsale_commands_rejected", command=name, via=via)
        workflow.logger.info("%s refused (%s): %s", name, via, reason)

    async def signal(self, name: str, raw: Sequence[RawValue]) -> None:
        await workflow.wait_condition(self._ready)
        try:
            args = [decode(r) for r in raw]
        except Refused as err:
            self.reject(name, str(err), f"<{len(raw)} payloads, not JSON>", via="signal")
            async with self._lock:
                await self._recorded(name, str(err), None, None)
            return
        if self._handover.flooded() and self._state.can_carry(args):
            self._state.deferred.append(DeferredCommand(name=name, args=args))
            return
        async with self._lock:
            if (self._state.retry or self.away) and self._state.can_carry(args):
                self._state.retry.append(DeferredCommand(name=name, args=args))  # behind those waiting
                return
            await self.apply_signal(name, args)

    def retry_due(self) -> bool:
        """Signals wait, and no step gave up since the retry timer last ran out."""
        return bool(self._state.retry) and not self.away

    async def retry_while_away(self) -> None:
        """After a step gave up (PostgreSQL not answering), commands are tried again once a timer
        has run out: the signals that waited first, in order (an update that comes first tries
        them first). Those left when the deal closes are refused as any command to a closed deal."""
        state = self._state
        while state.retry or self.away or not state.closed:
            await workflow.wait_condition(lambda: bool(state.retry) or self.away or state.closed)
            if not (state.retry or self.away):
                return
            await workflow.sleep(RETRY_AFTER, summary="PostgreSQL did not answer: try again")
            async with self._lock:
                self.away = False
                if self.retry_due():
                    await self.retry_waiting()

    async def retry_waiting(self) -> None:
        """Try the signals that wait again, in order (under the lock), up to one that must wait
        again: it and those after it wait on."""
        waiting, self._state.retry = self._state.retry, []
        for i, cmd in enumerate(waiting):
            await self.apply_signal(cmd.name, tuple(cmd.args))
            if self._state.retry:
                self._state.retry.extend(waiting[i + 1 :])
                return

    def _not_now(self) -> Refusal | None:
        """Why an update is not tried now: a step gave up a moment ago, or signals wait before it."""
        if self.away:
            return Refusal(_AWAY, Unavailable)
        if self._state.retry:
            return Refusal(
                "Not applied now: commands sent before it wait for PostgreSQL; send the command"
                " again with the same request id in a few seconds.",
                Unavailable,
            )
        return None

    async def update(self, name: str, raw: Sequence[RawValue]) -> StateView:
        await workflow.wait_condition(self._ready)
        self._handover.updates += 1
        async with self._lock:
            payload: Any = None
            key = request_key(None)
            try:
                try:
                    payload = one_payload([decode(r) for r in raw])
                except Refused as err:
                    refusal: Refusal | None = refusal_of(err)
                else:
                    key = request_key(payload)
                    refusal = await self._updated(name, payload, key)
                if refusal is not None:
                    await self._refuse_update(name, refusal, payload, key)
            finally:
                if key is not None:  # admitted by the validator under the same key
                    self._admitted.pop(key, None)
        return self._state.view()

    async def _updated(self, name: str, payload: Any, request_id: str | None) -> Refusal | None:
        if self.retry_due():
            await self.retry_waiting()  # those sent before it first
        not_now = self._not_now()
        if not_now is not None:
            return not_now
        return await self.apply(name, payload, request_id)

    async def _refuse_update(self, name: str, refusal: Refusal, payload: Any, request_id: str | None) -> None:
        """Answer a refused update. Refused for good: recorded in `rejected` when it was not
        allowed (as for a signal: who tried what), else counted; its event when decided now. Not
        now: counted. Handing over: the next run takes it."""
        if refusal.final:
            if issubclass(refusal.kind, NotAllowed):
                self.reject(name, refusal.reason, payload, via="update")
            else:
                self.refused(name, refusal.reason, via="update")
            await self.refused_event(refusal, name, payload, request_id)
        elif issubclass(refusal.kind, Unavailable):
            self.refused(name, refusal.reason, via="update")
        raise refusal.answer()

    def validate(self, update: str, raw: Sequence[RawValue]) -> None:
        """Update validators: refuse before anything enters history, where state allows. They
        change nothing but `_admitted`, which only validators read (they do not run on replay)."""
        refusal = self._admission(update, raw)
        if refusal is not None:
            if refusal.final or issubclass(refusal.kind, Unavailable):
                self.refused(c.COMMAND_OF_UPDATE.get(update, update), refusal.reason, via="update")
            raise refusal.answer()

    def _admission(self, update: str, raw: Sequence[RawValue]) -> Refusal | None:
        name = c.COMMAND_OF_UPDATE.get(update, update)
        try:
            if update not in c.COMMAND_OF_UPDATE:
                raise Refused(f"Unknown update {update!r}; updates: {', '.join(c.COMMAND_OF_UPDATE)}.")
            payload = one_payload([decode(r) for r in raw])
            if not self._ready():
                return None
            if self.away:  # a step gave up a moment ago
                return Refusal(_AWAY, Unavailable)
            if self._handover.flooded():
                return Refusal(
                    "The process is handing over to a new run; send the command again with the same"
                    " request id (the product's clients do this on their own).",
                    HandingOver,
                )
            key = request_key(payload)
            print_ = fingerprint(name, payload)
            admitted = self._admitted.get(key) if key else None
            if admitted is not None and admitted != print_:
                raise Refused(f"Request id {key!r} was used for another command (being applied now).")
            if admitted is not None or self._rules.recall(key, print_) is not None:
                return None  # a delivery of a request in hand: the handler gives it that request's answer
            self._rules.check(parse_command(name, payload), now=workflow.now())
            if key is not None:
                self._admitted[key] = print_
        except Refused as err:
            return refusal_of(err)
        return None
