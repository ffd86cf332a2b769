"""What an operator types: tasks by their key, stage names in any case with a guess for a typo,
one date parser, help on every command and option; and the income and hours of a won deal,
which can always be recorded (R9)."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from starter.cli import build_parser
from tests.helpers import ADMIN, Sale
from workflows import contract as c


def _commands(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)] if path else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, f"{path} {name}".strip())
    return found


def test_a_group_of_commands_that_lists_its_commands_in_the_overview_lists_them_all() -> None:
    parser = build_parser()
    [top] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {choice.dest: choice.help or "" for choice in top._choices_actions}
    for path, command in _commands(parser):
        subs = [name for name, _ in _commands(command) if " " not in name]
        listed = helps.get(path, "").partition(": ")[2]  # "the process library: show, versions, ..."
        if " " in path or not subs or not listed:
            continue
        missing = [name for name in subs if name not in listed]
        assert not missing, f"`corpsale --help` leaves {missing} out of {path}: {helps[path]}"


def test_every_command_and_option_says_what_it_is_for_in_the_words_of_the_sale() -> None:
    for path, command in _commands(build_parser()):
        assert command.description, f"`corpsale {path} --help` has no description"
        for action in command._actions:
            if action.option_strings and "-h" not in action.option_strings:
                assert action.help, f"`corpsale {path}` option {action.option_strings} has no help"
        text = command.format_help()
        assert not re.search(r"\bR\d+\b", text), f"`corpsale {path} --help` names a rule number"


async def test_tasks_by_key_and_stages_in_any_case(sale: Sale) -> None:
    _, opp = await sale.started()
    done = await sale.cli("complete", opp, "contact-assess")
    assert done.code == 0, done.stderr
    assert {t["id"]: t["status"] for t in await sale.tasks(opp)}[f"{opp}:v1:contact-assess"] == "completed"
    unknown = await sale.cli("complete", opp, "sign-contract")
    assert unknown.code == 1 and "no open task 'sign-contract'" in unknown.stderr
    assert "its open tasks: prepare-presentation" in unknown.stderr

    moved = await sale.cli("move", opp, "proposal")
    assert moved.code == 0, moved.stderr
    assert (await sale.state(opp)).stage == "Proposal"
    typo = await sale.cli("move", opp, "Contractin")
    assert typo.code == 1 and "no stage 'Contractin'. Did you mean 'Contracting'?" in typo.stderr
    again = await sale.cli("move", opp, "Proposal")
    assert again.code == 1 and "send restart: true (`corpsale move --restart`)" in again.stderr
    # A service that sends a stage in another case gets the same guess from the process.
    refused = await sale.cli("list", "--stage", "Nope")
    assert refused.code == 1 and "no stage 'Nope'" in refused.stderr
    listed = await sale.cli("list", "--stage", "proposal", "--json")
    assert opp in [r["id"] for r in json.loads(listed.stdout)]

    # An opportunity that does not exist: the hint says how to create one, not how to start its
    # process (which would only lead to a second error).
    for args in (("state", "nosuch-opp"), ("move", "nosuch-opp", "Proposal")):
        missing = await sale.cli(*args)
        assert missing.code == 1 and "no opportunity 'nosuch-opp'" in missing.stderr, missing
        assert "--existing" not in missing.stderr and "corpsale start --title" in missing.stderr

    bad_due = await sale.cli("add-task", opp, "Call", "--due", "05/04/2030")
    assert bad_due.code == 1 and "not a date or date-time: '05/04/2030'; write 2030-05-04" in bad_due.stderr

    # A task put off by its key, for a span from now; a span that is not one says how to write it.
    before = datetime.now(UTC)
    snoozed = await sale.cli("snooze", opp, "present-proposal", "--for", "3d", "--reason", "away")
    assert snoozed.code == 0, snoozed.stderr
    [due] = [t.due_at for t in (await sale.state(opp)).open_tasks if t.task_id.endswith(":present-proposal")]
    assert before + timedelta(days=3) <= due <= datetime.now(UTC) + timedelta(days=3)
    bad_span = await sale.cli("snooze", opp, "present-proposal", "--for", "3 days")
    assert bad_span.code == 1 and "not a span of time: '3 days'; write a number and a unit" in bad_span.stderr


async def test_the_process_guesses_a_stage_named_in_another_case(sale: Sale) -> None:
    _, opp = await sale.started()
    for stage in ["closed won", "Proposl"]:
        await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, {"stage": stage, "actor": "alice"})
    state = await sale.wait_stage(opp, "Qualification")
    reasons = [r.reason for r in (await sale.state(opp)).rejected]
    assert any("Did you mean 'Closed won'?" in r for r in reasons), reasons
    assert any("Did you mean 'Proposal'?" in r for r in reasons), reasons
    assert state.stage == "Qualification"


async def test_a_won_deal_records_income_and_hours_with_its_last_completion(sale: Sale) -> None:
    _, opp = await sale.started()
    await sale.update(opp, c.UPDATE_CHANGE_STAGE, {"stage": "Contracting", "actor": "alice"})
    early = await sale.cli("complete", opp, "send-contract", "--income", "1000")
    assert early.code == 1 and "go with the completion that closes the opportunity as won" in early.stderr
    await sale.cli("complete", opp, "send-contract")
    await sale.cli("complete", opp, "contract-status")
    won = await sale.cli("complete", opp, "sign-contract", "--outcome", "signed", "--income", "48000.50")
    assert won.code == 0, won.stderr
    assert "Closed won (closed)" in won.stdout and "tasks of this visit" not in won.stdout  # no "0 of 0"
    row = await sale.opportunity(opp)
    assert (row["stage"], row["actual_income"], row["hours_spent"]) == (
        "Closed won",
        Decimal("48000.50"),
        None,
    )
    order = await sale.pool.fetchval("SELECT amount FROM orders WHERE opportunity_id = $1", opp)
    assert order == Decimal("48000.50")

    # Closed: the hours come afterwards; the only change a closed deal takes, and only a won one's.
    mallory = await sale.cli(
        "close-details", opp, "--hours", "35", env={"USER": "mallory", "LOGNAME": "mallory"}
    )
    assert mallory.code == 1 and "mallory may not close alice's opportunity" in mallory.stderr
    added = await sale.cli("close-details", opp, "--hours", "35", "--actor", "alice")
    assert added.code == 0, added.stderr
    shown = await sale.cli("show", opp)
    assert "income 48000.50, hours 35.00" in shown.stdout
    assert "Tasks ([ ] open, [x] completed, [-] canceled):" in shown.stdout  # the marks' legend

    _, lost = await sale.started()
    await sale.update(
        lost, c.UPDATE_CHANGE_STAGE, {"stage": "Closed lost", "actor": ADMIN, "reason": "No budget"}
    )
    refused = await sale.cli("close-details", lost, "--income", "5")
    assert refused.code == 1 and "was closed in 'Closed lost'" in refused.stderr
    assert "reason No budget" in (await sale.cli("show", lost)).stdout
