"""`corpsale demo`: a realistic set of opportunities driven through the real process, so that a
new user sees a full report within a minute."""

from __future__ import annotations

import argparse
import asyncio
import random
import uuid
from decimal import Decimal
from typing import Any

from starter.client import CommandRefused, SaleClient
from starter.common import CliError, command_parser, positive_int, with_db
from worker.config import current
from workflows.contract import ChangeStage, CompleteTask, NewOpportunity, UpdateOpportunity

CUSTOMERS = [
    "Initech",
    "Globex",
    "Umbrella",
    "Hooli",
    "Stark Industries",
    "Wayne Enterprises",
    "Acme",
    "Soylent",
]
OWNERS = ["alice", "bob", "carol"]
DEALS = ["Fleet renewal", "CRM rollout", "Support contract", "Data platform", "Office move", "Training"]


BACK = {"Presentation": "Qualification", "Proposal": "Presentation", "Contracting": "Proposal"}


async def _drive(sale: SaleClient, opp: str, rng: random.Random, reasons: list[str]) -> str:
    """One opportunity along a path chosen by `rng`, with the commands an operator sends: tasks
    completed one by one (a proposal sometimes sent back for changes), now and then a step back,
    and an end: won with income and hours, lost with a reason, or left open at some stage. Each
    task is completed by its owner (an approval's is its approver, the only one who may), the
    rest by the deal's owner (R24: closing a deal is theirs, their manager's or an admin's)."""
    owner = (await sale.state(opp)).owner
    fate = rng.choices(["won", "lost", "open"], weights=[5, 3, 3])[0]
    stop_at = rng.choice(["Qualification", *BACK])
    for _ in range(30):
        await asyncio.sleep(rng.uniform(0.1, 0.8))  # so that the time in each stage varies
        state = await sale.state(opp)
        if state.closed:
            return state.stage
        if fate != "won" and state.stage == stop_at:
            break
        work = [t for t in state.open_tasks if not t.adhoc and t.stage == state.stage]
        if state.stage in BACK and rng.random() < 0.12:
            await sale.change_stage(
                opp, ChangeStage(stage=BACK[state.stage], actor=owner, reason="customer asked")
            )
        elif fate == "won" and state.stage == "Contracting" and len(work) == 1:
            income, hours = Decimal(rng.randrange(8, 120) * 1000), Decimal(rng.randrange(10, 200))
            won = ChangeStage(stage="Closed won", actor=owner, actual_income=income, hours_spent=hours)
            return (await sale.change_stage(opp, won)).stage
        elif work:
            task = work[0]
            outcome = "changes requested" if "approval" in task.task_id and rng.random() < 0.25 else None
            done = CompleteTask(task_id=task.task_id, outcome=outcome, actor=task.owner)
            await sale.complete_task(opp, done)
    if fate == "lost":
        competitor = rng.choice([None, "Globex", "Initrode"])
        lost = ChangeStage(
            stage="Closed lost", actor=owner, reason=rng.choice(reasons), competitor=competitor
        )
        return (await sale.change_stage(opp, lost)).stage
    return (await sale.state(opp)).stage


async def cmd_demo(args: argparse.Namespace) -> None:
    from activities.data.repository import close_reasons
    from starter.common import temporal

    rng = random.Random(args.seed)
    queue = args.task_queue or current().task_queue
    sale = SaleClient(await temporal(sending_to=queue), queue)
    reasons = await with_db(close_reasons)
    run = uuid.uuid4().hex[:6]
    limit = asyncio.Semaphore(args.concurrency)
    done = 0

    async def one(i: int) -> str:
        nonlocal done
        opp = f"demo-{run}-{i + 1:03d}"
        mine = random.Random(rng.random())
        async with limit:
            new = NewOpportunity(
                title=mine.choice(DEALS),
                customer=mine.choice(CUSTOMERS),
                owner=mine.choice(OWNERS),
                expected_amount=Decimal(mine.randrange(5, 150) * 1000),
            )
            await sale.start(opp, actor="demo", new=new)
            await asyncio.sleep(0.3)
            await sale.update_opportunity(
                opp, UpdateOpportunity(need=mine.choice(["speed", "cost", "compliance"]))
            )
            try:
                ended = await _drive(sale, opp, mine, reasons)
            except CommandRefused as err:
                ended = f"stopped: {err}"
        done += 1
        print(f"  {done}/{args.n}  {opp}: {ended}", flush=True)
        return ended

    print(f"driving {args.n} opportunities through the process (demo-{run}-…)", flush=True)
    ends = await asyncio.gather(*(one(i) for i in range(args.n)))
    won, lost = ends.count("Closed won"), ends.count("Closed lost")
    stopped = [end for end in ends if end.startswith("stopped")]
    print(
        f"done: {won} won, {lost} lost, {len(ends) - won - lost - len(stopped)} open;"
        " `corpsale report --html report.html`"
    )
    if stopped:  # a command the demo should not have sent: say so, and fail
        first = stopped[0].removeprefix("stopped: ")
        raise CliError(
            f"{len(stopped)} of {args.n} opportunities stopped on a refused command, the first: {first}"
        )


def add_commands(sub: Any) -> None:
    p = command_parser(
        sub, "demo", help="drive a realistic set of opportunities through the process (a worker must run)"
    )
    p.add_argument("--n", type=positive_int, default=24, help="how many opportunities (24)")
    p.add_argument("--seed", type=int, default=7, help="the random seed: the same seed, the same paths")
    p.add_argument("--concurrency", type=positive_int, default=12, help="opportunities driven at once (12)")
    p.add_argument(
        "--task-queue",
        help="the workers' task queue (default: $CORPSALE_TASK_QUEUE or corporate-sale)",
    )
    p.set_defaults(run=cmd_demo)
