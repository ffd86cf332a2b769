"""docker-compose.yml, the Dockerfile, the deploy scripts and the code agree: no Docker engine
runs here, so this reads the files and checks each reference against its other end (service
names, environment variables the code reads, ports, the task queue, search attributes, pinned
images, the packages the image installs)."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml  # type: ignore[import-untyped]
from temporalio.common import SearchAttributeIndexedValueType

from worker.config import DEFAULT_TEMPORAL_ADDRESS, Settings
from worker.stack import SEARCH_ATTRIBUTES, cli_type
from workflows import contract as c

ROOT = Path(__file__).parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# Variables the Temporal client reads itself (temporalio.envconfig), beside the product's settings.
TEMPORAL_VARIABLES = {"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY"}


def _settings_variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names |= set(getattr(alias, "choices", [])) or {f"CORPSALE_{name.upper()}"}
    return names


def test_every_image_is_pinned_and_every_dependency_exists() -> None:
    for name, service in SERVICES.items():
        if "image" in service and "build" not in service:
            assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", service["image"]), (
                f"{name}: unpinned {service['image']}"
            )
        for needed in service.get("depends_on", {}):
            assert needed in SERVICES, f"{name} depends on a service that does not exist: {needed}"
    versions = {SERVICES[s]["image"].split(":")[1] for s in ("temporal", "temporal-admin-tools")}
    assert len(versions) == 1, f"the Temporal server and its admin tools differ: {versions}"
    for name in ("postgresql", "temporal", "temporal-ui", "worker"):
        assert "healthcheck" in SERVICES[name], f"{name} has no health check"
    assert all("auto-setup" not in str(s.get("image")) for s in SERVICES.values())


def test_the_worker_service_reads_only_variables_the_code_knows() -> None:
    worker = SERVICES["worker"]
    environment: dict[str, str] = worker["environment"]
    unknown = set(environment) - _settings_variables() - TEMPORAL_VARIABLES
    assert not unknown, f"the code reads no such variables: {unknown}"
    settings = Settings.model_validate(
        {k.removeprefix("CORPSALE_").lower(): v for k, v in environment.items()}
    )
    assert settings.log_format == "json"

    # Its addresses name the services that serve them, on the ports those listen on.
    temporal_host, temporal_port = environment["TEMPORAL_ADDRESS"].split(":")
    assert temporal_host == "temporal" and temporal_port == DEFAULT_TEMPORAL_ADDRESS.split(":")[1]
    assert f"127.0.0.1:{temporal_port}:{temporal_port}" in SERVICES["temporal"]["ports"]
    database = urlsplit(environment["DATABASE_URL"])
    assert (database.hostname, database.port, database.path) == ("postgresql", 5432, "/corpsale")
    init = (ROOT / "deploy" / "postgres-init" / "10-corpsale.sql").read_text()
    assert f"CREATE ROLE {database.username} LOGIN PASSWORD '{database.password}'" in init
    assert f"CREATE DATABASE corpsale OWNER {database.username}" in init
    metrics_port = environment["CORPSALE_METRICS_ADDRESS"].split(":")[1]
    assert f"127.0.0.1:{metrics_port}:{metrics_port}" in worker["ports"]
    assert f"EXPOSE {metrics_port}" in (ROOT / "Dockerfile").read_text()

    # Its health check asks for the task queue the worker polls.
    assert f"--task-queue {c.DEFAULT_TASK_QUEUE} " in " ".join(worker["healthcheck"]["test"])
    assert SERVICES["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == environment["TEMPORAL_ADDRESS"]


def test_the_namespace_job_creates_the_search_attributes_the_workflows_set() -> None:
    job = SERVICES["temporal-create-namespace"]
    script = (ROOT / job["command"][0].replace("/deploy", "deploy")).read_text()
    created = dict(re.findall(r"^search_attribute (\w+) (\w+)$", script, flags=re.M))
    assert created == {key.name: cli_type(key.indexed_value_type) for key in SEARCH_ATTRIBUTES}
    assert {key.indexed_value_type for key in SEARCH_ATTRIBUTES} <= set(SearchAttributeIndexedValueType)


def test_the_image_installs_every_package_and_runs_the_worker() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, f"the image lacks {package}"
    module = re.search(r'CMD \["python", "-m", "([\w.]+)"\]', dockerfile)
    assert module is not None and importlib.util.find_spec(module.group(1)) is not None
    assert SERVICES["worker"]["build"] == "."
