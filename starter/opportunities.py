"""`corpsale` commands that read an opportunity: state (the process's `state` query), show (its
data, history and tasks, from PostgreSQL), list, and close-reasons (the lookup a lost-type closing
takes)."""

from __future__ import annotations

import argparse
from typing import Any

from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from starter.common import (
    CliError,
    add_command,
    explained,
    positive_int,
    query_timeout,
    stage_name,
    temporal,
    with_db,
)
from starter.output import print_guide, print_json, print_rows, print_state, when
from workflows import contract as c
from workflows.contract import OpportunityFields, StateView
from workflows.definition import StageTasks


async def cmd_state(args: argparse.Namespace) -> None:
    client = await temporal()
    handle = client.get_workflow_handle(c.workflow_id(args.opportunity))
    try:
        state = await handle.query(
            c.QUERY_STATE,
            result_type=StateView,
            rpc_timeout=query_timeout(),
        )
    except RPCError as err:
        raise await explained(err, args.opportunity) from None
    except WorkflowQueryFailedError as err:
        raise CliError(f"the process did not answer the state query: {err}") from None
    print_json(state) if args.json else print_state(state, guidance=True)


async def cmd_show(args: argparse.Namespace) -> None:
    from activities.data import definitions, opportunities

    async def read(conn: Any) -> tuple[dict[str, Any] | None, StageTasks | None]:
        found = await opportunities.opportunity_detail(conn, args.opportunity)
        if found is None or found["closed_at"] or not found["history"]:
            return found, None
        last = found["history"][-1]
        return found, await definitions.stage_guide(
            conn, last["definition_version"], found["stage"], last["process"]
        )

    detail, part = await with_db(read)
    if detail is None:
        raise CliError(f"no opportunity {args.opportunity!r}")
    if args.json:
        print_json(detail)
        return
    d = detail
    print(f"{d['id']}: {d['title']} — {d['customer']}")
    print(
        f"  {d['process']}, stage {d['stage']} ({d['probability']}%), owner {d['owner']}"
        + (f", closed {when(d['closed_at'])}" if d["closed_at"] else "")
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
    if part is not None:
        print_guide(part.goal, part.guidance, [f for f in part.key_fields if d.get(f) in (None, "")])
    for name in OpportunityFields.model_fields:
        if name not in ("title", "customer") and d.get(name) is not None:
            print(f"  {name}: {d[name]}")
    print("History:")
    for v in d["history"]:
        print(
            f"  {v['visit_no']:>3}. {v['stage']:<14} {when(v['entered_at'])} by"
            f" {v['entered_by']}"
            + (f" — {v['reason']}" if v["reason"] else "")
            + (f"  ({v['process']} v{v['definition_version']})" if v["definition_version"] else "")
        )
    if d["order"]:
        o = d["order"]
        print(f"Order {o['id']} ({o['status']}): {o['title']} for {o['customer']}, amount {o['amount']}")
    print("Tasks ([ ] open, [x] completed, [-] canceled):")
    for t in d["tasks"]:
        mark = {"open": "[ ]", "completed": "[x]", "canceled": "[-]"}[t["status"]]
        print(
            f"  {mark} {t['id']}  {t['title']}  due {when(t['due_at'])}"
            + (f"  [{t['kind']}]" if t["kind"] != "process" else "")
            + (f"  ({t['outcome']})" if t["outcome"] else "")
        )


async def cmd_list(args: argparse.Namespace) -> None:
    from activities.data import opportunities

    stage = await stage_name(args.stage) if args.stage else None
    rows = await with_db(
        lambda conn: opportunities.list_opportunities(conn, stage=stage, owner=args.owner, limit=args.limit)
    )
    columns = ["id", "title", "customer", "owner", "stage", "probability", "expected_amount", "closed_at"]
    print_rows(rows, columns, as_json=args.json, empty="no opportunities")


async def cmd_close_reasons(args: argparse.Namespace) -> None:
    from activities.data import repository

    reasons = await with_db(repository.close_reasons)
    print_json(reasons) if args.json else print("\n".join(reasons))


def add_commands(sub: Any) -> None:
    def command(name: str, help_: str, **kinds: bool) -> argparse.ArgumentParser:
        return add_command(sub, name, help_, **kinds)

    command("state", "the running process's state (the `state` query)", opportunity=True).set_defaults(
        run=cmd_state
    )
    command("show", "an opportunity with its history and tasks", opportunity=True).set_defaults(run=cmd_show)

    p = command("list", "list opportunities")
    p.add_argument("--stage", help="only those at this stage")
    p.add_argument("--owner", help="only this owner's")
    p.add_argument("--limit", type=positive_int, default=100, help="at most this many (100)")
    p.set_defaults(run=cmd_list)

    command("close-reasons", "the reasons a lost-type closing takes").set_defaults(run=cmd_close_reasons)
