"""R17: the sales report over a known set of opportunities, built through the real process (won,
lost from different stages, stages revisited, open ones), each figure asserted exactly: counts
and money as constants, durations against the stage-history rows the process wrote. The charts
are made and checked to be sane images; the HTML page holds them."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image

from starter.client import SaleClient
from tests.helpers import Sale, eventually
from workflows.contract import ChangeStage, CompleteTask, NewOpportunity


def _p(values: list[float], q: float) -> float:
    """PostgreSQL's percentile_cont: linear between the closest ranks."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def _build(sale: Sale, owner: str) -> dict[str, str]:
    """Six opportunities of `owner`:
    A won (Qualification → Proposal → won), 1,000 income in 10 h;
    B won (Qualification → Presentation → Proposal → Qualification → Contracting → won, the
      contracting tasks completed), 3,000 in 20 h;
    C lost from Proposal (Price too high); D lost from Qualification (No budget);
    E open in Proposal, expected 5,000; F open in Qualification, expected 1,000."""
    client = SaleClient(sale.client, sale.task_queue)
    tag = uuid.uuid4().hex[:6]
    ids = {name: f"an-{tag}-{name}" for name in "ABCDEF"}
    amounts = {"E": 5000, "F": 1000}

    async def start(name: str) -> str:
        opp = ids[name]
        new = NewOpportunity(title=f"Deal {name}", customer=f"Cust {name}", owner=owner)
        if name in amounts:
            new = new.model_copy(update={"expected_amount": Decimal(amounts[name])})
        await client.start(opp, actor="ops", new=new)
        await eventually(lambda: client.state(opp), lambda s: s.tasks_total == 2)
        return opp

    async def move(opp: str, stage: str, **closing: Any) -> None:
        await client.change_stage(opp, ChangeStage(stage=stage, actor=owner, **closing))

    a = await start("A")
    await move(a, "Proposal")
    await move(a, "Closed won", actual_income=Decimal(1000), hours_spent=Decimal(10))
    b = await start("B")
    for stage in ["Presentation", "Proposal", "Qualification", "Contracting"]:
        await move(b, stage)
    await move(b, "Closed won", actual_income=Decimal(3000), hours_spent=Decimal(20))
    c = await start("C")
    await move(c, "Proposal")
    await move(c, "Closed lost", reason="Price too high", competitor="Globex")
    d = await start("D")
    await move(d, "Closed lost", reason="No budget")
    e = await start("E")
    state = await client.change_stage(e, ChangeStage(stage="Proposal", actor=owner))
    await client.complete_task(e, CompleteTask(task_id=state.open_tasks[0].task_id, actor=owner))
    await start("F")
    return ids


