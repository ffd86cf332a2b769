-- Closing (R9, R13): the close-reason lookup for lost-type stages, the order draft a won
-- opportunity creates, and the kind of each task (the process's, an operator's ad-hoc one, or a
-- follow-up of a won deal, which stays open after the process has ended).

CREATE TABLE IF NOT EXISTS close_reasons (
    name       text PRIMARY KEY,
    sort_order integer NOT NULL,
    active     boolean NOT NULL DEFAULT true
);

INSERT INTO close_reasons (name, sort_order) VALUES
    ('Price too high',          1),
    ('Lost to a competitor',    2),
    ('No budget',               3),
    ('No decision',             4),
    ('Requirements not met',    5),
    ('Postponed by customer',   6),
    ('Customer unresponsive',   7),
    ('Proposal rejected',       8),
    ('Contract declined',       9),
    ('Other',                  10)
ON CONFLICT (name) DO NOTHING;

CREATE TABLE IF NOT EXISTS orders (
    id             text PRIMARY KEY,
    opportunity_id text NOT NULL UNIQUE REFERENCES opportunities (id),
    customer       text NOT NULL,
    title          text NOT NULL,
    amount         numeric(14, 2) CHECK (amount >= 0),
    status         text NOT NULL DEFAULT 'draft',
    created_at     timestamptz NOT NULL
);

ALTER TABLE tasks ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'process';
UPDATE tasks SET kind = 'adhoc' WHERE task_key = 'adhoc' AND kind <> 'adhoc';
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_kind_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_kind_check CHECK (kind IN ('process', 'adhoc', 'follow-up'));
