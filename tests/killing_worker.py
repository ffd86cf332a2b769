"""The product's worker, dying as if SIGKILLed the moment one step of a process has committed:
`python -m tests.killing_worker STEP FIELD=VALUE` (say, `enter_stage stage=Proposal`). The step's
transaction is in PostgreSQL; the workflow task that ran it never completes: a lost workflow task,
made on purpose and at the worst moment, for the tests of R28 (tests/test_journal.py)."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

import worker.main as main


class _DieAfter(Interceptor):
    def __init__(self, step: str, field: str, value: str) -> None:
        self._step, self._field, self._value = step, field, value

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Dying(next, self)


class _Dying(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, when: _DieAfter) -> None:
        super().__init__(next)
        self._when = when

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await self.next.execute_activity(input)
        arg = input.args[0] if input.args else None
        if activity.info().activity_type == self._when._step and str(getattr(arg, self._when._field, "")) == (
            self._when._value
        ):
            os._exit(9)  # committed; the workflow task never hears of it
        return result


if __name__ == "__main__":
    step, condition = sys.argv[1], sys.argv[2]
    field, value = condition.split("=", 1)
    main.build_worker = functools.partial(main.build_worker, interceptors=[_DieAfter(step, field, value)])
    main.main()