async def test_the_report_figures_over_a_known_set(sale: Sale, tmp_path: Path) -> None:
    owner = f"an-{uuid.uuid4().hex[:6]}"
    ids = await _build(sale, owner)
    result = await sale.cli("report", "--owner", owner, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)

    c = report["closings"]
    assert (c["closed"], c["won"], c["lost"], c["win_rate"]) == (4, 2, 2, 0.5)
    assert (Decimal(c["income_won"]), Decimal(c["hours_spent"])) == (Decimal(4000), Decimal(30))
    assert Decimal(c["income_per_hour"]) == Decimal("133.33")
    assert [(r["reason"], r["lost"]) for r in report["loss_reasons"]] == [
        ("No budget", 1),
        ("Price too high", 1),
    ]

    # Durations, against what the process wrote in the stage history.
    visits = await sale.pool.fetch(
        "SELECT v.*, o.closed_at FROM stage_visits v JOIN opportunities o ON o.id = v.opportunity_id"
        " WHERE o.owner = $1 ORDER BY v.opportunity_id, v.visit_no",
        owner,
    )
    cycles = []
    for name in "ABCD":
        mine = [v for v in visits if v["opportunity_id"] == ids[name]]
        cycles.append((mine[0]["closed_at"] - mine[0]["entered_at"]).total_seconds())
    assert abs(c["cycle_median_seconds"] - _p(cycles, 0.5)) < 1e-6
    assert abs(c["cycle_p90_seconds"] - _p(cycles, 0.9)) < 1e-6
    finished: dict[str, list[float]] = {}
    for v in visits:
        if v["left_at"] is not None and not v["stage"].startswith("Closed"):
            finished.setdefault(v["stage"], []).append((v["left_at"] - v["entered_at"]).total_seconds())
    assert [(r["stage"], r["visits"]) for r in report["time_in_stage"]] == [
        ("Qualification", 6),  # A, B twice, C, D, E; F's visit is still open
        ("Presentation", 1),
        ("Proposal", 3),  # A, B, C (E's is open)
        ("Contracting", 1),
    ]
    for row in report["time_in_stage"]:
        assert abs(row["median_seconds"] - _p(finished[row["stage"]], 0.5)) < 1e-6
        assert abs(row["p90_seconds"] - _p(finished[row["stage"]], 0.9)) < 1e-6

    # Conversion: of those that entered a stage, how many went on to a later one (or won).
    assert [(r["stage"], r["entered"], r["advanced"]) for r in report["conversion"]] == [
        ("Qualification", 6, 4),  # A, B, C, E went on; D was lost, F waits
        ("Presentation", 1, 1),
        ("Proposal", 4, 2),  # A won, B went to Contracting; C lost, E waits
        ("Contracting", 1, 1),
    ]
    pipeline = {
        r["stage"]: (r["opportunities"], Decimal(r["amount"]), Decimal(r["weighted_amount"]))
        for r in report["pipeline"]
    }
    assert pipeline["Qualification"] == (1, Decimal(1000), Decimal(100))  # 10 %
    assert pipeline["Proposal"] == (1, Decimal(5000), Decimal(3000))  # 60 %
    assert pipeline["Presentation"] == pipeline["Contracting"] == (0, Decimal(0), Decimal(0))
    assert Decimal(report["pipeline_total"]["weighted_amount"]) == Decimal(3100)

    # Filters: a customer, and a period that ends before any of it.
    one = json.loads((await sale.cli("report", "--owner", owner, "--customer", "Cust C", "--json")).stdout)
    assert (one["closings"]["lost"], one["closings"]["won"], one["closings"]["win_rate"]) == (1, 0, 0.0)
    before = json.loads((await sale.cli("report", "--owner", owner, "--to", "2020-01-01", "--json")).stdout)
    assert before["closings"]["closed"] == 0 and before["closings"]["win_rate"] is None
    assert before["conversion"] == [] and before["pipeline_total"]["opportunities"] == 2  # open now

    # Text, charts and the HTML page.
    page_file = tmp_path / "r.html"
    text = await sale.cli("report", "--owner", owner, "--charts", str(tmp_path), "--html", str(page_file))
    assert text.code == 0, text.stderr
    assert "win rate         50%" in text.stdout and "income per hour  133.33" in text.stdout
    for name in ("pipeline", "time-in-stage", "forecast"):
        data = (tmp_path / f"{name}.png").read_bytes()
        with Image.open(BytesIO(data)) as image:
            image.verify()
        with Image.open(BytesIO(data)) as image:
            assert image.format == "PNG" and 600 <= image.width <= 1200 and 250 <= image.height <= 900
            assert len(image.getcolors(maxcolors=100_000) or []) > 5  # drawn, not blank
    page = page_file.read_text()
    assert page.count("data:image/png;base64,") == 3 and "Price too high" in page
    assert f"wrote 3 charts in {tmp_path} and the page {page_file}" in text.stderr
    assert "<td>None</td>" not in page and "<td>—</td>" in page  # no quota: a dash, as in the text
    empty = await sale.cli("report", "--owner", "nobody at all", "--html", str(tmp_path / "empty.html"))
    assert empty.code == 0 and "win rate         —" in empty.stdout, empty.stderr
    bad = await sale.cli("report", "--from", "2030-02-01", "--to", "2030-01-01")
    assert bad.code == 1 and "--to must come after --from" in bad.stderr


async def test_the_demo_drives_opportunities_through_the_process(sale: Sale) -> None:
    before = await sale.pool.fetchval("SELECT count(*) FROM opportunities WHERE id LIKE 'demo-%'")
    demo = await sale.cli("demo", "--n", "6", "--seed", "3")
    assert demo.code == 0, demo.stderr
    assert demo.stdout.startswith("driving 6 opportunities through the process")
    assert demo.stdout.count("  ") >= 6 and "done:" in demo.stdout  # a line per opportunity, then a sum
    ids = [r["id"] for r in await sale.pool.fetch("SELECT id FROM opportunities WHERE id LIKE 'demo-%'")]
    assert len(ids) == before + 6
    # Every row came from the process: the checker finds nothing to object to.
    check = await sale.cli("check", *ids[-6:], "--json")
    assert check.code == 0 and json.loads(check.stdout)["violations"] == [], check.stdout
    visits = await sale.pool.fetchval(
        "SELECT count(*) FROM stage_visits WHERE opportunity_id = ANY($1::text[])", ids[-6:]
    )
    assert visits > 6  # they moved
