"""What the `corpsale` commands share: one-line errors, the connections to Temporal and
PostgreSQL, who acts, and one parser per kind of input (dates, numbers, stages, tasks, data)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from starter.client import QUERY_TIMEOUT
from worker.config import current
from workflows import contract as c
from workflows.contract import OpportunityFields, StateView

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def command_timeout() -> float:
    """Seconds a command waits for the process to answer (a worker must be running)."""
    return current().command_timeout


def query_timeout() -> timedelta:
    """A query's: the client's, or the command's if that is shorter."""
    return min(QUERY_TIMEOUT, timedelta(seconds=command_timeout()))


class CliError(Exception):
    """An error for the operator: printed as one line, exit code 1."""


# Connections --------------------------------------------------------------------------------


async def temporal(*, sending_to: str | None = None) -> Client:
    """The client; with `sending_to` (a task queue), for commands to its processes, once this
    shell's encryption key is known to be the one their workers use (`check_encryption`)."""
    from worker.config import connect_temporal

    if sending_to is not None:
        await check_encryption(sending_to)
    try:
        return await connect_temporal()
    except RuntimeError as err:
        address = current().temporal_target
        raise CliError(
            f"cannot reach Temporal at {address} ({err}); start the stack with"
            " `python3 dev.py`, or set TEMPORAL_ADDRESS"
        ) from None


async def check_encryption(task_queue: str) -> None:
    """Refuse to send, before anything is sent, when this shell's CORPSALE_ENCRYPTION_KEY is not
    the one the task queue's workers announced (activities/data/worker_keys.py): without it, a
    command would reach the history in the clear and its answer could not be read; with a key
    the workers lack, they could not read it. Nothing to check against (no worker has started on
    the queue, a database out of reach): the command goes as before."""
    from activities.data import worker_keys

    try:
        announced = await with_db(lambda conn: worker_keys.announced(conn, task_queue))
    except CliError:
        return
    mine = current().key_id()
    if announced is None or announced[0] == mine:
        return
    theirs = announced[0]
    if mine is None:
        problem = (
            f"the workers of task queue {task_queue!r} encrypt the process's data (key {theirs}):"
            " set CORPSALE_ENCRYPTION_KEY in this shell to their key (`corpsale dev` prints where it is)"
        )
    elif theirs is None:
        problem = (
            f"this shell encrypts with CORPSALE_ENCRYPTION_KEY (key {mine}), but the workers of task"
            f" queue {task_queue!r} encrypt nothing and could not read it: unset it in this shell, or"
            " restart the workers with it"
        )
    else:
        problem = (
            f"this shell's CORPSALE_ENCRYPTION_KEY is key {mine}, but the workers of task queue"
            f" {task_queue!r} encrypt with key {theirs}: set it to theirs"
        )
    raise CliError(f"{problem}; nothing was sent")


async def with_db(work: Callable[[Any], Awaitable[T]]) -> T:
    from activities.data.db import create_pool
    from activities.data.errors import Refused
    from worker.database import cli_database_url

    try:
        url = cli_database_url(current())
    except LookupError as err:
        raise CliError(str(err)) from None
    try:
        pool = await create_pool(url, max_size=2)
    except Exception as err:  # asyncpg and the embedded server raise many kinds; the text says it
        raise CliError(
            f"cannot reach the database ({err}); start the stack with `python3 dev.py`, or set DATABASE_URL"
        ) from None
    try:
        async with pool.acquire() as conn:
            return await work(conn)
    except Refused as err:  # a rule of the product said no: one line, no traceback
        raise CliError(str(err)) from None
    finally:
        await pool.close()


def explain(err: BaseException, opportunity_id: str) -> CliError:
    """Turn Temporal's errors into a line an operator can act on."""
    if isinstance(err, WorkflowUpdateFailedError) and isinstance(err.cause, ApplicationError):
        return CliError(err.cause.message)
    if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND:
        return CliError(
            f"no running process for opportunity {opportunity_id!r}; start it with"
            f" `corpsale start --existing {opportunity_id}`"
        )
    if isinstance(err, WorkflowFailureError):
        cause = err.cause
        while cause.__cause__ is not None and not isinstance(cause, ApplicationError):
            cause = cause.__cause__
        return CliError(getattr(cause, "message", str(cause)))
    return CliError(str(err))


