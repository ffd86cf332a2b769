"""Settings from the environment, with defaults that run the embedded stack.

The Temporal connection follows the Temporal CLI's own variables (TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*), read by the SDK's envconfig.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig

from workflows.contract import DEFAULT_TASK_QUEUE

DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORPSALE_", extra="ignore")

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
    lead_relay: bool = Field(default=True, description="Start processes for leads that reach the sale (R3).")
    lead_relay_interval: float = Field(default=1.0, gt=0, description="Seconds between lead outbox passes.")


async def connect_temporal(**overrides: object) -> Client:
    config = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", DEFAULT_TEMPORAL_ADDRESS)
    config.update(overrides)
    return await Client.connect(**config, data_converter=pydantic_data_converter)  # type: ignore[arg-type]
