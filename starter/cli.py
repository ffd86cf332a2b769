"""`corpsale`: start and drive corporate sale processes, and look at opportunities.

Commands go to the process as Temporal updates, so each answers with the new state or a clear
refusal. Reads of opportunities come from PostgreSQL. Errors are one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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

from starter import schemas
from starter.client import CommandRefused, CommandUnanswered, SaleClient, start_process
from workflows import contract as c
from workflows.contract import NewOpportunity, OpportunityFields, StateView
from workflows.state import ProcessInput

T = TypeVar("T")
# How long a command waits for the process to answer (a worker must be running).
COMMAND_TIMEOUT = float(os.environ.get("CORPSALE_COMMAND_TIMEOUT", "30"))
QUERY_TIMEOUT = timedelta(seconds=min(10.0, COMMAND_TIMEOUT))
M = TypeVar("M", bound=BaseModel)


class CliError(Exception):
    """An error for the operator: printed as one line, exit code 1."""


# Output -------------------------------------------------------------------------------------


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


def _when(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M}"


def print_state(state: StateView) -> None:
    status = "closed" if state.closed else "open"
    print(f"Opportunity {state.opportunity_id}: {state.stage} ({status}), owner {state.owner}")
    print(f"  tasks of this visit: {state.tasks_done} of {state.tasks_total} done")
    for t in state.open_tasks:
        print(f"  [ ] {t.task_id}  {t.title}  (due {_when(t.due_at)}, outcomes: {', '.join(t.outcomes)})")
    if state.rejected:
        last = state.rejected[-1]
        print(f"  last refused command: {last.command}: {last.reason}")


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    def cell(v: Any) -> str:
        return _when(v) if isinstance(v, datetime) else ("" if v is None else str(v))

    widths = [max([len(col), *(len(cell(r.get(col))) for r in rows)]) for col in columns]
    print("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(cell(r.get(col)).ljust(w) for col, w in zip(columns, widths, strict=True)))


# Connections --------------------------------------------------------------------------------


async def _client() -> Client:
    from worker.config import DEFAULT_TEMPORAL_ADDRESS, connect_temporal

    try:
        return await connect_temporal()
    except RuntimeError as err:
        address = os.environ.get("TEMPORAL_ADDRESS", DEFAULT_TEMPORAL_ADDRESS)
        raise CliError(
            f"cannot reach Temporal at {address} ({err}); start the stack with"
            " `python3 dev.py`, or set TEMPORAL_ADDRESS"
        ) from None


async def _with_db(work: Callable[[Any], Awaitable[T]]) -> T:
    from activities.db import create_pool
    from activities.errors import Refused
    from worker.config import Settings
    from worker.database import cli_database_url

    try:
        url = cli_database_url(Settings())
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


def _explain(err: BaseException, opportunity_id: str) -> CliError:
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


# Commands -----------------------------------------------------------------------------------


async def _state_when_ready(
    client: Client, opportunity_id: str, *, timeout: float = COMMAND_TIMEOUT
) -> StateView | None:
    handle = client.get_workflow_handle(c.workflow_id(opportunity_id))
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        desc = await handle.describe()
        if desc.status not in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED):
            try:
                await handle.result()
            except WorkflowFailureError as err:
                raise _explain(err, opportunity_id) from None
        state: StateView | None = None
        with contextlib.suppress(RPCError, WorkflowQueryFailedError):  # no worker took it up yet
            state = await handle.query(
                c.QUERY_STATE,
                result_type=StateView,
                rpc_timeout=QUERY_TIMEOUT,
            )
        if state is not None and state.visit > 0:
            return state
        await asyncio.sleep(0.2)
    return None


async def cmd_start(args: argparse.Namespace) -> None:
    client = await _client()
    if args.existing:
        opportunity_id, new = args.existing, None
        from activities import repository

        found = await _with_db(lambda conn: repository.opportunity_stage(conn, opportunity_id))
        if found is None:
            raise CliError(
                f"no opportunity {opportunity_id!r}; create one with"
                " `corpsale start --title ... --customer ... --owner ...`"
            )
        if found["closed_at"] is not None:
            raise CliError(
                f"opportunity {opportunity_id!r} is closed in {found['stage']!r}; a final stage is never left"
            )
    else:
        missing = [f"--{n}" for n in ("title", "customer", "owner") if not getattr(args, n)]
        if missing:
            raise CliError(f"a new opportunity needs {', '.join(missing)} (or use --existing ID)")
        opportunity_id = args.id or f"opp-{uuid.uuid4().hex[:12]}"
        fields = _parse_fields(args.set or [], args.data)
        new = _model(
            NewOpportunity, {**fields, "title": args.title, "customer": args.customer, "owner": args.owner}
        )
    actor = await acting_as(args.actor)
    start = _model(ProcessInput, {"opportunity_id": opportunity_id, "actor": actor, "new": new})
    try:
        await start_process(client, start, task_queue=args.task_queue)
    except CommandRefused as err:
        raise CliError(str(err)) from None
    state = await _state_when_ready(client, opportunity_id)
    if state is None:
        raise CliError(
            f"started {c.workflow_id(opportunity_id)}, but no worker has picked it up"
            f" yet: is a worker polling task queue {args.task_queue!r}?"
        )
    print_json(state) if args.json else print_state(state)


async def _send(args: argparse.Namespace, update: str, payload: dict[str, Any]) -> None:
    """A command as an update, with a request id (made up unless --request-id gives one), sent
    again with it while the process answers "not now"."""
    queue = os.environ.get("CORPSALE_TASK_QUEUE", c.DEFAULT_TASK_QUEUE)
    sale = SaleClient(await _client(), queue, key=service_key())
    payload = {k: v for k, v in payload.items() if v is not None}
    if "actor" in payload:
        payload["actor"] = await acting_as(payload["actor"])
    try:
        state = await sale.execute(args.opportunity, update, payload, timeout=COMMAND_TIMEOUT)
    except CommandUnanswered as err:
        raise CliError(str(err).replace("with request id", "with --request-id")) from None
    except CommandRefused as err:
        raise CliError(str(err)) from None
    except (WorkflowUpdateFailedError, RPCError) as err:
        raise _explain(err, args.opportunity) from None
    print_json(state) if args.json else print_state(state)


async def stage_name(text: str) -> str:
    """A stage of the lookup as the operator typed it: the name itself, or the one it names in
    another case ("proposal"); CliError with a guess for a name the lookup does not have."""
    from activities import repository
    from workflows.definition import did_you_mean

    names = [st.name for st in await _with_db(repository.load_stages)]
    if text in names:
        return text
    same = [n for n in names if n.casefold() == text.casefold()]
    if len(same) == 1:
        return same[0]
    raise CliError(f"no stage {text!r}. {did_you_mean(text, names)}Stages: {', '.join(names)}")


async def cmd_move(args: argparse.Namespace) -> None:
    await _send(
        args,
        c.UPDATE_CHANGE_STAGE,
        {
            "stage": await stage_name(args.stage),
            "actor": args.actor,
            "reason": args.reason,
            "restart": args.restart or None,
            "actual_income": args.income,
            "hours_spent": args.hours,
            "competitor": args.competitor,
            "request_id": args.request_id,
        },
    )


async def task_by_key(opportunity_id: str, text: str) -> str:
    """The task an operator names: its id, or its key (`contact-assess`, `adhoc2`) where that names
    one open task of the process, or a follow-up task of a won opportunity."""
    if ":" in text:
        return text
    client = await _client()
    try:
        state: StateView = await client.get_workflow_handle(c.workflow_id(opportunity_id)).query(
            c.QUERY_STATE, result_type=StateView, rpc_timeout=QUERY_TIMEOUT
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


async def cmd_complete(args: argparse.Namespace) -> None:
    args.task_id = await task_by_key(args.opportunity, args.task_id)
    if c.FOLLOW_UP_MARK in args.task_id:
        await _complete_follow_up(args)
        return
    await _send(
        args,
        c.UPDATE_COMPLETE_TASK,
        {
            "task_id": args.task_id,
            "outcome": args.outcome,
            "actor": args.actor,
            "comment": args.comment,
            "actual_income": args.income,
            "hours_spent": args.hours,
            "request_id": args.request_id,
        },
    )


async def _complete_follow_up(args: argparse.Namespace) -> None:
    """A won opportunity's follow-up task: its process has ended, so the row is completed here."""
    from activities import follow_up

    done = await _with_db(
        lambda conn: follow_up.complete(
            conn,
            args.opportunity,
            args.task_id,
            actor=args.actor,
            outcome=args.outcome,
            comment=args.comment,
        )
    )
    # Its workflow (the task's reminders, R20) ends with it; follow-up tasks of runs from before
    # tasks had workflows of their own have none.
    task = (await _client()).get_workflow_handle(c.task_workflow_id(args.task_id))
    with contextlib.suppress(RPCError):
        await task.signal(c.TASK_COMPLETED_SIGNAL, done["outcome"])
    if args.json:
        print_json(done)
    else:
        print(f"{done['task_id']}: completed ({done['outcome']})" + ("" if done["changed"] else " already"))


