"""The forecast end to end (real Temporal, real PostgreSQL, the CLI as a process of its own): deals
with an expected close date and a forecast category, a won deal and quotas, and the figures
`corpsale forecast` gives for them by quarter and by month, as a table and as JSON; quotas are
an admin's to set and name a quarter or a month; the HTML report carries the forecast chart."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from tests.helpers import Sale
from workflows import contract as c


def _quarter(day: datetime) -> str:
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


async def _deal(sale: Sale, owner: str, amount: int, close: str, category: str | None = None) -> str:
    opp = f"opp-{uuid.uuid4().hex[:10]}"
    data = ["--set", f"expected_amount={amount}", "--set", f"expected_close_date={close}"]
    data += ["--set", f"forecast_category={category}"] if category else []
    started = await sale.cli(
        "start", "--id", opp, "--title", "Deal", "--customer", "Initech", "--owner", owner, *data
    )
    assert started.code == 0, started.stderr
    return opp


async def test_the_forecast_adds_up_the_deals_the_wins_and_the_quotas(sale: Sale, tmp_path: Path) -> None:
    owner, other = f"ann-{uuid.uuid4().hex[:6]}", f"ben-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    this_quarter = _quarter(now)
    y = now.year + 2  # a year to come: none of its quarters is the current one
    await _deal(sale, owner, 10000, f"{y}-02-10", "commit")  # Qualification: 10 %
    best = await _deal(sale, owner, 20000, f"{y}-03-05", "best case")
    await sale.update(best, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": owner})  # 60 %
    await _deal(sale, owner, 30000, f"{y}-05-01")  # no category: pipeline
    await _deal(sale, other, 99000, f"{y}-02-11", "commit")
    won = await _deal(sale, owner, 45000, f"{y}-01-15")
    await sale.update(
        won, c.UPDATE_CHANGE_STAGE, {"stage": "Closed won", "actor": owner, "actual_income": 40000}
    )
    for period, amount in [(f"{y}-Q1", "100000"), (this_quarter, "80000"), (f"{y}-Q3", "5000")]:
        done = await sale.cli("quota", "set", owner, period, amount)
        assert done.code == 0 and f"quota of {owner} for {period}: {amount}" in done.stdout, done.stderr

    result = await sale.cli(
        "forecast", "--owner", owner, "--from", now.date().isoformat(), "--to", f"{y}-12-31", "--json"
    )
    assert result.code == 0, result.stderr
    rows = {r["period"]: r for r in json.loads(result.stdout)}
    assert list(rows) == [this_quarter, f"{y}-Q1", f"{y}-Q2", f"{y}-Q3"]
    keys = ("pipeline", "best_case", "commit", "weighted", "won", "quota", "attainment")
    figures = {p: {k: r[k] for k in keys} for p, r in rows.items()}
    assert figures[f"{y}-Q1"] == {
        "pipeline": "0", "best_case": "20000.00", "commit": "10000.00", "weighted": "13000.00",
        "won": "0", "quota": "100000.00", "attainment": "0.0",
    }  # fmt: skip
    assert figures[f"{y}-Q2"]["pipeline"] == "30000.00" and figures[f"{y}-Q2"]["quota"] is None
    assert figures[this_quarter]["won"] == "40000.00" and figures[this_quarter]["attainment"] == "50.0"
    assert Decimal(figures[f"{y}-Q3"]["won"]) == 0 and figures[f"{y}-Q3"]["quota"] == "5000.00"

    by_month = await sale.cli("forecast", "--by", "month", "--from", f"{y}-02-01", "--to", f"{y}-02-28")
    assert by_month.code == 0, by_month.stderr
    lines = [line.split() for line in by_month.stdout.splitlines()]
    assert lines[0] == [
        "period",
        "owner",
        "pipeline",
        "best_case",
        "commit",
        "weighted",
        "won",
        "quota",
        "attainment",
    ]
    assert [f"{y}-02", owner, "0", "0", "10000.00", "1000.00", "0"] in lines
    assert [f"{y}-02", other, "0", "0", "99000.00", "9900.00", "0"] in lines

    # Quotas: a quarter or a month, set by an admin.
    bad = await sale.cli("quota", "set", owner, f"{y}-13", "1")
    assert bad.code == 1 and "neither a quarter nor a month: write 2027-Q1 or 2027-03" in bad.stderr
    for amount in ("-1", "NaN", "Infinity", "1e20"):  # one line each, nothing written
        bad = await sale.cli("quota", "set", owner, f"{y}-Q4", amount)
        assert bad.code == 1 and "a quota is an amount from 0 to 999999999999.99" in bad.stderr, bad
    not_admin = await sale.cli("quota", "set", owner, f"{y}-Q4", "1", env={"CORPSALE_ACTOR": owner})
    assert not_admin.code == 1 and "is not an admin: only an admin sets quotas" in not_admin.stderr
    listed = await sale.cli("quota", "list", "--person", owner, "--json")
    assert [q["period"] for q in json.loads(listed.stdout)] == sorted([f"{y}-Q1", this_quarter, f"{y}-Q3"])

    page = tmp_path / "report.html"
    report = await sale.cli("report", "--owner", owner, "--html", str(page), "--quiet")
    assert report.code == 0, report.stderr
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 3 and "Forecast by quarter" in text
