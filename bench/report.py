"""The figures of a benchmark run, and how they are reported: a table on the terminal and in
docs/benchmarks.md (newest first), the JSON in bench/results/."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import ROOT


@dataclass
class Figures:
    kind: str
    n: int
    persistence: str
    path: str = "happy"
    load: str = ""
    seconds: float = 0.0
    opportunities_per_s: float = 0.0
    completions_per_s: float = 0.0
    transition_ms: dict[str, float] = field(default_factory=dict)
    history_events: int = 0
    worker_peak_rss_mib: float = 0.0
    retried_updates: int = 0
    costs: dict[str, float] = field(default_factory=dict)  # per opportunity: see `cost_table`
    rounds: list[float] = field(default_factory=list)  # opp/s of each round, when more than one


def table(results: list[Figures]) -> str:
    if all(r.path == "open" for r in results):
        lines = [
            "| open opportunities | persistence | opened/s (tasks in PostgreSQL) | worker peak RSS MiB |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r.n} | {r.persistence} | {r.opportunities_per_s} | {r.worker_peak_rss_mib} |"
            for r in results
        ]
        return "\n".join(lines)
    lines = [
        "| run | path | N | load | persistence | opp/s | completions/s | ratio to floor | ratio to baseline"
        " | transition p50 / p95 / p99 ms | history events | worker peak RSS MiB | updates sent again |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        t = r.transition_ms
        lines.append(
            f"| {r.kind} | {r.path} | {r.n} | {r.load} | {r.persistence} | {_throughput(r)}"
            f" | {r.completions_per_s} | {_ratio(results, r, 'floor')} | {_ratio(results, r, 'baseline')}"
            f" | {t.get('p50')} / {t.get('p95')} / {t.get('p99')}"
            f" | {r.history_events} | {r.worker_peak_rss_mib} | {r.retried_updates} |"
        )
    if any(r.costs for r in results):
        lines += ["", cost_table(results)]
    return "\n".join(lines)


def _throughput(r: Figures) -> str:
    """Opportunities per second; over several rounds, all of them, then each (in parentheses)."""
    each = f" ({', '.join(map(str, r.rounds))})" if r.rounds else ""
    return f"{r.opportunities_per_s}{each}"


def _ratio(results: list[Figures], r: Figures, to: str) -> str:
    """`r`'s throughput as a ratio of the run `to` of the same size, persistence and path."""
    if r.kind == to:
        return "1"
    other = next(
        (b for b in results if b.kind == to and (b.n, b.persistence, b.path) == (r.n, r.persistence, r.path)),
        None,
    )
    return f"{r.opportunities_per_s / other.opportunities_per_s:.2f}" if other else "—"


COSTS = [
    "starts",
    "signals",
    "updates",
    "queries",
    "describes",
    "workflow tasks",
    "opportunity workflow tasks",
    "tasks workflow tasks",
    "opportunity history events",
    "tasks history events",
    "opportunity history KiB",
    "tasks history KiB",
    "server requests",
    "store requests",
    "server CPU ms",
    "worker CPU ms",
    "PostgreSQL CPU ms",
]


def cost_table(results: list[Figures]) -> str:
    """What one opportunity cost, per run: the dev server frontend's requests (all callers: the
    driver, the worker, its relays), the workflow tasks completed, the first opportunity's
    workflow tasks and history events and those of its tasks' workflows, all the server's
    requests and its store's, and the CPU time of the dev server, the worker and PostgreSQL."""
    runs = [r for r in results if r.costs]
    lines = [
        "| per opportunity | " + " | ".join(f"{r.kind} ({r.persistence}, {r.load})" for r in runs) + " |",
        "| --- |" + " --- |" * len(runs),
    ]
    for cost in COSTS:
        lines.append(f"| {cost} | " + " | ".join(f"{r.costs.get(cost, 0):g}" for r in runs) + " |")
    return "\n".join(lines)


STARTED = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def save_json(results: list[Figures], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench-{STARTED}.json").write_text(json.dumps([asdict(r) for r in results], indent=2))


def write_report(results: list[Figures], out: Path) -> None:
    save_json(results, out)
    stamp = STARTED
    text_table = table(results)
    print("\n" + text_table)
    doc = ROOT / "docs" / "benchmarks.md"
    marker = "<!-- results -->"
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{marker}\n"
    head, _, earlier = text.partition(marker)
    run = f"\n### {stamp}: `python -m bench.run {' '.join(sys.argv[1:])}`\n\n{text_table}\n"
    doc.write_text(f"{head}{marker}{run}{earlier}")  # newest first; earlier runs stay