async def cmd_update(args: argparse.Namespace) -> None:
    fields = _parse_fields(args.set or [], args.data)
    if not fields:
        raise CliError("nothing to update: give --set FIELD=VALUE or --data JSON")
    await _send(
        args, c.UPDATE_UPDATE_OPPORTUNITY, {**fields, "actor": args.actor, "request_id": args.request_id}
    )


async def cmd_add_task(args: argparse.Namespace) -> None:
    await _send(
        args,
        c.UPDATE_ADD_TASK,
        {
            "title": args.title,
            "owner": args.owner,
            "due_at": parse_moment(args.due).isoformat() if args.due else None,
            "actor": args.actor,
            "request_id": args.request_id,
        },
    )


async def cmd_close_details(args: argparse.Namespace) -> None:
    """A won deal's income and hours, recorded after it closed by itself."""
    from activities import closed

    figures = _model(closed.WonFigures, {"actual_income": args.income, "hours_spent": args.hours})
    actor = await acting_as(args.actor)
    row = await _with_db(
        lambda conn: closed.record_won(
            conn, args.opportunity, income=figures.actual_income, hours=figures.hours_spent, actor=actor
        )
    )
    if args.json:
        print_json(row)
    else:
        print(f"{row['id']} ({row['stage']}): income {row['actual_income']}, hours {row['hours_spent']}")


