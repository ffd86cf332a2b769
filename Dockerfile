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
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /app --create-home corpsale
USER corpsale
WORKDIR /app

# TEMPORAL_ADDRESS and DATABASE_URL come from the environment (see docker-compose.yml).
CMD ["python", "-m", "worker.main"]
