"""The run's side of its opportunity's journal (activities/data/journal.py): each write it makes carries
a fence, so that PostgreSQL can undo what a lost attempt of a workflow task wrote, refuse what is
left of one, and confirm what the run has settled for good.

A write's number follows the writes the run has settled (their count is in the state, carried
across continue-as-new); its chain is a digest of the writes up to it, so a retry of the same
write is known from another write under the same number. It is decided at a point of the run: the
run's number and the history length of the workflow task that decided it (a later attempt of a
workflow task has a history at least as long). What the run settled before the workflow task
under way began is in history for good (`durable`): a write passes it on, to be confirmed.

Nothing here decides what the process does: the journal's numbers and chains go to the local
activities' inputs and to the `journal` query only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.state import SaleState
    from workflows.steps import Fence, JournalStart, JournalView, RequestMark


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _timeless(value: Any) -> Any:
    """`value` without its times: what tells one write from another. A time is the workflow's
    clock when the write was decided, which a replay can read a moment apart from the run that
    wrote it (a local activity's result handed over a workflow task late); the same write
    decided again a moment later is the same write."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if not isinstance(v, datetime)}
    if isinstance(value, list | tuple):
        return [_timeless(v) for v in value if not isinstance(v, datetime)]
    return value


def _content(row: BaseModel) -> dict[str, Any]:
    """What the digest of a write covers: the row without its fence and check, and without the
    fields added since runs were recorded (`Write.LATER`) while they are at their default, so a
    run from before them replays to the same chain."""
    content = row.model_dump(exclude={"fence", "check"})
    for name in getattr(row, "LATER", ()):
        if content.get(name) == type(row).model_fields[name].default:
            del content[name]
    return content


class Journal:
    def __init__(self, state: SaleState) -> None:
        self._state = state
        self._length = 0  # the history length when the run last looked
        self._attempt_at: datetime | None = None  # when the run first saw that length
        self._committed = (state.writes, state.chain)  # the writes of the commands that ended
        self._durable = self._committed  # committed before the workflow task under way began
        self._pending: Fence | None = None  # the write in flight
        self.request: RequestMark | None = None  # the command under way's, for its first write

    def _look(self) -> None:
        """A longer history than last time: the workflow task of then has completed, and with it
        the commands that had ended by then."""
        length = workflow.info().get_current_history_length()
        if length != self._length:
            self._durable, self._length, self._attempt_at = self._committed, length, workflow.now()

    def observe(self) -> bool:
        """A condition the run waits on for ever (`workflow.wait_condition`): the SDK checks it in
        the first activation of each workflow task, whose time is when that attempt began (a later
        activation's is a local activity's end), so two attempts of a task that see the same
        history length are told apart."""
        self._look()
        return False

    def fence(self, row: BaseModel) -> Fence:
        """The fence of the next write, `row` (its digest leaves out its `fence`, the permission
        check it makes first, and its times)."""
        self._look()
        state, info = self._state, workflow.info()
        content = json.dumps(_timeless(_content(row)), sort_keys=True, default=str)
        digest = _digest(content)
        opening = state.writes == 0 and state.run_no == 0
        self._pending = Fence(
            process=info.first_execution_run_id,
            run_id=info.run_id,
            run_no=state.run_no,
            history_length=self._length,
            attempt_at=self._attempt_at,
            number=None if opening else state.writes + 1,
            chain=_digest(f"{'' if opening else state.chain}:{digest}"),
            prev_chain="" if opening else state.chain,
            durable=self._durable[0],
            durable_chain=self._durable[1],
            request=self.request,
        )
        self.request = None  # the command's first write marks it applied
        return self._pending

    def settled(self, fence: Fence, start: JournalStart | None = None) -> None:
        """The write is in PostgreSQL (an opening: where the journal placed it)."""
        self._look()
        state = self._state
        if start is not None:
            state.writes, state.chain, state.run_no = start.number, start.chain, start.run_no
        else:
            assert fence.number is not None
            state.writes, state.chain = fence.number, fence.chain
        self._pending = None

    def failed(self) -> None:
        """The write did not go through (its step gave up): the next one takes its number."""
        self._pending = None

    def commit(self) -> None:
        """A command (or a notice) has ended, applied or refused: what it wrote stands. One that
        gave up has put the state back first, and the next write undoes what it wrote."""
        self._look()
        self._committed = (self._state.writes, self._state.chain)

    def view(self) -> JournalView:
        """What the run has settled for good (the commands that ended), and up to which write it
        holds or has in flight (a command under way)."""
        state, pending = self._state, self._pending
        return JournalView(
            process=workflow.info().first_execution_run_id,
            writes=self._committed[0],
            chain=self._committed[1],
            holding=max(state.writes, pending.number or 0) if pending else state.writes,
            run_no=state.run_no,
            history_length=self._length,
            attempt_at=self._attempt_at,
        )


class ProcessLock(asyncio.Lock):
    """The process's one lock: a command, a notice, a hand-over at a time. Let go, it tells the
    journal that what was written under it stands."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self._journal = journal

    def release(self) -> None:
        self._journal.commit()
        super().release()