async def no_process(opportunity_id: str) -> CliError:
    """An opportunity without a process, with a hint that works: start its process when the
    opportunity exists, else create one (a hint to start a process for an opportunity that does
    not exist would only lead to a second error)."""
    from activities.data import repository

    found = await with_db(lambda conn: repository.opportunity_stage(conn, opportunity_id))
    if found is None:
        return CliError(
            f"no opportunity {opportunity_id!r}; `corpsale list` shows them, and `corpsale start --title ..."
            " --customer ... --owner ...` creates one"
        )
    return CliError(
        f"no running process for opportunity {opportunity_id!r}; start it with"
        f" `corpsale start --existing {opportunity_id}`"
    )


async def explained(err: BaseException, opportunity_id: str) -> CliError:
    """`explain`, with `no_process` for an opportunity that has none."""
    if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND:
        return await no_process(opportunity_id)
    return explain(err, opportunity_id)


async def state_when_ready(
    client: Client, opportunity_id: str, *, timeout: float | None = None
) -> StateView | None:
    handle = client.get_workflow_handle(c.workflow_id(opportunity_id))
    deadline = asyncio.get_running_loop().time() + (timeout or command_timeout())
    while asyncio.get_running_loop().time() < deadline:
        desc = await handle.describe()
        if desc.status not in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED):
            try:
                await handle.result()
            except WorkflowFailureError as err:
                raise explain(err, opportunity_id) from None
        state: StateView | None = None
        with contextlib.suppress(RPCError, WorkflowQueryFailedError):  # no worker took it up yet
            state = await handle.query(
                c.QUERY_STATE,
                result_type=StateView,
                rpc_timeout=query_timeout(),
            )
        if state is not None and state.visit > 0:
            return state
        await asyncio.sleep(0.2)
    return None


async def stage_name(text: str) -> str:
    """A stage of the lookup as the operator typed it: the name itself, or the one it names in
    another case ("proposal"); CliError with a guess for a name the lookup does not have."""
    from activities.data import repository
    from workflows.definition import did_you_mean

    names = [st.name for st in await with_db(repository.load_stages)]
    if text in names:
        return text
    same = [n for n in names if n.casefold() == text.casefold()]
    if len(same) == 1:
        return same[0]
    raise CliError(f"no stage {text!r}. {did_you_mean(text, names)}Stages: {', '.join(names)}")


async def task_by_key(opportunity_id: str, text: str) -> str:
    """The task an operator names: its id, or its key (`contact-assess`, `adhoc2`) where that names
    one open task of the process, or a follow-up task of a won opportunity."""
    if ":" in text:
        return text
    client = await temporal()
    try:
        state: StateView = await client.get_workflow_handle(c.workflow_id(opportunity_id)).query(
            c.QUERY_STATE, result_type=StateView, rpc_timeout=query_timeout()
        )
    except (RPCError, WorkflowQueryFailedError) as err:
        raise CliError(
            f"cannot read the process of {opportunity_id!r} to find task {text!r}: {err}"
        ) from None
    if state.closed:
        return c.follow_up_task_id(opportunity_id, text)
    found = [t.task_id for t in state.open_tasks if t.task_id.rsplit(":", 1)[-1] == text]
    if len(found) == 1:
        return found[0]
    keys = ", ".join(t.task_id.rsplit(":", 1)[-1] for t in state.open_tasks) or "none"
    raise CliError(f"no open task {text!r} in {opportunity_id!r}; its open tasks: {keys}")


