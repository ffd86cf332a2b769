"""The main command (`corpsale dev`, what `python3 dev.py` runs) brings up the whole stack, and
the CLI, run from any folder, reads the database of the stack it sends commands to; where no
stack runs it says so in one line and creates no database of its own. With encryption on, the
banner names the key other shells need, and a shell without it sends nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from tests.test_chaos import free_port
from worker.codec import new_key

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
        port, key = free_port(), new_key()
        dev = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "starter.cli", "dev", cwd=ROOT,
            env=_env(HOME=str(home), CORPSALE_DATA_DIR=str(data), CORPSALE_TEMPORAL_PORT=str(port),
                     CORPSALE_UI_PORT=str(free_port()), CORPSALE_ENCRYPTION_KEY=key,
                     CORPSALE_CODEC_PORT=str(free_port())),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            banner = await _ready(dev)
            assert f"Temporal     localhost:{port}" in banner, banner
            assert f"Other shells need: export TEMPORAL_ADDRESS=localhost:{port} CORPSALE_DATA_DIR={data}" \
                   " CORPSALE_ENCRYPTION_KEY=<this stack's key>" in banner, banner  # fmt: skip
            keyless = _env(HOME=str(home), TEMPORAL_ADDRESS=f"localhost:{port}")
            start = (
                "start",
                "--id",
                "opp-fleet",
                "--title",
                "Fleet",
                "--customer",
                "Initech",
                "--owner",
                "alice",
            )

            # A shell without the stack's key (or with another) sends nothing, and says why.
            for shell_key, says in (
                (None, "encrypt the process's data (key"),
                (new_key(), "encrypt with key"),
            ):
                env = keyless if shell_key is None else {**keyless, "CORPSALE_ENCRYPTION_KEY": shell_key}
                code, out, err = await _cli(elsewhere, env, *start)
                assert code == 1 and says in err and err.rstrip().endswith("nothing was sent"), err
            code, out, err = await _cli(elsewhere, keyless, "list", "--json")
            assert code == 0 and json.loads(out) == [], out

            user = {**keyless, "CORPSALE_ENCRYPTION_KEY": key}  # a second start, with the key
            code, out, err = await _cli(elsewhere, user, *start, "--json")
            assert code == 0, err
            opp = json.loads(out)["opportunity_id"]
            code, out, err = await _cli(elsewhere, user, "list", "--json")
            assert code == 0, err
            assert [row["id"] for row in json.loads(out)] == [opp] == ["opp-fleet"]

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
