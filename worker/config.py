"""Settings from the environment, with defaults that run the embedded stack.

The Temporal connection follows the Temporal CLI's own variables (TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*), read by the SDK's envconfig.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Client, Interceptor
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from worker.codec import data_converter, key_id, parse_key
from workflows import signing
from workflows.contract import DEFAULT_TASK_QUEUE

DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"


class Settings(BaseSettings):
    # hide_input_in_errors: a malformed encryption key is not printed with the error.
    model_config = SettingsConfigDict(env_prefix="CORPSALE_", extra="ignore", hide_input_in_errors=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "CORPSALE_DATABASE_URL"),
        description="PostgreSQL for the business data; unset: the embedded server in data_dir.",
    )
    data_dir: Path = Field(default=Path(".corpsale"), description="Embedded stack's data.")
    temporal_port: int = 7233  # the embedded dev server's frontend (gRPC)
    ui_port: int = 8233  # the embedded dev server's Web UI
    task_queue: str = DEFAULT_TASK_QUEUE
    db_pool_size: int = Field(default=10, ge=1)
    max_cached_workflows: int = Field(default=2_000, ge=0)
    max_concurrent_activities: int = Field(default=100, ge=1)
    workflow_sandbox: bool = Field(
        default=False,
        description="Run the workflows in the SDK's sandbox, which refuses non-deterministic calls."
        " The test suite runs with it; production without (it costs about a fifth of the"
        " throughput, docs/benchmarks.md).",
    )
    lead_relay: bool = Field(default=True, description="Start processes for leads that reach the sale (R3).")
    lead_relay_interval: float = Field(default=1.0, gt=0, description="Seconds between lead outbox passes.")
    webhook_relay: bool = Field(default=True, description="Post business events to webhook subscribers.")
    webhook_timeout: float = Field(default=10.0, gt=0, description="Seconds a subscriber has to answer.")
    webhook_attempts: int = Field(
        default=20, ge=1, description="Attempts at an event before its subscriber stops."
    )
    webhook_backoff: float = Field(
        default=2.0, gt=0, description="Seconds before a first retry, doubled each time."
    )
    webhook_backoff_cap: float = Field(default=3600.0, gt=0, description="Longest wait between two attempts.")
    journal_confirm_after: float = Field(
        default=1.0,
        gt=0,
        description="Seconds a process's write waits for its run's next one before its run is asked"
        " whether it settled it (then its events go out and its task workflows hear of it).",
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        description="Encrypt workflow payloads with this key (base64, 32 bytes); see worker/codec.py.",
    )
    codec_port: int = Field(default=8081, description="The embedded stack's codec endpoint, with a key.")
    metrics_address: str | None = Field(
        default=None, description="Serve Prometheus metrics here (host:port), e.g. 0.0.0.0:9464."
    )
    log_format: Literal["text", "json"] = Field(default="text", description="json: one JSON object a line.")
    temporal_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TEMPORAL_ADDRESS"),
        description="The Temporal frontend, as the SDK reads it; unset: localhost:7233 (the embedded one).",
    )
    command_timeout: float = Field(default=30.0, gt=0, description="Seconds the CLI waits for a process.")
    actor: str | None = Field(default=None, description="Whom the CLI's commands are from; unset: you.")
    service_key: SecretStr | None = Field(
        default=None, description="SERVICE:SECRET: the CLI and SaleClient.connect sign every command with it."
    )
    otel_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        description="Trace the worker to this OTLP (HTTP) endpoint; the other OTEL_* variables apply.",
    )
    otel_service_name: str = Field(
        default="corporate-sale", validation_alias=AliasChoices("OTEL_SERVICE_NAME")
    )

    @field_validator(
        "encryption_key", "metrics_address", "temporal_address", "actor", "service_key", "otel_endpoint",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("service_key")
    @classmethod
    def _service_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            signing.parse_key(value.get_secret_value())  # ValueError: says what is wrong
        return value

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or DEFAULT_TEMPORAL_ADDRESS

    def signing_key(self) -> tuple[str, str] | None:
        """(service, secret) of CORPSALE_SERVICE_KEY, if set."""
        return signing.parse_key(self.service_key.get_secret_value()) if self.service_key else None

    @field_validator("encryption_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_key(value.get_secret_value())
        return value

    def converter(self) -> DataConverter:
        return data_converter(self.encryption_key.get_secret_value() if self.encryption_key else None)

    def key_id(self) -> str | None:
        """The id of the key payloads are encrypted with (what each payload names), if one is set."""
        return key_id(parse_key(self.encryption_key.get_secret_value())) if self.encryption_key else None


@functools.cache
def current() -> Settings:
    """The settings of this process, read from the environment once (ValidationError: what is
    wrong with which variable, `invalid()` says it in one line)."""
    return Settings()


def invalid(err: ValidationError) -> str:
    """One line naming each environment variable that is wrong and why."""

    def variable(loc: tuple[int | str, ...]) -> str:
        name = str(loc[0]) if loc else "?"
        field = Settings.model_fields.get(name)
        alias = field.validation_alias if field is not None else None
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        return f"CORPSALE_{name.upper()}"

    return "; ".join(f"{variable(e['loc'])}: {e['msg']}" for e in err.errors())


async def connect_temporal(
    target_host: str | None = None,
    *,
    runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    """A client as the product's processes use it: the Temporal CLI's environment variables, the
    product's data converter (encrypting with CORPSALE_ENCRYPTION_KEY), `target_host` if given, and
    `runtime` (the worker's, with its metrics) and `interceptors` (its tracing) if given."""
    config = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", DEFAULT_TEMPORAL_ADDRESS)
    if target_host is not None:
        config["target_host"] = target_host
    if runtime is not None:
        config["runtime"] = runtime
    if interceptors:
        config["interceptors"] = list(interceptors)
    return await Client.connect(**config, data_converter=current().converter())  # type: ignore[arg-type]
