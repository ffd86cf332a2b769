-- Bulk commands: a bulk run's selection, fixed when it starts (one row per opportunity), and what
-- became of each: sent and applied (done), refused by the process (with its reason), or skipped
-- (its process had ended or was not there).

CREATE TABLE IF NOT EXISTS bulk_runs (
    id         text PRIMARY KEY,
    command    text NOT NULL,
    payload    jsonb NOT NULL,
    query      text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    total      integer NOT NULL,
    canceled_at timestamptz  -- `bulk cancel`: its pages send nothing more
);

CREATE TABLE IF NOT EXISTS bulk_items (
    bulk_id        text NOT NULL REFERENCES bulk_runs (id) ON DELETE CASCADE,
    opportunity_id text NOT NULL,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'refused', 'skipped')),
    reason         text,
    at             timestamptz,
    PRIMARY KEY (bulk_id, opportunity_id)
);

CREATE INDEX IF NOT EXISTS bulk_items_pending ON bulk_items (bulk_id, opportunity_id) WHERE status = 'pending';
