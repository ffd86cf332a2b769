"""Clear errors, never a traceback: hostile input to the CLI is a one-line refusal that says what
to send instead, and a worker that cannot reach its servers says so, one line per attempt, and
waits for them (stopping at once when told) instead of dying with a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import pytest
from temporalio.client import Client

from tests.helpers import CliResult, Sale
from tests.processes import shell
from worker.codec import data_converter, new_key
from worker.main import serving

CONTRACT = Path(__file__).parent.parent / "docs" / "contract.md"
DEEP = "[" * 3000 + "]" * 3000  # deeper than Python's recursion limit
PASSWORD = "s3cret-pw"


def one_line_error(result: CliResult, *words: str) -> str:
    """The error line of a refused command; it fails unless the command exited 1 with one line
    that has `words` in it, and no traceback."""
    assert result.code == 1, result
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("corpsale: "), result.stderr[-2000:]
    for word in words:
        assert word in line, line
    return line


async def corpsale(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """`corpsale` for commands that need no server (`env`: more environment variables)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starter.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


# --data nested too deeply -------------------------------------------------------------------


async def test_start_with_data_nested_too_deeply_is_refused_in_one_line(sale: Sale) -> None:
    opp = sale.new_id()
    result = await sale.cli(
        "start", "--id", opp, "--title", "T", "--customer", "C", "--owner", "alice",
        "--data", '{"need": ' + DEEP + "}",
    )  # fmt: skip
    one_line_error(result, "--data is nested too deeply", "flat JSON object", "--set")
    assert await sale.pool.fetchrow("SELECT 1 FROM opportunities WHERE id = $1", opp) is None


async def test_update_with_data_nested_too_deeply_is_refused_in_one_line(sale: Sale) -> None:
    _, opp = await sale.started()
    result = await sale.cli("update", opp, "--data", '{"need": ' + DEEP + "}")
    one_line_error(result, "--data is nested too deeply", "flat JSON object")
    assert (await sale.state(opp)).data.get("need") is None


# A definition file nested too deeply --------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "publish"])
async def test_a_definition_file_nested_too_deeply_is_refused_and_nothing_is_published(
    sale: Sale, tmp_path: Path, command: str
) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"name": "deep", "stages": ' + DEEP + ', "follow_up": []}')
    versions = await sale.pool.fetchval("SELECT count(*) FROM process_definitions")
    result = await sale.cli("definition", command, str(path))
    one_line_error(result, "nested too deeply", "corpsale definition export")
    assert await sale.pool.fetchval("SELECT count(*) FROM process_definitions") == versions


# Settings the environment gets wrong --------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CORPSALE_COMMAND_TIMEOUT", "soon", "CORPSALE_COMMAND_TIMEOUT: Input should be a valid number"),
        ("CORPSALE_SERVICE_KEY", "erp", "CORPSALE_SERVICE_KEY: Value error, a service key is SERVICE:SECRET"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "", ""),  # empty is unset: no error
    ],
)
async def test_a_setting_the_environment_gets_wrong_is_named_in_one_line(
    variable: str, value: str, says: str
) -> None:
    result = await corpsale("schema", "--help", env={variable: value})
    if not says:
        assert result.code == 0, result
        return
    one_line_error(result, "invalid setting in the environment", says)


# corpsale schema --out somewhere it cannot write -------------------------------------------


async def test_schema_out_an_existing_file_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    result = await corpsale("schema", "--out", str(path))
    one_line_error(result, str(path), "not a folder", "give --out a folder")
    assert path.read_text() == "mine"


@pytest.mark.parametrize("where", ["under a file", "in a folder nobody can write"])
async def test_schema_out_a_folder_it_cannot_write_is_refused(tmp_path: Path, where: str) -> None:
    if where == "under a file":
        (tmp_path / "notes.txt").write_text("mine")
        out = tmp_path / "notes.txt" / "schemas"
    else:
        out = Path("/proc/corpsale-schemas")  # not even root makes a folder in /proc
    result = await corpsale("schema", "--out", str(out))
    one_line_error(result, "cannot write the schemas to", str(out), "give --out a folder")


