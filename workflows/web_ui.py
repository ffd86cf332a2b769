"""What ops read of a run in the Web UI (R15): its search attributes (stage, owner, amount) and
its one-line current detail (stage, tasks done of total, next due)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from workflows.search_attributes import AMOUNT_ATTR, OWNER_ATTR, STAGE_ATTR
    from workflows.state import SaleState


def publish(state: SaleState) -> None:
    """Bring the run's search attributes and detail to what the state says."""
    amount = state.data.get("expected_amount")
    wanted: list[tuple[SearchAttributeKey[Any], Any]] = [
        (STAGE_ATTR, state.stage or ""),
        (OWNER_ATTR, state.owner),
        (AMOUNT_ATTR, float(amount) if amount is not None else None),
    ]
    current = workflow.info().typed_search_attributes
    updates = [
        key.value_set(value) if value is not None else key.value_unset()
        for key, value in wanted
        if current.get(key) != value
    ]
    if updates:
        workflow.upsert_search_attributes(updates)
    workflow.set_current_details(detail(state))


def detail(state: SaleState) -> str:
    if state.closed:
        return f"{state.stage} (closed)"
    if state.pending_entry is not None:
        return f"entering {state.pending_entry.stage} in a new run"
    done, total = state.progress()
    line = f"{state.stage}: {done} of {total} tasks done"
    open_due = sorted(t.due_at for t in state.open_tasks())
    line += f", next due {open_due[0]:%Y-%m-%d %H:%M} UTC" if open_due else ""
    if state.waiting is not None:
        missing = ", ".join(state.missing_to_enter(state.waiting.stage))
        line += f"; waiting to enter {state.waiting.stage}: missing {missing}"
    to_fill = state.to_fill()
    return line + (f"; to fill in: {', '.join(to_fill)}" if to_fill else "")
