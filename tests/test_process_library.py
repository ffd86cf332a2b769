"""The process library (R16): published versions of the definition. A run keeps the version it
started with to its end (across continue-as-new too); new runs take the latest; a file is
validated against the lookups before it is published, and publishing it twice makes one version.

Publishing changes what every later test's new runs do, so each test here publishes the
original definition again before it ends.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from activities.data import definitions
from tests.helpers import Sale
from workflows import contract as c
from workflows.definition import load_default_definition

LOST = {"name": "x", "effect": "move", "stage": "Closed lost"}
SEND_DECK = {"key": "send-deck", "title": "Send the slide deck to the client", "duration": "P1D"}


@pytest.fixture
async def original(sale: Sale, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The definition in force; published again (as a new version) once the test is done."""
    exported = await sale.cli("definition", "export")
    assert exported.code == 0, exported.stderr
    doc: dict[str, Any] = json.loads(exported.stdout)
    yield doc
    path = tmp_path / "original.json"
    path.write_text(exported.stdout)
    restored = await sale.cli("definition", "publish", str(path))
    assert restored.code == 0, restored.stderr


def _with_deck(doc: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    presentation = next(s for s in changed["stages"] if s["stage"] == "Presentation")
    presentation["tasks"].append(SEND_DECK)
    return changed


async def test_a_run_keeps_its_version_while_a_newer_one_is_published(
    sale: Sale, original: dict[str, Any], tmp_path: Path
) -> None:
    before = original["version"]
    handle, old_run = await sale.started(continue_as_new_after_events=100)
    assert (await sale.state(old_run)).definition_version == before

    path = tmp_path / "with-deck.json"
    path.write_text(json.dumps(_with_deck(original)))
    checked = await sale.cli("definition", "validate", str(path))
    assert checked.code == 0, checked.stderr
    assert f"it would be version {before + 1}" in checked.stdout
    assert "+ Presentation/send-deck: Send the slide deck to the client (due in 1 day" in checked.stdout
    published = await sale.cli("definition", "publish", str(path), "--actor", "process-owner")
    assert published.code == 0, published.stderr
    assert f"published version {before + 1}" in published.stdout
    again = await sale.cli("definition", "publish", str(path))
    assert again.code == 0 and f"unchanged: version {before + 1}" in again.stdout
    same = await sale.cli("definition", "validate", str(path))  # what publish just said, said first
    assert same.code == 0 and same.stdout.strip() == (
        f"{path}: valid; no change against version {before + 1}, in force: publishing it would do nothing"
    ), same.stdout

    _, new_run = await sale.started()
    assert (await sale.state(new_run)).definition_version == before + 1

    # The old run crosses continue-as-new (the visits below are > 100 events) and keeps its version.
    first_run_id = (await handle.describe()).run_id
    for stage in ["Proposal", "Contracting", "Qualification", "Presentation"] * 4:
        await sale.update(old_run, c.UPDATE_CHANGE_STAGE, {"stage": stage, "actor": "bob"})
    await sale.update(new_run, c.UPDATE_CHANGE_STAGE, {"stage": "Presentation", "actor": "bob"})
    old = await sale.wait_stage(old_run, "Presentation")
    new = await sale.wait_stage(new_run, "Presentation")
    assert (await sale.handle(old_run).describe()).run_id != first_run_id, "no continue-as-new happened"
    assert old.definition_version == before and new.definition_version == before + 1
    assert [t.title for t in old.open_tasks] == ["Presentation"]
    assert [t.title for t in new.open_tasks] == ["Presentation", SEND_DECK["title"]]
    assert {v["definition_version"] for v in await sale.visits(old_run)} == {before}
    assert {v["definition_version"] for v in await sale.visits(new_run)} == {before + 1}

    versions = json.loads((await sale.cli("definition", "versions", "--json")).stdout)
    newest, previous = versions[0], next(v for v in versions if v["version"] == before)
    assert (newest["version"], newest["published_by"]) == (before + 1, "process-owner")
    assert newest["open_opportunities"] >= 1 and previous["open_opportunities"] >= 1
    shown = await sale.cli("definition", "show", "--version", str(before))
    assert shown.code == 0 and f"version {before}\n" in shown.stdout
    assert SEND_DECK["title"] not in shown.stdout
    assert SEND_DECK["title"] in (await sale.cli("definition")).stdout
    history = (await sale.cli("show", new_run)).stdout
    assert f"(corporate-sale v{before + 1})" in history


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: "{not json", "not JSON: Expecting property name enclosed in double quotes at line 1"),
        (lambda d: {**d, "stages": "none"}, "stages: Input should be a valid tuple"),
        (
            lambda d: {**d, "reminders": {"escalate_after": "P4000D"}},
            "reminders.escalate_after: Input should be less than or equal to 3650 days",
        ),
        (
            lambda d: {**d, "stages": [*d["stages"], {"stage": "Negotiation", "tasks": []}]},
            "definition names stage 'Negotiation', not in the stages lookup",
        ),
        (
            lambda d: {**d, "follow_up": [*d["follow_up"], d["follow_up"][0]]},
            "follow_up: task keys must be distinct",
        ),
        (
            lambda d: _outcome(d, LOST),
            "outcome 'x' closes as lost: give it a close_reason",
        ),
        (
            lambda d: _outcome(d, {**LOST, "close_reason": "-"}),
            "'-' is not a close reason",
        ),
        (
            lambda d: _outcome(d, {"name": "y", "effect": "continue", "close_reason": "Other"}),
            "a close_reason is only for an outcome that closes as lost",
        ),
    ],
)
async def test_a_bad_definition_is_refused_with_what_is_wrong_and_nothing_is_published(
    sale: Sale, original: dict[str, Any], tmp_path: Path, change: Any, why: str
) -> None:
    bad = change(original)
    path = tmp_path / "bad.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    versions = (await sale.cli("definition", "versions", "--json")).stdout
    for command in ("validate", "publish"):
        result = await sale.cli("definition", command, str(path))
        assert result.code == 1 and why in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert (await sale.cli("definition", "versions", "--json")).stdout == versions


