"""The README's examples run as written, in order, as a new user runs them: every ```sh block,
in one shell, from a folder of its own, against a stack of their own (a fresh database, a
worker with its lead relay); where the README shows what a command prints (`#  ...` lines
after it), the output says it, and a command shown printing `corpsale: ...` fails with it.
(```shell blocks are shown, not run: the stack's own start and the test command.)"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from activities.data.db import create_pool, migrate
from starter.client import read_events
from tests.helpers import Sale, assert_events_keep_the_contract
from tests.processes import shell, worker_process
from worker.dev_server import temporal_cli

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"


@dataclass
class Example:
    command: str
    shown: list[str] = field(default_factory=list)  # what the README says it prints

    @property
    def refused(self) -> bool:
        return any(line.startswith("corpsale:") for line in self.shown)


def examples(text: str) -> list[Example]:
    found: list[Example] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        command = ""
        for line in block.splitlines():
            if not command and line.startswith("#  ") and found:
                found[-1].shown.append(line[3:].strip())
                continue
            if not command and (not line.strip() or line.lstrip().startswith("#")):
                continue
            command += line + ("\n" if line.endswith("\\") else "")  # bash joins the lines
            if not line.endswith("\\"):
                found.append(Example(command))
                command = ""
    return found


def says(output: str, shown: str) -> bool:
    """The output has the shown line, where `...` stands for anything."""
    pattern = ".*?".join(re.escape(part.strip()) for part in shown.split("..."))
    return re.search(pattern, output) is not None


async def _fresh_database(pool: asyncpg.Pool, url: str) -> str:
    """A database of the README's own on the tests' server, migrated: its examples change
    settings, people and the process library, as a new user's would."""
    name = f"readme_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"CREATE DATABASE {name}")
    fresh = urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    own = await create_pool(fresh, max_size=1)
    try:
        await migrate(own)
    finally:
        await own.close()
    return fresh


async def test_every_readme_example_runs_as_written_in_order(sale: Sale, database_url: str) -> None:
    found = examples(README.read_text())
    assert len(found) >= 30 and found[0].command.startswith("corpsale people set")
    database = await _fresh_database(sale.pool, database_url)
    queue = f"corpsale-readme-{uuid.uuid4()}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CORPSALE_")},
        "TEMPORAL_ADDRESS": sale.client.service_client.config.target_host,
        "DATABASE_URL": database,
        "CORPSALE_TASK_QUEUE": queue,
        "PYTHONPATH": str(ROOT),
        "PATH": os.pathsep.join([str(Path(temporal_cli()).parent), os.environ["PATH"]]),
    }
    markers = [f"@@{uuid.uuid4().hex}@@" for _ in found]
    script = "\n".join(
        f'echo "{mark}"\n{example.command}\necho "{mark}rc=$?"'
        for mark, example in zip(markers, found, strict=True)
    )
    with tempfile.TemporaryDirectory(prefix="corpsale-readme-") as folder:
        Path(folder, "docs").symlink_to(ROOT / "docs")  # what the README reads "from the repository's folder"
        async with worker_process(env):
            output = (await shell(script, env, cwd=folder)).stdout
        written = sorted(p.name for p in Path(folder).iterdir() if p.name != "docs")
        page = Path(folder, "report.html").read_text()
    assert written == ["alice.ics", "bundled.json", "charts", "process.json", "report.html"], written
    assert "<td>None</td>" not in page and "<td>—</td>" in page  # a figure without a value: a dash
    feed = await read_events(database, limit=100_000)  # every event the walk-through made, held to its schema
    assert len(feed) > 100 and {e["type"] for e in feed} >= {
        "com.corpsale.task.created",
        "com.corpsale.task.snoozed",
    }
    assert_events_keep_the_contract(feed)

    for mark, example in zip(markers, found, strict=True):
        part = output.split(f"{mark}\n", 1)[1].split(f"{mark}rc=", 1)
        printed, code = part[0], int(part[1].split("\n", 1)[0])
        assert (code != 0) == example.refused, (example.command, code, printed)
        for shown in example.shown:
            assert says(printed, shown), (example.command, shown, printed)
