"""`corpsale forecast` and `corpsale quota ...`: per period (month or quarter) and owner, the open
amount by forecast category of the deals expected to close then, its probability-weighted
amount, what was won, and attainment against the owner's quota; a chart for the HTML report."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from activities.data import access, forecast
from starter.common import CliError, acting_as, command_parser, default_actor, parse_moment, with_db
from starter.output import print_rows

COLUMNS = ["period", "owner", "pipeline", "best_case", "commit", "weighted", "won", "quota", "attainment"]
CATEGORIES = [("pipeline", "#c6dbef"), ("best_case", "#6baed6"), ("commit", "#2171b5")]


def default_range(by: forecast.Period, today: date) -> tuple[date, date]:
    """From the start of the current period (month or quarter), a year."""
    first_month = today.month if by == "month" else 3 * ((today.month - 1) // 3) + 1
    start = date(today.year, first_month, 1)
    return start, date(start.year + 1, start.month, 1) - timedelta(days=1)


def _day(text: str | None) -> date | None:
    return None if text is None else parse_moment(text).date()


def period_range(by: forecast.Period, start: date | None, end: date | None) -> tuple[date, date]:
    """The days a forecast covers: as given, else from the start of the current period (or a
    year up to --to) for a year."""
    if start is None and end is not None:  # a year up to --to
        start = default_range(by, end - timedelta(days=365))[0]
    first, last = default_range(by, start or datetime.now(UTC).date())
    start, end = start or first, end or last
    if end < start:
        raise CliError("--to must not come before --from")
    return start, end


async def cmd_forecast(args: argparse.Namespace) -> None:
    start, end = period_range(args.by, _day(args.start), _day(args.end))
    rows = await with_db(
        lambda conn: forecast.forecast(conn, args.by, start, end, args.owner, args.process, args.by_process)
    )
    for r in rows if not args.json else ():
        r["attainment"] = None if r["attainment"] is None else f"{r['attainment']}%"
    empty = "no open deal with an expected close date, no win and no quota in these periods"
    columns = [*COLUMNS[:2], "process", *COLUMNS[2:]] if args.by_process else COLUMNS
    print_rows(rows, columns, as_json=args.json, empty=empty)


async def cmd_quota_set(args: argparse.Namespace) -> None:
    me = await acting_as(args.actor)
    try:
        amount = Decimal(args.amount)
    except InvalidOperation:
        raise CliError(f"not an amount: {args.amount!r}; write 150000 or 150000.50") from None

    async def set_as_admin(conn: Any) -> None:
        if not await access.is_admin(conn, me):
            raise CliError(f"{me!r} is not an admin: only an admin sets quotas")
        await forecast.set_quota(conn, args.person, args.period, amount, me)

    await with_db(set_as_admin)
    print(f"quota of {args.person} for {args.period}: {amount}")


async def cmd_quota_list(args: argparse.Namespace) -> None:
    rows = await with_db(lambda conn: forecast.list_quotas(conn, args.person))
    print_rows(rows, ["person", "period", "amount", "set_by"], as_json=args.json, empty="no quotas yet")


def forecast_chart(rows: list[dict[str, Any]]) -> Any:
    """A `draw(ax)` for the report: per period, the open amount stacked by category, and a
    marker for what was won (all owners together)."""
    periods = sorted({r["period"] for r in rows})

    def total(period: str, column: str) -> float:
        return float(sum(r[column] for r in rows if r["period"] == period))

    def draw(ax: Any) -> None:
        bottom = [0.0] * len(periods)
        for column, color in CATEGORIES:
            heights = [total(p, column) for p in periods]
            ax.bar(periods, heights, bottom=bottom, color=color, label=column.replace("_", " "))
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.scatter(
            periods, [total(p, "won") for p in periods], color="#e6550d", marker="D", label="won", zorder=3
        )
        ax.set_ylabel("amount")
        ax.set_title("Forecast by expected close date")
        ax.legend(fontsize=8)

    return draw


def add_commands(sub: Any) -> None:
    p = command_parser(
        sub,
        "forecast",
        help="open amount by forecast category, weighted, won and quota attainment, per period and owner",
        description="Per period (by the expected close date of open deals and the close of won ones)"
        " and owner: the open amount by forecast category (pipeline, best case, commit), its"
        " probability-weighted amount, what was won, the quota and its attainment.",
    )
    p.add_argument(
        "--by", choices=["month", "quarter"], default="quarter", help="the period (default: quarter)"
    )
    p.add_argument("--owner", help="one owner only")
    p.add_argument(
        "--process", help="the deals of one sales process only (the quota stays the owner's whole)"
    )
    p.add_argument(
        "--by-process",
        action="store_true",
        help="a row per sales process (attainment: its part of the quota)",
    )
    p.add_argument("--from", dest="start", help="first day (default: the start of the current period)")
    p.add_argument(
        "--to", dest="end", help="last day (default: a year after --from; --to alone: a year up to it)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_forecast)

    quota = command_parser(sub, "quota", help="sales quotas per person and period").add_subparsers(
        dest="quota_command", required=True
    )
    p = command_parser(quota, "set", help="set a person's quota for a quarter (2027-Q1) or a month (2027-03)")
    p.add_argument("person", metavar="PERSON")
    p.add_argument("period", metavar="PERIOD", help="a quarter (2027-Q1) or a month (2027-03)")
    p.add_argument("amount", metavar="AMOUNT")
    p.add_argument("--actor", default=default_actor(), help="who sets it (an admin)")
    p.set_defaults(run=cmd_quota_set)
    p = command_parser(quota, "list", help="the quotas set, by period")
    p.add_argument("--person", help="one person only")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_quota_list)
