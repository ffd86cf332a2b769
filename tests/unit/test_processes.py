"""Processes by name (issue 26), straight against the plain core: a process of listed stages
only goes through them and refuses the others; the corporate sale keeps every stage."""

from __future__ import annotations

import pytest

from tests.unit.test_rules import NOW, PROCESS, STAGES, _rules
from workflows.contract import ChangeStage
from workflows.definition import Process, bundled_definitions
from workflows.refusals import Refused

SMALL = Process(definition=bundled_definitions()[1], stages=STAGES)


def test_a_process_of_listed_stages_only_goes_through_them_and_refuses_the_others() -> None:
    assert SMALL.definition.process == "small-business-sale" and SMALL.definition.listed_stages_only
    assert [s.name for s in SMALL.its_stages] == ["Qualification", "Proposal", "Closed won", "Closed lost"]
    assert SMALL.first_stage().name == "Qualification"
    assert SMALL.next_stage("Qualification").name == "Proposal"  # type: ignore[union-attr]
    assert SMALL.next_stage("Proposal").name == "Closed won"  # type: ignore[union-attr]
    assert (SMALL.has_stage("Presentation"), PROCESS.has_stage("Presentation")) == (False, True)
    small = _rules(process=SMALL)
    with pytest.raises(Refused, match=r"The small-business-sale process has no stage 'Presentation'\. Its"):
        small.check(ChangeStage(stage="Presentation", actor="a"), now=NOW, settled=True)
    with pytest.raises(Refused, match="Unknown stage 'Negotiation'"):
        small.check(ChangeStage(stage="Negotiation", actor="a"), now=NOW, settled=True)
    small.check(ChangeStage(stage="Proposal", actor="a"), now=NOW, settled=True)
    # the corporate sale keeps every stage of the lookup, as before there were other processes
    assert PROCESS.its_stages == STAGES and PROCESS.next_stage("Qualification").name == "Presentation"  # type: ignore[union-attr]