# Parsing ------------------------------------------------------------------------------------


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date or date-time from the command line; without a zone, UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"not a date or date-time: {text!r}; write 2030-05-04 or 2030-05-04T10:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_span(text: str) -> timedelta:
    """A span of time from the command line: a whole number and a unit, `30m`, `4h`, `2d`, `1w`."""
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in units or not number.isdigit() or not 0 < int(number) <= 100_000:
        raise CliError(f"not a span of time: {text!r}; write a number and a unit: 30m, 4h, 2d, 1w")
    return timedelta(**{units[unit]: int(number)})


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (at most a million)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{value} is out of range: give 1 to 1000000")
    return value


def default_actor() -> str:
    return current().actor or getpass.getuser()


async def acting_as(requested: str) -> str:
    """Who a command is from (R24): the operating-system user, or the person an admin names
    (--actor, $CORPSALE_ACTOR). The process then judges the command as that person's."""
    from activities.data import access

    me = getpass.getuser()
    if requested == me or await with_db(lambda conn: access.is_admin(conn, me)):
        return requested
    raise CliError(
        f"you are {me!r}: only an admin acts as someone else ({requested!r}); leave out --actor and"
        " $CORPSALE_ACTOR, or ask an admin (`corpsale people set NAME --role admin`)"
    )


def service_key() -> tuple[str, str] | None:
    """The key this CLI signs commands with ($CORPSALE_SERVICE_KEY, SERVICE:SECRET), if any."""
    return current().signing_key()  # checked when the settings were read


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
        )
        raise CliError(f"invalid input: {problems}") from None


def parse_fields(pairs: list[str], data: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    # Opportunity fields are flat: JSON nested deeper than Python can follow is refused, not a crash.
    too_deep = (
        "--data is nested too deeply; send a flat JSON object of opportunity fields,"
        """ e.g. --data '{"need": "40 vans", "budget": 50000}', or --set FIELD=VALUE"""
    )
    if data:
        try:
            loaded = json.loads(data)
        except json.JSONDecodeError as err:
            raise CliError(f"--data is not valid JSON: {err}") from None
        except RecursionError:
            raise CliError(too_deep) from None
        if not isinstance(loaded, dict):
            raise CliError("--data must be a JSON object of opportunity fields")
        fields.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"--set takes FIELD=VALUE, got {pair!r}")
        fields[name.strip()] = value
    known = set(OpportunityFields.model_fields)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise CliError(f"unknown field(s) {', '.join(unknown)}; fields: {', '.join(sorted(known))}")
    try:
        parse_model(OpportunityFields, fields)
    except RecursionError:
        raise CliError(too_deep) from None
    return fields


def command_parser(sub: Any, name: str, *, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A command (or a group of commands) whose one-line help also heads its own `--help` page."""
    kwargs.setdefault("description", help)
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, **kwargs)
    return parser


def listing_group(sub: Any, name: str, *, help: str, description: str | None, run: Any, what: str) -> Any:
    """A command group whose bare form, and its `list` sub-command, list `what` (`--json`);
    returns the sub-parsers for its other commands."""
    group = command_parser(sub, name, help=help, description=description)
    group.add_argument("--json", action="store_true", help="print JSON")
    group.set_defaults(run=run)
    commands = group.add_subparsers(dest=f"{name}_command", metavar=f"{name.upper()}_COMMAND")
    listing = command_parser(commands, "list", help=what)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=run)
    return commands


def add_command(
    sub: Any, name: str, help_: str, *, actor: bool = False, opportunity: bool = False, json_out: bool = True
) -> argparse.ArgumentParser:
    """A `corpsale` command with the options its kind takes: the opportunity it acts on, who acts
    (and a request id), JSON output."""
    p = command_parser(sub, name, help=help_)
    if opportunity:
        p.add_argument("opportunity", metavar="OPPORTUNITY_ID", help="the opportunity's id")
    if actor:
        p.add_argument(
            "--actor",
            default=default_actor(),
            help="who does it (default: $CORPSALE_ACTOR or your user name; someone else: admins only)",
        )
        p.add_argument(
            "--request-id",
            help="the command's request id (default: a new one): the same id again is applied once",
        )
    if json_out:
        p.add_argument("--json", action="store_true", help="print JSON")
    return p
