"""The process calls its steps by the names and shapes of workflows/step_defs.py; the worker
registers the activities of activities/. They must agree, step for step."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

from temporalio import activity

from activities.data.writes import WRITES
from activities.sale import SaleActivities
from workflows import step_defs, steps
from workflows.steps import CommandWrite


def _shape(fn: Callable[..., Any]) -> tuple[str | None, list[Any], Any]:
    hints = get_type_hints(fn)
    params = [hints[p] for p in inspect.signature(fn).parameters if p != "self"]
    defn = activity._Definition.from_callable(fn)
    return (defn.name if defn else None), params, hints.get("return")


def test_every_step_the_process_takes_is_an_activity_the_worker_registers_with_its_shape() -> None:
    declared = {
        name: _shape(fn)
        for name, fn in vars(step_defs).items()
        if inspect.iscoroutinefunction(fn) and activity._Definition.from_callable(fn) is not None
    }
    registered = {
        fn.__name__: _shape(fn)
        for fn in vars(SaleActivities).values()
        if inspect.iscoroutinefunction(fn) and activity._Definition.from_callable(fn) is not None
    }
    assert declared, "no step declared"
    for name, shape in declared.items():
        assert registered.get(name) == shape, (name, shape, registered.get(name))


def test_every_command_write_is_registered_under_its_step_with_its_row() -> None:
    rows = {m for m in vars(steps).values() if isinstance(m, type) and issubclass(m, CommandWrite)}
    rows.discard(CommandWrite)
    assert rows == set(WRITES), (
        "each CommandWrite of workflows/steps.py has its entry in activities/data/writes.py"
    )
    registered = {_shape(fn)[0]: _shape(fn) for fn in SaleActivities(None).all()}
    for row in rows:
        assert registered.get(row.STEP) == (row.STEP, [row], type(None)), (row.STEP, registered.get(row.STEP))
