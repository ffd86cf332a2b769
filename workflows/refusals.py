"""How a command is refused, and how its payload is read (plain Python, nothing of Temporal):
the rules (workflows/rules.py) and the desk that takes commands (workflows/commands.py) refuse by
raising one of these, whose message says why and what to do instead."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from workflows import contract as c

M = TypeVar("M", bound=BaseModel)


class Refused(Exception):
    """A command that the rules refuse; its message says why and what to do instead."""


class HandingOver(Refused):
    """Not refused for good: the command reaches the process's next run if sent again."""


class Unavailable(HandingOver):
    """Not now: a step gave up (PostgreSQL not answering). The command was not applied, and the
    same request sent again is; a signal waits in the run and is tried again on its own."""


class AlreadyApplied(Exception):
    """The command's request was applied before (PostgreSQL has it, though the run's ledger no
    longer does): the command applies nothing; `fingerprint` is what that request was."""

    def __init__(self, fingerprint: str) -> None:
        super().__init__(f"applied before as {fingerprint}")
        self.fingerprint = fingerprint


# After a step gave up, how long a process tries no step (signals wait, updates are not now).
RETRY_AFTER = timedelta(seconds=10)


class NotAllowed(Refused):
    """The actor may not (R24), or is not vouched for where that is required; recorded."""


class GateClosed(Refused):
    """The stage's entry requirements are not met (a gate): the message lists what is missing."""


COMMAND_MODELS: dict[str, type[BaseModel]] = {spec.name: spec.model for spec in c.COMMANDS} | c.UPDATE_ONLY


def validation_message(err: ValidationError, what: str = "Malformed payload") -> str:
    """A pydantic error as one line that names each field: "what: field: problem; ..."."""
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "payload"
        parts.append(f"{where}: {e['msg']}")
    return f"{what}: " + "; ".join(parts)


def parse(model: type[M], payload: Any) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as err:
        raise Refused(validation_message(err)) from None


def parse_command(name: str, payload: Any) -> BaseModel:
    if name not in COMMAND_MODELS:
        raise Refused(f"Unknown command {name!r}; commands: {', '.join(COMMAND_MODELS)}.")
    return parse(COMMAND_MODELS[name], payload)


def one_payload(args: Sequence[Any]) -> Any:
    if len(args) != 1:
        raise Refused(f"Malformed payload: send one JSON object, not {len(args)} arguments.")
    return args[0]


def request_id_of(payload: Any) -> str | None:
    """The request id of a payload that may not have parsed (only a well-formed one counts: one
    the contract's models would take)."""
    value = payload.get("request_id") if isinstance(payload, dict) else None
    return value if isinstance(value, str) and _REQUEST_ID.fullmatch(value) else None


_REQUEST_ID = re.compile(r"[\w.\-:]{1,100}")  # what `contract.Identifier` takes
