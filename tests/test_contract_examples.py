"""Every Temporal CLI example in docs/contract.md runs as written (with a fresh opportunity id)
against a dev server and a worker on the default task queue, in the order of the page: those
marked `# refused` must fail, every other must succeed, and the end state is what they say."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

from tests.helpers import Sale
from tests.processes import shell
from worker.dev_server import temporal_cli
from worker.main import serving
from workflows import contract as c

PAGE = Path(__file__).parent.parent / "docs" / "contract.md"


def examples(text: str) -> list[tuple[bool, str]]:
    """The shell commands of the page's ```sh blocks, with whether a `# refused` comment
    precedes each."""
    found: list[tuple[bool, str]] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        refused, command = False, ""
        for line in block.splitlines():
            if not command and line.startswith("#"):
                refused = line.startswith("# refused")
                continue
            command += line.removesuffix("\\")
            if not line.endswith("\\"):
                found.append((refused, command))
                refused, command = False, ""
    return found


async def test_every_contract_example_runs_as_written(sale: Sale) -> None:
    opp = f"opp-{uuid.uuid4().hex[:8]}"
    commands = [(refused, cmd.replace("opp-42", opp)) for refused, cmd in examples(PAGE.read_text())]
    assert len(commands) >= 12 and commands[0][1].startswith("temporal workflow start")
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": sale.client.service_client.config.target_host,
        "PATH": f"{Path(temporal_cli()).parent}{os.pathsep}{os.environ['PATH']}",
    }
    outputs: list[str] = []
    async with serving(sale.client, sale.pool, task_queue=c.DEFAULT_TASK_QUEUE):
        for refused, command in commands:
            ran = await shell(command, env)
            out = ran.stdout
            assert (ran.code != 0) == refused, (command, out)
            outputs.append(out)
            if command.startswith("temporal workflow start"):
                await sale.wait_stage(opp, "Qualification")

    said = dict(zip((cmd for _, cmd in commands), outputs, strict=True))
    assert any("Unknown stage 'Negotiation'" in out for out in said.values())
    assert any("takes a reason from the close-reason lookup" in out for out in said.values())
    query = next(out for cmd, out in said.items() if "--type state" in cmd)
    state = json.loads(query[query.index("{") :].strip().removeprefix("Query result:").strip())
    assert state["stage"] == "Proposal" and state["owner"] == "bob" and state["tasks_done"] == 1
    assert "Call the CFO" in [t["title"] for t in state["open_tasks"]]
    listed = next(out for cmd, out in said.items() if cmd.startswith("temporal workflow list"))
    assert c.workflow_id(opp) in listed

    row = await sale.opportunity(opp)
    assert (row["stage"], row["close_reason"], row["competitor"], row["owner"]) == (
        "Closed lost",
        "Price too high",
        "Globex",
        "bob",
    )
    assert (row["expected_amount"], row["decision_maker"]) == (48000, "Jane Roe")