async def cmd_close_reasons(args: argparse.Namespace) -> None:
    from activities import repository

    reasons = await _with_db(repository.close_reasons)
    print_json(reasons) if args.json else print("\n".join(reasons))


async def cmd_reassign(args: argparse.Namespace) -> None:
    await _send(
        args,
        c.UPDATE_REASSIGN,
        {"owner": args.owner, "actor": args.actor, "reason": args.reason, "request_id": args.request_id},
    )


async def cmd_state(args: argparse.Namespace) -> None:
    client = await _client()
    handle = client.get_workflow_handle(c.workflow_id(args.opportunity))
    try:
        state = await handle.query(
            c.QUERY_STATE,
            result_type=StateView,
            rpc_timeout=QUERY_TIMEOUT,
        )
    except RPCError as err:
        raise _explain(err, args.opportunity) from None
    except WorkflowQueryFailedError as err:
        raise CliError(f"the process did not answer the state query: {err}") from None
    print_json(state) if args.json else print_state(state)


async def cmd_show(args: argparse.Namespace) -> None:
    from activities import repository

    detail = await _with_db(lambda conn: repository.opportunity_detail(conn, args.opportunity))
    if detail is None:
        raise CliError(f"no opportunity {args.opportunity!r}")
    if args.json:
        print_json(detail)
        return
    d = detail
    print(f"{d['id']}: {d['title']} — {d['customer']}")
    print(
        f"  stage {d['stage']} ({d['probability']}%), owner {d['owner']}"
        + (f", closed {_when(d['closed_at'])}" if d["closed_at"] else "")
    )
    closing = [
        f"{label} {d[name]}"
        for name, label in [
            ("actual_income", "income"),
            ("hours_spent", "hours"),
            ("close_reason", "reason"),
            ("competitor", "competitor"),
        ]
        if d.get(name) is not None
    ]
    if closing:
        print("  " + ", ".join(closing))
    for name in OpportunityFields.model_fields:
        if name not in ("title", "customer") and d.get(name) is not None:
            print(f"  {name}: {d[name]}")
    print("History:")
    for v in d["history"]:
        print(
            f"  {v['visit_no']:>3}. {v['stage']:<14} {_when(v['entered_at'])} by"
            f" {v['entered_by']}"
            + (f" — {v['reason']}" if v["reason"] else "")
            + (f"  (process v{v['definition_version']})" if v["definition_version"] else "")
        )
    if d["order"]:
        o = d["order"]
        print(f"Order {o['id']} ({o['status']}): {o['title']} for {o['customer']}, amount {o['amount']}")
    print("Tasks:")
    for t in d["tasks"]:
        mark = {"open": "[ ]", "completed": "[x]", "canceled": "[-]"}[t["status"]]
        print(
            f"  {mark} {t['id']}  {t['title']}  due {_when(t['due_at'])}"
            + (f"  [{t['kind']}]" if t["kind"] != "process" else "")
            + (f"  ({t['outcome']})" if t["outcome"] else "")
        )


