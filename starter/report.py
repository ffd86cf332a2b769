"""`corpsale report`: sales analytics as a table, JSON, charts (PNG) and one HTML page."""

from __future__ import annotations

import argparse
import asyncio
import base64
import html
import io
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from activities.data import analytics
from activities.data import forecast as forecasts
from starter import forecast
from starter.common import CliError, command_parser, parse_moment, with_db
from starter.output import print_json, print_table, shown

# Charts ---------------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _figure_png(draw: Any, *, width: float, height: float) -> bytes:
    try:
        import matplotlib
    except ImportError:
        raise CliError(
            "the charts need matplotlib: `pip install 'corporate-sale[report]'` (`python3 dev.py`"
            " installs it); the report without --html and --charts needs nothing more"
        ) from None

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    try:
        draw(ax)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png")
        return out.getvalue()
    finally:
        plt.close(fig)


def pipeline_chart(report: dict[str, Any]) -> bytes:
    """The open pipeline as a funnel: a bar per stage (first stage on top), the amount and the
    probability-weighted amount, with the number of opportunities."""
    rows = report["pipeline"]

    def draw(ax: Any) -> None:
        names = [r["stage"] for r in rows]
        amounts = [float(r["amount"]) for r in rows]
        weighted = [float(r["weighted_amount"]) for r in rows]
        ax.barh(names, amounts, color="#c6dbef", label="amount")
        ax.barh(names, weighted, color="#2171b5", label="weighted by probability")
        for i, r in enumerate(rows):
            ax.text(amounts[i], i, f"  {r['opportunities']} open", va="center", fontsize=9)
        ax.invert_yaxis()
        ax.set_xlabel("expected amount")
        ax.set_title("Open pipeline by stage")
        ax.legend(loc="lower right", fontsize=8)
        ax.margins(x=0.2)

    return _figure_png(draw, width=8, height=1.2 + 0.6 * max(len(rows), 1))


def time_in_stage_chart(report: dict[str, Any]) -> bytes:
    """Time in each stage: the median visit as a bar, the 90th percentile as a marker."""
    rows = report["time_in_stage"]

    def draw(ax: Any) -> None:
        names = [r["stage"] for r in rows]
        scale, unit = _unit(max([r["p90_seconds"] or 0 for r in rows], default=0))
        ax.bar(names, [r["median_seconds"] / scale for r in rows], color="#6baed6", label="median")
        p90 = [r["p90_seconds"] / scale for r in rows]
        ax.scatter(names, p90, color="#08306b", marker="_", s=600, label="p90")
        for i, r in enumerate(rows):
            ax.text(
                i, r["median_seconds"] / scale, f"{r['visits']} visits", ha="center", va="bottom", fontsize=8
            )
        ax.set_ylim(bottom=0, top=max(p90, default=0.0) * 1.25 or 1.0)  # room for the legend
        ax.set_ylabel(f"time in stage ({unit})")
        ax.set_title("Time in each stage")
        ax.legend(fontsize=8)

    return _figure_png(draw, width=8, height=4)


def _unit(seconds: float) -> tuple[float, str]:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= 2 * size:
            return size, unit
    return 1.0, "seconds"


# Output ---------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def summary_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    c = report["closings"]
    return [
        ("closed", f"{c['closed']} ({c['won']} won, {c['lost']} lost)"),
        ("win rate", _percent(c["win_rate"])),
        ("income won", f"{c['income_won']}"),
        ("hours spent", f"{c['hours_spent']}"),
        ("income per hour", "—" if c["income_per_hour"] is None else f"{c['income_per_hour']}"),
        (
            "cycle time",
            f"median {duration(c['cycle_median_seconds'])}, p90 {duration(c['cycle_p90_seconds'])}",
        ),
    ]


def print_report(report: dict[str, Any]) -> None:
    for name, value in summary_lines(report):
        print(f"{name:<16} {value}")
    print("\nTime in stage (finished visits)")
    print_table(
        [
            {**r, "median": duration(r["median_seconds"]), "p90": duration(r["p90_seconds"])}
            for r in report["time_in_stage"]
        ],
        ["stage", "visits", "median", "p90"],
    )
    print("\nStage-to-stage conversion (advanced: went on to a later stage, or won)")
    print_table(
        [{**r, "rate": _percent(r["conversion"])} for r in report["conversion"]],
        ["stage", "entered", "advanced", "rate"],
    )
    print("\nLoss reasons")
    print_table(report["loss_reasons"], ["reason", "lost"]) if report["loss_reasons"] else print("(none)")
    print("\nOpen pipeline")
    total = report["pipeline_total"]
    print_table(
        [*report["pipeline"], {"stage": "total", **total}],
        ["stage", "opportunities", "amount", "weighted_amount"],
    )
    print("\nBy sales process")
    print_table(_by_process(report), BY_PROCESS)


