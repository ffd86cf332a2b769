-- The process library (R16): every published version of the process definition, kept for good.
-- A run takes the latest version when it starts and keeps it to its end; each stage visit
-- records the version its run follows. The bundled definition is published as the first
-- version when the library is empty (activities/definitions.py, right after the migrations).

CREATE TABLE IF NOT EXISTS process_definitions (
    version      integer PRIMARY KEY CHECK (version >= 1),
    name         text NOT NULL,
    definition   jsonb NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    published_by text NOT NULL
);

ALTER TABLE stage_visits ADD COLUMN IF NOT EXISTS definition_version integer;