async def cmd_list(args: argparse.Namespace) -> None:
    from activities import repository

    stage = await stage_name(args.stage) if args.stage else None
    rows = await _with_db(
        lambda conn: repository.list_opportunities(conn, stage=stage, owner=args.owner, limit=args.limit)
    )
    if args.json:
        print_json(rows)
    elif not rows:
        print("no opportunities")
    else:
        print_table(
            rows, ["id", "title", "customer", "owner", "stage", "probability", "expected_amount", "closed_at"]
        )


async def cmd_schema(args: argparse.Namespace) -> None:
    try:
        written = schemas.write(args.out)
    except OSError as err:
        raise CliError(
            f"cannot write the schemas to {err.filename or args.out}: {err.strerror or err};"
            " give --out a folder you can write (it is created if missing)"
        ) from None
    for path in written:
        print(path)


async def cmd_check(args: argparse.Namespace) -> int:
    from starter.check import check

    client = await _client()
    report = await _with_db(lambda conn: check(client, conn, args.opportunities or None))
    if args.json:
        print_json(report.as_json())
    else:
        for v in report.violations:
            print(f"{v.opportunity_id}: {v.kind}: {v.detail}")
        totals = ", ".join(f"{n} {kind}" for kind, n in sorted(report.totals().items()))
        print(
            f"checked {report.opportunities} opportunities, {report.runs} runs:"
            f" {len(report.violations)} violations" + (f" ({totals})" if totals else "")
        )
    return 1 if report.violations else 0


def cmd_dev(args: argparse.Namespace) -> int:
    from worker.config import Settings
    from worker.stack import run_stack

    code: int = run_stack(Settings())
    return code


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.main import main as worker_main

    worker_main()
    return 0


def cmd_encryption_key(args: argparse.Namespace) -> int:
    from worker.codec import new_key

    print(new_key())
    return 0


async def cmd_codec_server(args: argparse.Namespace) -> None:
    """Serve the codec endpoint with the key in CORPSALE_ENCRYPTION_KEY until Ctrl-C."""
    from worker import codec_server
    from worker.codec import EncryptionCodec, parse_key
    from worker.config import Settings

    settings = Settings()
    if settings.encryption_key is None:
        raise CliError("set CORPSALE_ENCRYPTION_KEY to the key the worker encrypts with")
    codec = EncryptionCodec(parse_key(settings.encryption_key.get_secret_value()))
    origins = args.ui_origin or [
        f"http://localhost:{settings.ui_port}",
        f"http://127.0.0.1:{settings.ui_port}",
    ]
    extra = args.allowed_host or []
    for host in extra:
        try:
            codec_server.parse_host(host)
        except ValueError as err:
            raise CliError(f"--allowed-host {err}") from None
    try:
        runner = await codec_server.serve(
            codec, host=args.host, port=args.port, ui_origins=origins, allowed_hosts=extra
        )
    except OSError as err:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    hosts = [*codec_server.default_hosts(args.host, args.port), *extra]
    print(
        f"codec endpoint on http://{hosts[0]} for {', '.join(origins)};"
        f" answers to {', '.join(hosts)}; key {codec.key_id}",
        flush=True,  # a line for whoever waits for it on a pipe
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# Parsing ------------------------------------------------------------------------------------


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date or date-time from the command line; without a zone, UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"not a date or date-time: {text!r}; write 2030-05-04 or 2030-05-04T10:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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
    return os.environ.get("CORPSALE_ACTOR") or getpass.getuser()


async def acting_as(requested: str) -> str:
    """Who a command is from (R24): the operating-system user, or the person an admin names
    (--actor, $CORPSALE_ACTOR). The process then judges the command as that person's."""
    from activities import access

    me = getpass.getuser()
    if requested == me or await _with_db(lambda conn: access.is_admin(conn, me)):
        return requested
    raise CliError(
        f"you are {me!r}: only an admin acts as someone else ({requested!r}); leave out --actor and"
        " $CORPSALE_ACTOR, or ask an admin (`corpsale people set NAME --role admin`)"
    )


def service_key() -> tuple[str, str] | None:
    """The key this CLI signs commands with ($CORPSALE_SERVICE_KEY, SERVICE:SECRET), if any."""
    from workflows import signing

    text = os.environ.get("CORPSALE_SERVICE_KEY")
    if not text:
        return None
    try:
        return signing.parse_key(text)
    except ValueError as err:
        raise CliError(f"CORPSALE_SERVICE_KEY: {err}") from None


def _model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
        )
        raise CliError(f"invalid input: {problems}") from None


