"""How a process takes its commands (R11, R23): one path for signals and updates. Payloads are
read raw, so that whatever a sender put in them is refused with a reason instead of failing a
workflow task; every request id gets one answer, given again to every later delivery; a signal
never raises (its refusal is recorded); an update answers the new state or `CommandRefused`.
What a command does is the process's (`apply`); this is the plumbing around it.

In runs that journal their writes, a command is all or nothing: one refused half-way, or whose
step gave up (`Unavailable`: PostgreSQL not answering), leaves the state as it found it. Such an
update is answered `Unavailable` (the same request sent again is applied); such a signal waits in
the run, in order with those after it, and is tried again on its own. For a while after a step
gave up, commands are not tried: signals wait, updates are answered `Unavailable` at once, so the
process's lock stays free (to hand over, to answer queries) while PostgreSQL is away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import contract as c
    from workflows.contract import StateView
    from workflows.handover import Handover
    from workflows.journal import Journal
    from workflows.rules import (
        AlreadyApplied,
        HandingOver,
        NotAllowed,
        Refused,
        Rules,
        Unavailable,
        one_payload,
        parse_command,
        request_id_of,
        validation_message,
    )
    from workflows.state import DeferredCommand, ProcessInput, SaleState, fingerprint, json_safe, printable
    from workflows.steps import RefusalRow, RequestMark


_AWAY = (
    "Not applied now: PostgreSQL did not answer a moment ago; send the command again with the same"
    " request id in a few seconds."
)

# What the run is given when a start sends no input at all.
NO_START = RawValue(Payload())

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


def decode(raw: RawValue) -> Any:
    """A payload as it was sent, read here rather than by the SDK: one that is not JSON (or not
    UTF-8, or nested too deep) is refused with a reason instead of failing a workflow task."""
    try:
        return workflow.payload_converter().from_payload(raw.payload)
    except Exception as err:  # anything a sender can put in a payload: RecursionError included
        encoding = raw.payload.metadata.get("encoding", b"").decode("utf-8", "replace") or "none"
        raise Refused(
            f"Malformed payload: not JSON the process can read ({type(err).__name__}, encoding"
            f" {encoding!r}, {len(raw.payload.data)} bytes); send one JSON object."
        ) from None


def read_start(raw: RawValue) -> ProcessInput | str:
    """The start input, or why it cannot be one."""
    if raw is NO_START:
        return "The start has no input: send one JSON object (docs/schemas/start.schema.json)."
    try:
        return ProcessInput.model_validate(decode(raw))
    except Refused as err:
        return f"Invalid start: {str(err).removeprefix('Malformed payload: ')}"
    except ValidationError as err:
        return validation_message(err, "Invalid start")


def start_problem(start: ProcessInput | None, workflow_id: str, continued_run_id: str | None) -> str | None:
    """Why a decoded start cannot be the process of the run it started (R22), if it cannot."""
    if start is None:
        return None
    if workflow_id != c.workflow_id(start.opportunity_id):
        return (
            f"Workflow id {workflow_id!r} is not the process of opportunity"
            f" {start.opportunity_id!r}: its process runs as {c.workflow_id(start.opportunity_id)!r}."
        )
    if start.resume is not None and continued_run_id is None:
        return "Invalid start: resume is the process's own hand-over to its next run; leave it out."
    return None


class CommandDesk:
    """A process's desk for its commands: it decodes them, keeps the answer to each request,
    serialises them under the process's lock and hands each new one to `apply`."""

    def __init__(
        self,
        state: SaleState,
        lock: asyncio.Lock,
        rules: Rules,
        *,
        apply: Callable[[str, BaseModel, Any], Awaitable[None]],
        ready: Callable[[], bool],
        handover: Handover,
        record: Callable[[RefusalRow], Awaitable[None]] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self._state, self._lock, self._rules = state, lock, rules
        self._do, self._ready, self._handover = apply, ready, handover
        self.record = record  # a refusal's event (patches.REFUSALS_ARE_EVENTS), None: not in this run
        self.all_or_nothing = False  # this run journals its writes: commands are all or nothing
        self.journal = journal
        self._admitted: dict[str, str] = {}  # request id -> fingerprint, of updates let in (validators)
        # A step gave up: commands are not tried until the run's retry timer has run out. (A flag
        # set by a failure and cleared by a timer, both in history: not a time compared with now,
        # which a local activity's result can make differ between a run and its replay.)
        self.away = False

    async def apply(self, name: str, payload: Any, request_id: str | None, *, signal: bool = False) -> None:
        """Apply a command once per request id: a request answered before gets that answer again
        (its refusal raised again), and nothing is applied twice."""
        print_ = fingerprint(name, payload)
        known = self._rules.recall(request_id, print_)
        if known is not None:
            if known.refusal is not None:
                raise Refused(known.refusal)
            return
        before = self._state.checkpoint() if self.all_or_nothing else None
        if self.all_or_nothing and request_id is not None and self.journal is not None:
            self.journal.request = RequestMark(request_id=request_id, fingerprint=print_)
        try:
            if signal and name in c.UPDATE_ONLY:
                raise Refused(f"{name!r} is sent as an update only, to be answered: {c.UPDATE_MIGRATE}.")
            await self._do(name, parse_command(name, payload), payload)
        except AlreadyApplied as applied:  # long ago: the run's ledger no longer had it
            assert before is not None
            self._state.roll_back(before)
            if applied.fingerprint == print_:
                self._state.remember(request_id, print_)
                return
            self._state.remember(request_id, applied.fingerprint)  # its retries: applied
            err = self._rules.reused(request_id)
            err.fresh = True
            raise err from None
        except Refused as err:
            if before is not None:
                self._state.roll_back(before)
            if isinstance(err, Unavailable):
                self.away = True
            if isinstance(err, HandingOver):
                raise  # not an answer: the same request is applied later (the next run, or again)
            self._state.remember(request_id, print_, str(err))
            err.fresh = True  # decided now: the caller records it, then its event (`refused_event`)
            raise
        finally:
            if self.journal is not None:
                self.journal.request = None
        self._state.remember(request_id, print_)

    async def refused_event(self, err: Refused, name: str, payload: Any, request_id: str | None) -> None:
        """The business event of a refusal decided now (not of a repeat, answered from the
        ledger), once the refusal is in the state."""
        if getattr(err, "fresh", False):
            await self._recorded(name, str(err), payload, request_id)

    async def _recorded(self, name: str, reason: str, payload: Any, request_id: str | None) -> None:
        """A refusal's business event, once per request (a repeat is answered from the ledger):
        what a sender put in it stored safely (text PostgreSQL can hold, bounded), with the
        command's fingerprint to tell which it was. If it cannot be written now, the refusal is
        in `rejected` all the same."""
        if self.record is None:
            return
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
            digest=fingerprint(name, payload) if self.all_or_nothing else None,
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
        try:
            known = self._rules.recall(request_id, fingerprint(name, payload))
            if known is not None:
                if known.refusal is not None and not known.recorded:
                    raise Refused(known.refusal)  # refused as an update: recorded now, once
                return
            await self.apply(name, one_payload(args), request_id, signal=True)
        except Unavailable:
            self._state.retry.append(DeferredCommand(name=name, args=list(args)))
        except Refused as err:
            self.reject(name, str(err), payload, via="signal")
            answer = self._state.answer(request_id)
            if answer is not None and answer.refusal is not None and str(err).startswith(answer.refusal[:-1]):
                answer.recorded = True
            await self.refused_event(err, name, payload, request_id)

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
            if self._state.pending_entry is not None:  # runs from before tasks outlived runs
                if json_safe(args):  # what the next run gets must serialise
                    self._state.deferred.append(DeferredCommand(name=name, args=args))
                    return
            if (self._state.retry or self.away) and self._state.can_carry(args):
                self._state.retry.append(DeferredCommand(name=name, args=args))  # behind those waiting
                return
            await self.apply_signal(name, args)

    def retry_due(self) -> bool:
        """Signals wait, and no step gave up since the retry timer last ran out."""
        return bool(self._state.retry) and not self.away

    async def retry_waiting(self) -> None:
        """Try the signals that wait again, in order (under the lock), up to one that must wait
        again: it and those after it wait on."""
        waiting, self._state.retry = self._state.retry, []
        for i, cmd in enumerate(waiting):
            await self.apply_signal(cmd.name, tuple(cmd.args))
            if self._state.retry:
                self._state.retry.extend(waiting[i + 1 :])
                return

    def _not_now(self) -> Unavailable | None:
        """Why an update is not tried now: a step gave up a moment ago, or signals wait before it."""
        if self.away:
            return Unavailable(_AWAY)
        if self._state.retry:
            return Unavailable(
                "Not applied now: commands sent before it wait for PostgreSQL; send the command"
                " again with the same request id in a few seconds."
            )
        return None

    async def update(self, name: str, raw: Sequence[RawValue]) -> StateView:
        await workflow.wait_condition(self._ready)
        self._handover.updates += 1
        info = workflow.current_update_info()
        async with self._lock:
            payload: Any = None
            request_id = info.id if info else None
            try:
                payload = one_payload([decode(r) for r in raw])
                request_id = request_id_of(payload) or request_id
                if self.all_or_nothing:
                    if self.retry_due():
                        await self.retry_waiting()  # those sent before it first
                    not_now = self._not_now()
                    if not_now is not None:
                        raise not_now
                await self.apply(name, payload, request_id)
            except Unavailable as err:
                self.refused(name, str(err), via="update")
                raise ApplicationError(str(err), type=c.UNAVAILABLE) from None
            except HandingOver as err:
                raise ApplicationError(str(err), type=c.HANDING_OVER) from None
            except Refused as err:
                if isinstance(err, NotAllowed):  # recorded, as for a signal: who tried what
                    self.reject(name, str(err), payload, via="update")
                else:
                    self.refused(name, str(err), via="update")
                await self.refused_event(err, name, payload, request_id)
                raise ApplicationError(str(err), type=c.COMMAND_REFUSED, non_retryable=True) from None
            finally:
                if request_id is not None:  # admitted by the validator under the same key
                    self._admitted.pop(request_id, None)
        return self._state.view()

    def validate(self, update: str, raw: Sequence[RawValue]) -> None:
        """Update validators: refuse before anything enters history, where state allows. They
        change nothing but `_admitted`, which only validators read (they do not run on replay)."""
        name = c.COMMAND_OF_UPDATE.get(update, update)
        try:
            if update not in c.COMMAND_OF_UPDATE:
                raise Refused(f"Unknown update {update!r}; updates: {', '.join(c.COMMAND_OF_UPDATE)}.")
            payload = one_payload([decode(r) for r in raw])
            if not self._ready():
                return
            if self.all_or_nothing and self.away:  # a step gave up a moment ago
                raise Unavailable(_AWAY)
            if self._handover.flooded():
                raise HandingOver(
                    "The process is handing over to a new run; send the command again with the same"
                    " request id (the product's clients do this on their own)."
                )
            info = workflow.current_update_info()
            request_id = request_id_of(payload) or (info.id if info else None)
            print_ = fingerprint(name, payload)
            admitted = self._admitted.get(request_id) if request_id else None
            if admitted is not None and admitted != print_:
                raise Refused(f"Request id {request_id!r} was used for another command (being applied now).")
            if admitted is not None or self._rules.recall(request_id, print_) is not None:
                return  # a delivery of a request in hand: the handler gives it that request's answer
            self._rules.check(parse_command(name, payload), now=workflow.now())
            if request_id is not None:
                self._admitted[request_id] = print_
        except Unavailable as err:
            self.refused(name, str(err), via="update")
            raise ApplicationError(str(err), type=c.UNAVAILABLE) from None
        except HandingOver as err:
            raise ApplicationError(str(err), type=c.HANDING_OVER) from None
        except Refused as err:
            self.refused(name, str(err), via="update")
            raise ApplicationError(str(err), type=c.COMMAND_REFUSED, non_retryable=True) from None