# A worker whose servers are not there (yet) -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Worker:
    """`python -m worker.main` as a process of its own, with what it logs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc, self.lines = proc, list[str]()
        self.reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode())

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def logged(self, text: str, times: int = 1, *, timeout: float = 30.0) -> list[str]:
        """The lines with `text`, once there are `times` of them; fails with the log if the worker
        exits or `timeout` passes first."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = [line for line in self.lines if text in line]
            if len(found) >= times:
                return found
            assert self.proc.returncode is None and not self.reading.done(), (
                f"the worker exited ({self.proc.returncode}) before logging {text!r}:\n{self.log[-3000:]}"
            )
            assert asyncio.get_running_loop().time() < deadline, f"no {text!r} in:\n{self.log[-3000:]}"
            await asyncio.sleep(0.1)

    async def stopped_by(self, sig: signal.Signals, *, within: float) -> int:
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), within)
        await self.reading
        return code


@asynccontextmanager
async def worker(env: dict[str, str]) -> AsyncIterator[Worker]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.main",
        env={**env, "PYTHONPATH": os.getcwd()},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Worker(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@asynccontextmanager
async def proxy(port: int, database_url: str) -> AsyncIterator[None]:
    """The database of `database_url` (over TCP or its unix socket), also at 127.0.0.1:`port`:
    a database that comes up where the worker waits for it."""
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    host, pg_port = (
        query.get("host") or parts.hostname or "localhost",
        query.get("port") or parts.port or 5432,
    )

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if host.startswith("/"):
            upstream = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{pg_port}")
        else:
            upstream = await asyncio.open_connection(host, int(pg_port))
        await asyncio.gather(pipe(reader, upstream[1]), pipe(upstream[0], writer))

    server = await asyncio.start_server(forward, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()


def database_at(port: int, database_url: str) -> str:
    """`database_url`'s user and database at 127.0.0.1:`port`, with a password (the embedded
    server trusts local connections, so one it does not need)."""
    parts = urlsplit(database_url)
    user, database = parts.username or "postgres", parts.path.lstrip("/") or "postgres"
    return f"postgresql://{user}:{parts.password or PASSWORD}@127.0.0.1:{port}/{database}"


def worker_env(client: Client, task_queue: str, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CORPSALE_DATABASE_URL")}
    return {
        **env,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "CORPSALE_TASK_QUEUE": task_queue,
        **variables,
    }


async def test_a_worker_waits_for_its_database_and_runs_once_it_is_there(
    client: Client, pool: asyncpg.Pool, database_url: str
) -> None:
    sale = Sale(client, pool, f"corpsale-waits-{uuid.uuid4()}", database_url)
    port = free_port()
    url = database_at(port, database_url)
    password = urlsplit(url).password or PASSWORD
    async with worker(worker_env(client, sale.task_queue, DATABASE_URL=url)) as w:
        lines = await w.logged("cannot reach the database", times=2)
        address = url.replace(f":{password}@", "@")
        assert all(f"cannot reach the database at {address} (" in line for line in lines), lines
        assert "retrying in 1 s" in lines[0] and "retrying in 2 s" in lines[1], lines
        assert "Traceback" not in w.log and password not in w.log, w.log

        async with proxy(port, database_url):  # the database is there now
            await w.logged("worker polling task queue", timeout=20)
            _, opp = await sale.started()  # this worker runs the process
            assert [t["status"] for t in await sale.tasks(opp)] == ["open", "open"]
            assert await w.stopped_by(signal.SIGTERM, within=20) == 0
    assert "Traceback" not in w.log, w.log


async def test_a_worker_waiting_for_its_database_stops_at_once_on_sigint(client: Client) -> None:
    url = f"postgresql://corpsale:{PASSWORD}@127.0.0.1:{free_port()}/corpsale"
    async with worker(worker_env(client, f"corpsale-waits-{uuid.uuid4()}", DATABASE_URL=url)) as w:
        await w.logged("cannot reach the database", times=2)
        assert await w.stopped_by(signal.SIGINT, within=5) == 0
    assert "Traceback" not in w.log and PASSWORD not in w.log, w.log


async def test_a_worker_waits_for_temporal_and_stops_at_once_on_sigterm(client: Client) -> None:
    address = f"127.0.0.1:{free_port()}"
    url = f"postgresql://corpsale:{PASSWORD}@127.0.0.1:{free_port()}/corpsale"
    env = {**worker_env(client, "corpsale-nowhere", DATABASE_URL=url), "TEMPORAL_ADDRESS": address}
    async with worker(env) as w:
        lines = await w.logged(f"cannot reach Temporal at {address} (", times=2)
        assert "retrying in 1 s" in lines[0] and "retrying in 2 s" in lines[1], lines
        assert await w.stopped_by(signal.SIGTERM, within=5) == 0
    assert "Traceback" not in w.log, w.log


async def test_an_embedded_database_that_cannot_start_is_one_line_and_exit_1(
    client: Client, tmp_path: Path
) -> None:
    data_dir = tmp_path / "a-file"
    data_dir.write_text("not a folder")
    env = worker_env(client, "corpsale-nowhere", CORPSALE_DATA_DIR=str(data_dir))
    async with worker(env) as w:
        code = await asyncio.wait_for(w.proc.wait(), 60)
        await w.reading
    assert code == 1, w.log
    assert len(w.lines) == 1 and "Traceback" not in w.log, w.log
    assert f"cannot start the embedded PostgreSQL in {data_dir.resolve() / 'postgres'}" in w.log, w.log


# The Temporal CLI with encryption on ----------------------------------------------------------


def encrypted_examples() -> list[str]:
    """The commands of the contract's `shell` blocks (the examples with encryption on)."""
    commands: list[str] = []
    for block in re.findall(r"```shell\n(.*?)```", CONTRACT.read_text(), flags=re.S):
        command = ""
        for line in block.splitlines():
            command += line.removesuffix("\\")
            if not line.endswith("\\"):
                commands.append(command.split("  #")[0].strip())
                command = ""
    return commands


async def test_with_encryption_on_the_documented_update_answers_and_a_retry_applies_it_once(
    sale: Sale,
) -> None:
    key, port = new_key(), free_port()
    target = sale.client.service_client.config.target_host
    encrypted = Sale(
        await Client.connect(target, data_converter=data_converter(key)),
        sale.pool,
        f"corpsale-codec-{uuid.uuid4()}",
        sale.database_url,
    )
    opp = encrypted.new_id()
    commands = [c.replace("opp-42", opp).replace("8081", str(port)) for c in encrypted_examples()]
    assert [c.split()[:2] for c in commands] == [["corpsale", "codec-server"], ["temporal", "workflow"]]
    serve, update = commands
    assert "--codec-endpoint" in update and "--update-id" in update and '"request_id"' in update
    env = {
        **os.environ,
        "CORPSALE_ENCRYPTION_KEY": key,
        "TEMPORAL_ADDRESS": target,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # corpsale, temporal
    }
    codec = await asyncio.create_subprocess_exec(
        *shlex.split(serve.removesuffix("&")), env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert codec.stdout is not None
        assert "codec endpoint on" in (await asyncio.wait_for(codec.stdout.readline(), 30)).decode()
        async with serving(encrypted.client, sale.pool, task_queue=encrypted.task_queue):
            await encrypted.started(opportunity_id=opp)
            for attempt in ("first", "retry"):
                ran = await shell(update, env)
                assert ran.code == 0 and f"{opp}:v1:prepare-presentation" in ran.stdout, (attempt, ran.stdout)
            state = await encrypted.state(opp)
    finally:
        codec.terminate()
        await codec.wait()
    assert state.tasks_done == 1 and [t.task_id for t in state.open_tasks] == [
        f"{opp}:v1:prepare-presentation"
    ]
    history = await (await Client.connect(target)).get_workflow_handle(f"opportunity-{opp}").fetch_history()
    accepted = [
        e.workflow_execution_update_accepted_event_attributes.accepted_request
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert [r.meta.update_id for r in accepted] == ["crm-7781"], "the retry was applied again"
    assert accepted[0].input.args.payloads[0].metadata["encoding"] == b"binary/encrypted"
