"""R5 as a person sees it: the notification center (inbox, mark read), the calendar (agenda, the
.ics export a calendar client imports) and the people table escalations use."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from icalendar import Calendar

from tests.helpers import Sale
from workflows import contract as c
from workflows.definition import load_default_definition


def _person() -> str:
    return f"pat-{uuid.uuid4().hex[:6]}"


async def test_the_inbox_lists_unread_first_newest_first_and_marks_read(sale: Sale) -> None:
    owner = _person()
    _, opp = await sale.started(owner=owner)
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": "bob"})
    await sale.wait_stage(opp, "Proposal")

    inbox = json.loads((await sale.cli("inbox", owner, "--json")).stdout)
    kinds = [n["kind"] for n in inbox]
    assert sorted(kinds) == sorted(["task_assigned"] * 5 + ["stage_changed"])
    created = [n["created_at"] for n in inbox]
    assert created == sorted(created, reverse=True)  # newest first
    assert inbox[0]["kind"] in {"task_assigned", "stage_changed"} and inbox[0]["read_at"] is None

    oldest = inbox[-1]["id"]
    marked = await sale.cli("read", owner, oldest, "--json")
    assert marked.code == 0 and json.loads(marked.stdout) == {"marked_read": 1}, marked.stderr
    again = json.loads((await sale.cli("read", owner, oldest, "--json")).stdout)
    assert again == {"marked_read": 0}
    newest = json.loads((await sale.cli("inbox", owner, "--json")).stdout)
    assert newest[-1]["id"] == oldest and newest[-1]["read_at"] is not None  # read ones last
    unread = json.loads((await sale.cli("inbox", owner, "--unread", "--json")).stdout)
    assert len(unread) == 5 and oldest not in {n["id"] for n in unread}

    text = await sale.cli("inbox", owner)
    assert text.code == 0 and text.stdout.startswith(f"{owner}: 5 unread")
    assert f"bob moved Deal {opp} from Qualification to Proposal" in text.stdout

    wrong = await sale.cli("read", _person(), oldest)
    assert wrong.code == 1 and "has no notification" in wrong.stderr
    nothing = await sale.cli("read", owner)
    assert nothing.code == 1 and "--all" in nothing.stderr
    everything = json.loads((await sale.cli("read", owner, "--all", "--json")).stdout)
    assert everything == {"marked_read": 5}
    assert (
        await sale.cli("inbox", owner, "--unread")
    ).stdout.strip() == f"no unread notifications for {owner}"


async def test_the_agenda_shows_a_persons_tasks_in_a_date_range(sale: Sale) -> None:
    owner = _person()
    _, opp = await sale.started(owner=owner)
    tasks = await sale.tasks(opp)
    start = tasks[0]["start_at"]

    rows = json.loads((await sale.cli("agenda", owner, "--json")).stdout)
    assert [r["id"] for r in rows] == [t["id"] for t in sorted(tasks, key=lambda t: t["due_at"])]
    text = await sale.cli("agenda", owner)
    assert text.code == 0 and f"{owner}: 2 tasks from" in text.stdout
    assert f"Prepare presentation (Deal {opp}, Acme Ltd)" in text.stdout
    # Tasks due in 2 and 3 days: a range that starts after the first is due lists only the second
    # (the first is not overdue: overdue is due before now); a range that ends before they start
    # lists neither.
    after_first = (start + timedelta(days=2, hours=1)).isoformat()
    later = json.loads((await sale.cli("agenda", owner, "--from", after_first, "--json")).stdout)
    assert [r["id"] for r in later] == [f"{opp}:v1:prepare-presentation"]
    before = (start - timedelta(days=1)).isoformat()
    earlier = await sale.cli("agenda", owner, "--from", "2020-01-01", "--to", before, "--json")
    assert json.loads(earlier.stdout) == []
    # A task overdue now is listed whatever the range, marked: it is still to do.
    await sale.pool.execute(
        "UPDATE tasks SET due_at = now() - interval '1 day' WHERE id = $1", f"{opp}:v1:contact-assess"
    )
    next_year = (datetime.now(UTC) + timedelta(days=365)).date()
    window = ("--from", next_year.isoformat(), "--to", (next_year + timedelta(days=31)).isoformat())
    future = await sale.cli("agenda", owner, *window, "--json")
    assert [(r["id"], r["overdue"]) for r in json.loads(future.stdout)] == [
        (f"{opp}:v1:contact-assess", True)
    ]
    marked = await sale.cli("agenda", owner, *window)
    assert "overdue" in marked.stdout
    await sale.complete(opp, f"{opp}:v1:contact-assess")
    open_only = json.loads((await sale.cli("agenda", owner, "--json")).stdout)
    assert [r["id"] for r in open_only] == [f"{opp}:v1:prepare-presentation"]
    everything = await sale.cli(
        "agenda", owner, "--all", "--from", "2020-01-01", "--to", str(next_year), "--json"
    )
    everything = json.loads(everything.stdout)
    assert {r["status"] for r in everything} == {"open", "completed"}

    far = await sale.cli("agenda", owner, "--from", "9999-12-25")
    assert far.code == 1 and "too far in the future" in far.stderr
    bad = await sale.cli("agenda", owner, "--from", "next week")
    assert bad.code == 1 and "not a date or date-time: 'next week'" in bad.stderr
    backwards = await sale.cli("agenda", owner, "--from", "2030-01-02", "--to", "2030-01-01")
    assert backwards.code == 1 and "must come after --from" in backwards.stderr


async def test_the_ics_export_has_every_open_task_once_with_stable_uids(sale: Sale) -> None:
    owner = _person()
    _, opp = await sale.started(owner=owner)
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Proposal", "actor": owner})
    await sale.wait_stage(opp, "Proposal")
    tasks = {t["id"]: t for t in await sale.tasks(opp)}

    first = await sale.cli("ics", owner)
    assert first.code == 0, first.stderr
    cal = Calendar.from_ical(first.stdout)
    todos = list(cal.walk("VTODO"))
    by_uid = {str(t["UID"]): t for t in todos}
    assert len(by_uid) == len(todos) == len(tasks)  # the canceled Qualification tasks too, once
    for task_id, row in tasks.items():
        todo = by_uid[f"{task_id}@corporate-sale"]
        assert todo.decoded("DUE") == row["due_at"].replace(microsecond=0)  # iCalendar counts seconds
        assert str(todo["SUMMARY"]) == row["title"]
        want = {"open": "NEEDS-ACTION", "canceled": "CANCELLED"}[row["status"]]
        assert str(todo["STATUS"]) == want
    open_uids = {uid for uid, t in by_uid.items() if str(t["STATUS"]) == "NEEDS-ACTION"}
    assert open_uids == {f"{i}@corporate-sale" for i, t in tasks.items() if t["status"] == "open"}

    second = Calendar.from_ical((await sale.cli("ics", owner)).stdout)
    assert sorted(str(t["UID"]) for t in second.walk("VTODO")) == sorted(by_uid)  # same UIDs: an update

    nowhere = await sale.cli("ics", owner, "--out", "/no/such/folder/tasks.ics")
    assert nowhere.code == 1 and "cannot write /no/such/folder/tasks.ics" in nowhere.stderr
    negative = await sale.cli("inbox", owner, "--limit", "-1")
    assert negative.code == 2 and "-1 is out of range" in negative.stderr
    events = Calendar.from_ical((await sale.cli("ics", owner, "--events")).stdout)
    assert {str(e["UID"]) for e in events.walk("VEVENT")} == set(by_uid)


async def test_people_and_their_managers_are_kept_whole(sale: Sale) -> None:
    ann, ben, cy = _person(), _person(), _person()
    assert (await sale.cli("people", "set", ann, "--manager", ben, "--email", "ann@example.com")).code == 0
    assert (await sale.cli("people", "set", ben, "--manager", cy)).code == 0
    people = {p["name"]: p for p in json.loads((await sale.cli("people", "--json")).stdout)}
    assert (people[ann]["manager"], people[ann]["email"], people[ben]["manager"]) == (
        ben,
        "ann@example.com",
        cy,
    )

    loop = await sale.cli("people", "set", cy, "--manager", ann)
    assert loop.code == 1 and "a manager chain cannot loop" in loop.stderr
    itself = await sale.cli("people", "set", ann, "--manager", ann)
    assert itself.code == 1 and "cannot be their own manager" in itself.stderr
    managing = await sale.cli("people", "remove", ben)
    assert managing.code == 1 and f"manages {ann}" in managing.stderr
    assert (await sale.cli("people", "set", ann, "--no-manager")).code == 0
    assert (await sale.cli("people", "remove", ben)).code == 0
    people = {p["name"]: p for p in json.loads((await sale.cli("people", "--json")).stdout)}
    assert ben not in people and people[ann]["manager"] is None and people[ann]["email"] == "ann@example.com"
    missing = await sale.cli("people", "remove", ben)
    assert missing.code == 1 and f"no person {ben!r}" in missing.stderr


def test_working_days_skip_the_weekend() -> None:
    definition = load_default_definition().model_copy(update={"calendar": "working-days"})
    thursday, friday = datetime(2026, 11, 26, 10, tzinfo=UTC), datetime(2026, 11, 27, 10, tzinfo=UTC)
    saturday = datetime(2026, 11, 28, 10, tzinfo=UTC)
    monday = datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert definition.due(friday, timedelta(days=1)) == monday
    assert definition.due(thursday, timedelta(days=2)) == monday
    assert definition.due(friday, timedelta(days=5)) == friday + timedelta(days=7)
    assert definition.due(saturday, timedelta(hours=4)) == monday + timedelta(hours=4)
    assert definition.due(thursday, timedelta(hours=4)) == thursday + timedelta(hours=4)
    assert load_default_definition().due(friday, timedelta(days=1)) == saturday  # calendar days


def _working_days_later(start: datetime, days: int) -> datetime:
    """The reference: step a day at a time, counting weekdays only."""
    day, counted = start, 0
    while counted < days:
        day += timedelta(days=1)
        counted += day.weekday() < 5
    return day


async def test_a_definition_on_working_days_dates_its_tasks_on_weekdays(sale: Sale) -> None:
    def working_days(doc: dict[str, object]) -> None:
        doc["calendar"] = "working-days"

    async with sale.definition(working_days):
        _, opp = await sale.started(owner=_person())
        tasks = await sale.tasks(opp)
    durations = {"contact-assess": 2, "prepare-presentation": 3}  # days, in the definition
    for t in tasks:
        assert t["due_at"] == _working_days_later(t["start_at"], durations[t["task_key"]])
        assert t["due_at"].weekday() < 5