BY_PROCESS = ["process", "closed", "won", "lost", "win_rate", "income_won", "open", "pipeline_amount"]


def _by_process(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**r, "win_rate": _percent(r["win_rate"])} for r in report["by_process"]]


def _table_html(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(shown(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(report: dict[str, Any], charts: dict[str, bytes]) -> str:
    """One self-contained page: the figures and the charts (embedded)."""
    f = report["filters"]
    scope = ", ".join(f"{k} {v}" for k, v in f.items() if v is not None) or "all opportunities"
    images = "".join(
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in charts.items()
    )
    stages = [
        {**r, "median": duration(r["median_seconds"]), "p90": duration(r["p90_seconds"])}
        for r in report["time_in_stage"]
    ]
    conversion = [{**r, "rate": _percent(r["conversion"])} for r in report["conversion"]]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Corporate sale report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 60em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
</style></head><body>
<h1>Corporate sale report</h1>
<p>{html.escape(scope)}; made {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.</p>
{_table_html([{"figure": k, "value": v} for k, v in summary_lines(report)], ["figure", "value"])}
{images}
<h2>Time in stage</h2>{_table_html(stages, ["stage", "visits", "median", "p90"])}
<h2>Stage-to-stage conversion</h2>{_table_html(conversion, ["stage", "entered", "advanced", "rate"])}
<h2>Loss reasons</h2>{_table_html(report["loss_reasons"], ["reason", "lost"])}
<h2>Open pipeline</h2>{
        _table_html(
            [*report["pipeline"], {"stage": "total", **report["pipeline_total"]}],
            ["stage", "opportunities", "amount", "weighted_amount"],
        )
    }
<h2>By sales process</h2>{_table_html(_by_process(report), BY_PROCESS)}
<h2>Forecast by quarter</h2>{_table_html(report["forecast"], forecast.COLUMNS)}
</body></html>
"""


def _moment(text: str | None) -> datetime | None:
    return None if text is None else parse_moment(text)


def _write(
    charts_dir: str | None, html_file: str | None, report: dict[str, Any], charts: dict[str, bytes]
) -> None:
    if charts_dir:
        folder = Path(charts_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, png in charts.items():
            (folder / f"{name}.png").write_bytes(png)
    if html_file:
        Path(html_file).write_text(html_report(report, charts), "utf-8")


async def cmd_report(args: argparse.Namespace) -> None:
    filters = analytics.Filters(
        _moment(args.start), _moment(args.end), args.owner, args.customer, args.process
    )
    if filters.start and filters.end and filters.end <= filters.start:
        raise CliError("--to must come after --from")
    days = forecast.period_range(
        "quarter", filters.start and filters.start.date(), filters.end and filters.end.date()
    )

    async def read(conn: Any) -> dict[str, Any]:
        report = await analytics.report(conn, filters)
        report["forecast"] = await forecasts.forecast(conn, "quarter", *days, args.owner, args.process)
        return report

    report = await with_db(read)
    if args.charts or args.html:
        charts = {
            "pipeline": pipeline_chart(report),
            "time-in-stage": time_in_stage_chart(report),
            "forecast": _figure_png(forecast.forecast_chart(report["forecast"]), width=8, height=4),
        }
        try:
            await asyncio.to_thread(_write, args.charts, args.html, report, charts)
        except OSError as err:
            raise CliError(f"cannot write {err.filename}: {err.strerror}") from None
        if not args.quiet:  # on stderr: stdout stays the report (or its JSON)
            wrote = [f"{len(charts)} charts in {args.charts}"] * bool(args.charts) + [
                f"the page {args.html}"
            ] * bool(args.html)
            print(f"wrote {' and '.join(wrote)}", file=sys.stderr)
    if args.json:
        print_json(report)
    elif not args.quiet:
        print_report(report)


def add_commands(sub: Any) -> None:
    p = command_parser(sub, "report", help="sales analytics: win rate, cycle times, stages, losses, pipeline")
    p.add_argument(
        "--from", dest="start", metavar="WHEN", help="the period's start, ISO 8601 (UTC if no zone)"
    )
    p.add_argument("--to", dest="end", metavar="WHEN", help="the period's end (excluded)")
    p.add_argument("--owner", help="only this owner's opportunities")
    p.add_argument("--process", help="only the deals of this sales process (`corpsale processes`)")
    p.add_argument("--customer", help="only this customer's opportunities")
    p.add_argument("--charts", metavar="DIR", help="write pipeline.png and time-in-stage.png here")
    p.add_argument("--html", metavar="FILE", help="write the report as one HTML page, charts included")
    p.add_argument("--quiet", action="store_true", help="print nothing (with --charts or --html)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_report)