def _outcome(doc: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    task = changed["stages"][0]["tasks"][0]
    task["outcomes"] = [{"name": "done"}, outcome]
    return changed


async def test_a_stage_a_running_version_names_cannot_be_removed(
    sale: Sale, original: dict[str, Any], tmp_path: Path
) -> None:
    """Stages lookup edits are checked against every version an open run follows, not only the
    latest: a run that follows an older version keeps working."""
    name = "Negotiation test stage"
    added = await sale.cli("stages", "add", name, "--order", "3500", "--probability", "70")
    assert added.code == 0, added.stderr
    with_stage = copy.deepcopy(original)
    with_stage["stages"].append({"stage": name, "tasks": [SEND_DECK]})
    path = tmp_path / "negotiation.json"
    path.write_text(json.dumps(with_stage))
    assert (await sale.cli("definition", "publish", str(path))).code == 0
    _, opp = await sale.started()  # follows the version that names the stage

    path.write_text(json.dumps(original))
    assert (await sale.cli("definition", "publish", str(path))).code == 0  # the latest no longer names it
    removed = await sale.cli("stages", "remove", name)
    assert removed.code == 1, removed.stdout
    assert f"definition names stage {name!r}" in removed.stderr
    await sale.update(
        opp, c.UPDATE_CHANGE_STAGE, {"stage": "Closed lost", "actor": "alice", "reason": "Other"}
    )
    assert (await sale.cli("stages", "remove", name)).code == 0, "closed: the version is no longer in use"


async def test_an_upgrade_publishes_a_newer_bundled_definition_unless_someone_published_their_own(
    sale: Sale,
) -> None:
    bundled = load_default_definition()
    async with sale.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("DELETE FROM process_definitions")  # rolled back below
            both = [f"corporate-sale v{bundled.version}", "small-business-sale v1"]
            assert await definitions.publish_bundled(conn) == both  # a new database
            assert await definitions.publish_bundled(conn) == []  # already in force

            await conn.execute("DELETE FROM process_definitions WHERE process = 'corporate-sale'")
            older = bundled.model_copy(update={"version": bundled.version - 1})
            await definitions.insert_version(conn, older, definitions.BUNDLED_BY)
            assert await definitions.publish_bundled(conn) == both[:1]  # an upgrade
            assert (await definitions.latest(conn)) == bundled

            await conn.execute("DELETE FROM process_definitions WHERE process = 'corporate-sale'")
            await definitions.insert_version(conn, older, "process-owner")  # their own: it stays in force
            assert await definitions.publish_bundled(conn) == []
            assert (await definitions.latest(conn)).version == older.version
        finally:
            await tx.rollback()
