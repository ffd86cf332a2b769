-- The corporate sale schema: opportunities, the stages lookup, stage visits (the stage
-- history), tasks (never deleted) and the notification center.

CREATE TABLE IF NOT EXISTS stages (
    name          text PRIMARY KEY,
    sort_order    integer NOT NULL UNIQUE,
    is_final      boolean NOT NULL,
    is_successful boolean,
    probability   integer NOT NULL CHECK (probability BETWEEN 0 AND 100),
    CHECK (is_final OR is_successful IS NULL)
);

INSERT INTO stages (name, sort_order, is_final, is_successful, probability) VALUES
    ('Qualification', 1, false, NULL, 10),
    ('Presentation',  2, false, NULL, 30),
    ('Proposal',      3, false, NULL, 60),
    ('Contracting',   4, false, NULL, 80),
    ('Closed won',    5, true,  true, 100),
    ('Closed lost',   6, true,  false, 0)
ON CONFLICT (name) DO NOTHING;

CREATE TABLE IF NOT EXISTS opportunities (
    id              text PRIMARY KEY,
    title           text NOT NULL,
    customer        text NOT NULL,
    owner           text NOT NULL,
    stage           text REFERENCES stages (name),
    probability     integer,
    budget          numeric(14, 2) CHECK (budget >= 0),
    authority       text,
    need            text,
    timeframe       text,
    decision_maker  text,
    sales_tactics   text,
    presentation_at timestamptz,
    meeting_notes   text,
    expected_amount numeric(14, 2) CHECK (expected_amount >= 0),
    actual_income   numeric(14, 2) CHECK (actual_income >= 0),
    hours_spent     numeric(10, 2) CHECK (hours_spent >= 0),
    close_reason    text,
    competitor      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz
);
CREATE INDEX IF NOT EXISTS opportunities_owner_stage ON opportunities (owner, stage);

CREATE TABLE IF NOT EXISTS stage_visits (
    id             text PRIMARY KEY,
    opportunity_id text NOT NULL REFERENCES opportunities (id),
    visit_no       integer NOT NULL,
    stage          text NOT NULL REFERENCES stages (name),
    entered_at     timestamptz NOT NULL,
    entered_by     text NOT NULL,
    reason         text,
    left_at        timestamptz,
    UNIQUE (opportunity_id, visit_no)
);

CREATE TABLE IF NOT EXISTS tasks (
    id             text PRIMARY KEY,
    opportunity_id text NOT NULL REFERENCES opportunities (id),
    visit_id       text REFERENCES stage_visits (id),
    stage          text NOT NULL,
    task_key       text NOT NULL,
    title          text NOT NULL,
    owner          text NOT NULL,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'completed', 'canceled')),
    outcome        text,
    start_at       timestamptz NOT NULL,
    due_at         timestamptz NOT NULL,
    completed_at   timestamptz,
    completed_by   text,
    comment        text,
    canceled_at    timestamptz,
    CHECK ((status = 'completed') = (outcome IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS tasks_opportunity ON tasks (opportunity_id);
CREATE INDEX IF NOT EXISTS tasks_owner_open ON tasks (owner, due_at) WHERE status = 'open';

CREATE TABLE IF NOT EXISTS notifications (
    id             text PRIMARY KEY,
    recipient      text NOT NULL,
    opportunity_id text REFERENCES opportunities (id),
    task_id        text REFERENCES tasks (id),
    kind           text NOT NULL,
    message        text NOT NULL,
    created_at     timestamptz NOT NULL,
    read_at        timestamptz
);
CREATE INDEX IF NOT EXISTS notifications_inbox ON notifications (recipient, created_at DESC);
