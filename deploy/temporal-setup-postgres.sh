#!/bin/sh
# One-shot job (temporalio/admin-tools): create Temporal's two databases in PostgreSQL and bring
# their schemas up to date, as temporalio/samples-server's compose/scripts/setup-postgres.sh does.
# Safe to run again on kept data: `setup-schema -v 0.0` leaves an initialised database as it is,
# and `update-schema` applies only the versions not applied yet.
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS is required}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}"  # read by temporal-sql-tool itself
PORT="${DB_PORT:-5432}"
SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

echo "waiting for PostgreSQL at $POSTGRES_SEEDS:$PORT"
nc -z -w 10 "$POSTGRES_SEEDS" "$PORT"

sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$PORT" -u "$POSTGRES_USER" "$@"
}

setup_database() {
  database=$1
  schema=$2
  # `create` may refuse a database that exists (a kept volume); a real problem (credentials, an
  # unreachable server) makes the next command fail anyway.
  sql_tool --db "$database" create || echo "database $database exists already"
  sql_tool --db "$database" setup-schema -v 0.0
  sql_tool --db "$database" update-schema -d "$SCHEMA_DIR/$schema/versioned"
}

setup_database temporal temporal
setup_database temporal_visibility visibility
echo "Temporal's PostgreSQL schemas are up to date"
