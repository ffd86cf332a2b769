# The worker: `docker compose up --build` runs it beside Temporal and PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY workflows ./workflows
COPY activities ./activities
COPY worker ./worker
COPY starter ./starter
# The worker and the CLI only (no embedded Temporal or PostgreSQL, no charts); for tracing:
# `docker compose build --build-arg EXTRAS=[otel]`.
ARG EXTRAS=""
RUN pip install ".${EXTRAS}" && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /app --create-home corpsale
USER corpsale
WORKDIR /app

# TEMPORAL_ADDRESS and DATABASE_URL come from the environment (see docker-compose.yml);
# with CORPSALE_METRICS_ADDRESS=0.0.0.0:9464 it serves Prometheus metrics on this port.
EXPOSE 9464
CMD ["python", "-m", "worker.main"]
