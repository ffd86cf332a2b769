"""The main command (`corpsale dev`, what `python3 dev.py` runs) brings up the whole stack, and
the CLI, run from any folder, reads the database of the stack it sends commands to; where no
stack runs it says so in one line and creates no database of its own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from tests.test_chaos import free_port

ROOT = Path(__file__).parent.parent


def _env(**extra: str) -> dict[str, str]:
    """The environment of a user with no stack settings of their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORPSALE_", "TEMPORAL_"))}
    env.pop("DATABASE_URL", None)
    return {**env, "PYTHONPATH": str(ROOT), **extra}


async def _cli(cwd: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter.cli", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _ready(dev: asyncio.subprocess.Process) -> str:
    """What `corpsale dev` printed up to its ready banner."""
    assert dev.stdout is not None
    seen = ""
    while "Ctrl-C stops everything" not in seen:
        line = await asyncio.wait_for(dev.stdout.readline(), 120)
        assert line, f"corpsale dev ended before it was ready:\n{seen}"
        seen += line.decode()
    return seen


async def test_the_cli_reads_the_database_of_the_stack_it_talks_to_from_any_folder() -> None:
    with tempfile.TemporaryDirectory(prefix="corpsale-stack-") as tmp:
        home, data, elsewhere = Path(tmp, "home"), Path(tmp, "data"), Path(tmp, "elsewhere")
        elsewhere.mkdir()
        port = free_port()
        dev = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "starter.cli", "dev", cwd=ROOT,
            env=_env(HOME=str(home), CORPSALE_DATA_DIR=str(data), CORPSALE_TEMPORAL_PORT=str(port),
                     CORPSALE_UI_PORT=str(free_port())),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            banner = await _ready(dev)
            assert f"Temporal     localhost:{port}" in banner, banner
            user = _env(HOME=str(home), TEMPORAL_ADDRESS=f"localhost:{port}")

            code, out, err = await _cli(elsewhere, user, "start", "--title", "Fleet", "--customer", "Initech",
                                        "--owner", "alice", "--json")  # fmt: skip
            assert code == 0, err
            opp = json.loads(out)["opportunity_id"]
            code, out, err = await _cli(elsewhere, user, "list", "--json")
            assert code == 0, err
            assert opp in [row["id"] for row in json.loads(out)]

            # Where no stack serves the Temporal address: one line, and no database made here.
            nowhere = {**user, "TEMPORAL_ADDRESS": f"localhost:{free_port()}"}
            code, out, err = await _cli(elsewhere, nowhere, "list")
            assert code == 1 and "corpsale: no database: no `corpsale dev` runs for Temporal at" in err
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
            assert not (elsewhere / ".corpsale").exists()
        finally:
            if dev.returncode is None:
                dev.send_signal(signal.SIGINT)
                await asyncio.wait_for(dev.wait(), 60)
        assert dev.returncode == 0
        assert not list((home / ".corpsale" / "stacks").glob("*.json"))  # its record goes with it
