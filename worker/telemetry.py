"""The worker's telemetry, switched by environment variables:

- CORPSALE_METRICS_ADDRESS=host:port serves Prometheus metrics at http://host:port/metrics: the
  SDK's own (`temporal_*`: workflow tasks, activities, polls, cache) and the product's counters
  (`corpsale_*`, see `workflows/metrics.py`), from the same Temporal runtime.
- OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) switches on OpenTelemetry
  tracing: the SDK's TracingInterceptor makes spans for starts, signals, updates, queries, workflow
  runs and activities, and sends them over OTLP/HTTP (the standard OTEL_* variables apply:
  OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, ...).
- CORPSALE_LOG_FORMAT=json writes one JSON object a line; with either format each line about a
  process names its opportunity (`opportunity=` / `"opportunity"`), taken from the Temporal
  workflow or activity the line comes from.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
from typing import Any

from temporalio.client import Interceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from worker.config import current
from workflows import contract as c


def runtime(metrics_address: str | None) -> Runtime | None:
    """A Temporal runtime that serves Prometheus metrics at `metrics_address` (none: the SDK's
    default runtime, no metrics endpoint). Make one per process: it binds the port."""
    if not metrics_address:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=metrics_address)))


def tracing_enabled() -> bool:
    return current().otel_endpoint is not None


def tracing_problem() -> str | None:
    """Why tracing, switched on, cannot run here (its SDK is an extra), or None."""
    if not tracing_enabled():
        return None
    try:
        missing = any(
            importlib.util.find_spec(m) is None
            for m in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")
        )
    except ImportError:  # a parent package is missing
        missing = True
    if missing:
        return (
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed:"
            " `pip install 'corporate-sale[otel]'` (in the image: --build-arg EXTRAS=[otel])"
        )
    return None


def tracing_interceptors(tracer_provider: Any = None) -> list[Interceptor]:
    """The interceptors that trace the client and its workers: none unless tracing is switched
    on (or a tracer provider is handed over, as the tests do)."""
    if tracer_provider is None:
        if not tracing_enabled():
            return []
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": current().otel_service_name})
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        atexit.register(tracer_provider.shutdown)  # flush what is left
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(tracer_provider.get_tracer("corporate-sale"))]


def opportunity_of(workflow_id: str) -> str | None:
    """The opportunity a workflow id belongs to: `opportunity-X` and its tasks' `task-X:...`."""
    if workflow_id.startswith(c.WORKFLOW_ID_PREFIX):
        return workflow_id.removeprefix(c.WORKFLOW_ID_PREFIX)
    if workflow_id.startswith("task-"):
        return workflow_id.removeprefix("task-").split(":", 1)[0]
    return None


class OpportunityFilter(logging.Filter):
    """Puts `opportunity` on each record: from the Temporal context the SDK's workflow and
    activity loggers attach (`temporal_workflow`, `temporal_activity`), else from `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = getattr(record, "opportunity", None)
        for key in ("temporal_workflow", "temporal_activity"):
            context: dict[str, Any] | None = getattr(record, key, None)
            if found is None and context and "workflow_id" in context:
                found = opportunity_of(str(context["workflow_id"]))
        record.opportunity = found or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "opportunity": getattr(record, "opportunity", "-"),
            "message": record.getMessage(),
        }
        for key in ("temporal_workflow", "temporal_activity"):
            if hasattr(record, key):
                line[key.removeprefix("temporal_")] = getattr(record, key)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(OpportunityFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s opportunity=%(opportunity)s %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)
