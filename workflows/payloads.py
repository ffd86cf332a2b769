"""What comes into a process raw, read here rather than by the SDK: a command's payloads and the
start input. One that does not decode is refused with a reason instead of failing a workflow task
(a signal handler or a start that raised would leave the run stuck). And a start that cannot be
this opportunity's process, or cannot open where the opportunity is, fails its run at once."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import contract as c
    from workflows.definition import Process
    from workflows.refusals import Refused, validation_message
    from workflows.state import ProcessInput

# What the run is given when a start sends no input at all.
NO_START = RawValue(Payload())


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


def refuse_bad_start(bad: str | None, start: ProcessInput | None) -> None:
    """R22: fail at once, before anything is written, a run whose start cannot be this
    opportunity's process (`bad`: why its input did not decode)."""
    info = workflow.info()
    problem = bad or start_problem(start, info.workflow_id, info.continued_run_id)
    if problem is not None:
        raise ApplicationError(problem, type=c.INVALID_START, non_retryable=True)


def refuse_opening(opportunity_id: str, stage: str, process: Process) -> None:
    """Fail a run that would open at a stage the stages lookup does not have."""
    if not process.has_stage(stage):
        raise ApplicationError(
            f"Opportunity {opportunity_id!r} is at stage {stage!r}, which the stages lookup does not"
            " have: add the stage to the lookup, or correct the opportunity.",
            type="UnknownStage",
            non_retryable=True,
        )
