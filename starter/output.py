"""What the `corpsale` commands print: JSON, tables, a process's state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from workflows.contract import StateView


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def print_json(value: Any) -> None:
    print(json.dumps(value, default=_json_default, indent=2, ensure_ascii=False))


def when(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M}"


def print_guide(goal: str | None, guidance: Sequence[str], to_fill: Sequence[str]) -> None:
    """What the current stage is for, what is recommended there, and what is still to fill in."""
    if goal:
        print(f"  goal: {goal}")
    for line in guidance:
        print(f"  · {line}")
    if to_fill:
        print(f"  to fill in: {', '.join(to_fill)} (corpsale update ID --set FIELD=VALUE)")


def print_state(state: StateView, *, guidance: bool = False) -> None:
    """A process's state; the stage's goal and what is still to fill in, and with `guidance` what
    is recommended at the stage too."""
    status = "closed" if state.closed else "open"
    print(
        f"Opportunity {state.opportunity_id}: {state.stage} ({status}), owner {state.owner}, {state.process}"
    )
    print_guide(state.stage_goal, state.stage_guidance if guidance else (), state.to_fill)
    if state.waiting_to_enter:
        missing = ", ".join(state.missing)
        print(f"  every task is done; moves on to {state.waiting_to_enter} once it has: {missing}")
    if state.tasks_total:
        print(f"  tasks of this visit: {state.tasks_done} of {state.tasks_total} done")
    for t in state.open_tasks:
        who = (
            (  # a team's task: its queue's until a member claims it
                f"team {t.team}'s"
                if t.team and t.owner == f"team:{t.team}"
                else f"{t.owner}'s (team {t.team})"
            )
            if t.team
            else f"{t.owner}'s"
        )
        whose = f"{who} approval, " if t.approval else (f"{who}, " if t.owner != state.owner else "")
        print(
            f"  [ ] {t.task_id}  {t.title}  ({whose}due {when(t.due_at)}, outcomes: {', '.join(t.outcomes)})"
        )
    if state.rejected:
        last = state.rejected[-1]
        print(f"  last refused command: {last.command}: {last.reason}")


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    def cell(v: Any) -> str:
        return when(v) if isinstance(v, datetime) else ("" if v is None else str(v))

    widths = [max([len(col), *(len(cell(r.get(col))) for r in rows)]) for col in columns]
    print("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(cell(r.get(col)).ljust(w) for col, w in zip(columns, widths, strict=True)))


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, as_json: bool, empty: str) -> None:
    """A list command's answer: the rows as JSON, a table, or the line that says there are none."""
    if as_json:
        print_json(rows)
    elif not rows:
        print(empty)
    else:
        print_table(rows, columns)


def shown(value: Any) -> str:
    """A value as a table shows it: nothing to show (no quota, no rate yet) as a dash."""
    return "—" if value is None else str(value)
