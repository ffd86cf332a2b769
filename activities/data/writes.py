"""The commands' writes that the process sends by name (`Store.write`): the row model of each
(workflows/steps.py, a `CommandWrite` that names its step) and what it does, in its caller's
transaction. The worker registers a local activity for each, under the step's name, journaled as
every write of a process is (activities/sale.py). A new command's data step is one entry here
(docs/adding-a-command.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from activities.data import claims, repository
from workflows.steps import ClaimRow, CommandWrite, SnoozeRow

WRITES: dict[type[CommandWrite], Callable[[asyncpg.Connection, Any], Awaitable[None]]] = {
    SnoozeRow: repository.snooze_task,
    ClaimRow: claims.claim_task,
}