def _parse_fields(pairs: list[str], data: str | None) -> dict[str, Any]:
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
        _model(OpportunityFields, fields)
    except RecursionError:
        raise CliError(too_deep) from None
    return fields


def build_parser() -> argparse.ArgumentParser:
    from workflows.contract import DEFAULT_TASK_QUEUE

    parser = argparse.ArgumentParser(prog="corpsale", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help_: str, *, actor: bool = False, opportunity: bool = False, json_out: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if opportunity:
            p.add_argument("opportunity", metavar="OPPORTUNITY_ID")
        if actor:
            p.add_argument(
                "--actor",
                default=default_actor(),
                help="who does it (default: $CORPSALE_ACTOR or your user name; someone else: admins only)",
            )
            p.add_argument("--request-id", help="a repeated request id is applied once")
        if json_out:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    command(
        "dev", "run the whole stack: Temporal dev server and UI, PostgreSQL, the worker", json_out=False
    ).set_defaults(run=cmd_dev)
    command("worker", "run a worker against TEMPORAL_ADDRESS and DATABASE_URL", json_out=False).set_defaults(
        run=cmd_worker
    )

    command("encryption-key", "print a new key for CORPSALE_ENCRYPTION_KEY", json_out=False).set_defaults(
        run=cmd_encryption_key
    )
    p = command("codec-server", "serve the codec endpoint the Web UI decodes payloads with", json_out=False)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8081, help="the port to listen on (8081)")
    p.add_argument(
        "--ui-origin",
        action="append",
        metavar="URL",
        help="the Web UI's origin (repeatable; default: the local UI)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        metavar="HOST[:PORT]",
        help="another host name the endpoint answers to, as clients' Host header names it (repeatable;"
        " without a port, on any port); it always answers to its --host:--port, and to"
        " localhost/127.0.0.1/[::1] with --port on a loopback address or 0.0.0.0",
    )
    p.set_defaults(run=cmd_codec_server)

    p = command("start", "start the process for a new opportunity or an existing one", actor=True)
    p.add_argument("--existing", metavar="ID", help="start for this existing opportunity")
    p.add_argument("--id", help="id of the new opportunity (default: generated)")
    p.add_argument("--title", help="what the deal is, for a new opportunity")
    p.add_argument("--customer", help="the customer, for a new opportunity")
    p.add_argument("--owner", help="the responsible employee")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="another data field")
    p.add_argument("--data", help="data fields as a JSON object")
    p.add_argument(
        "--task-queue",
        default=os.environ.get("CORPSALE_TASK_QUEUE", DEFAULT_TASK_QUEUE),
        help="the workers' task queue (default: $CORPSALE_TASK_QUEUE or corporate-sale)",
    )
    p.set_defaults(run=cmd_start)

    p = command("move", "move the opportunity to a stage", actor=True, opportunity=True)
    p.add_argument("stage", metavar="STAGE")
    p.add_argument("--reason", help="why; closing as lost takes one of `corpsale close-reasons`")
    p.add_argument("--restart", action="store_true", help="restart the current stage")
    p.add_argument("--income", help="actual income, when closing as won")
    p.add_argument("--hours", help="hours spent, when closing as won")
    p.add_argument("--competitor", help="who won, when closing as lost")
    p.set_defaults(run=cmd_move)

    p = command("complete", "complete a task", actor=True, opportunity=True)
    p.add_argument("task_id", metavar="TASK", help="the task's id, or its key where one open task has it")
    p.add_argument("--outcome", help="default: the task's first outcome")
    p.add_argument("--comment", help="a note that goes with the completion")
    p.add_argument("--income", help="actual income, when this completion closes the opportunity as won")
    p.add_argument("--hours", help="hours spent, when this completion closes the opportunity as won")
    p.set_defaults(run=cmd_complete)

    p = command("update", "update opportunity data fields", actor=True, opportunity=True)
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="a data field (repeatable)")
    p.add_argument("--data", help="fields as a JSON object")
    p.set_defaults(run=cmd_update)

    p = command(
        "add-task", "add a task of your own; stage changes leave it open", actor=True, opportunity=True
    )
    p.add_argument("title", metavar="TITLE")
    p.add_argument("--owner", help="default: the opportunity's owner")
    p.add_argument("--due", help="when it is due, ISO 8601 (default: in a day)")
    p.set_defaults(run=cmd_add_task)

    p = command(
        "reassign", "give the opportunity and its open tasks to another owner", actor=True, opportunity=True
    )
    p.add_argument("owner", metavar="OWNER")
    p.add_argument("--reason", help="why, for both owners' notices")
    p.set_defaults(run=cmd_reassign)

    command("state", "the running process's state (the `state` query)", opportunity=True).set_defaults(
        run=cmd_state
    )
    command("show", "an opportunity with its history and tasks", opportunity=True).set_defaults(run=cmd_show)

    p = command("list", "list opportunities")
    p.add_argument("--stage", help="only those at this stage")
    p.add_argument("--owner", help="only this owner's")
    p.add_argument("--limit", type=positive_int, default=100, help="at most this many (100)")
    p.set_defaults(run=cmd_list)

    p = command("check", "compare every process run with the database; exit 1 on a violation")
    p.add_argument("opportunities", nargs="*", metavar="OPPORTUNITY_ID", help="default: all")
    p.set_defaults(run=cmd_check)

    p = command(
        "close-details",
        "record a won deal's actual income and hours after it closed",
        actor=True,
        opportunity=True,
    )
    p.add_argument("--income", help="the actual income")
    p.add_argument("--hours", help="the hours spent on the deal")
    p.set_defaults(run=cmd_close_details)

    command("close-reasons", "the reasons a lost-type closing takes").set_defaults(run=cmd_close_reasons)

    p = command("schema", "write the JSON Schemas of the public contract", json_out=False)
    p.add_argument("--out", default="docs/schemas", help="the folder to write them to (docs/schemas)")
    p.set_defaults(run=cmd_schema)

    from starter import access, center, definitions, leads, lookups, report  # they use this module's helpers

    center.add_commands(sub)
    access.add_commands(sub)
    report.add_commands(sub)
    leads.add_commands(sub)
    lookups.add_commands(sub)
    definitions.add_commands(sub)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Every command's help also heads its own `--help` page."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for listed in action._choices_actions:
                command = action.choices[listed.dest]
                command.description = command.description or listed.help
                _describe(command)


def main(argv: Sequence[str] | None = None) -> int:
    from worker.codec import NO_KEY, WrongKey, is_encrypted_without_key

    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except CliError as err:
        print(f"corpsale: {err}", file=sys.stderr)
        return 1
    except ValidationError as err:  # the settings from the environment
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        print(f"corpsale: invalid setting in the environment: {problems}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except (KeyError, WrongKey) as err:  # a payload it cannot read
        if isinstance(err, WrongKey) or is_encrypted_without_key(err):
            print(f"corpsale: {err if isinstance(err, WrongKey) else NO_KEY}", file=sys.stderr)
            return 1
        raise


def run() -> None:
    """The console entry point."""
    from worker.process import exit_now

    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (`| head`): not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    exit_now(code)


if __name__ == "__main__":
    # `python -m starter.cli`: run the module proper, whose CliError the command modules raise.
    from starter.cli import run as run_module

    run_module()
