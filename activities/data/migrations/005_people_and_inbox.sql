-- People and their managers (escalations go to the manager of a task's owner, R20), and the
-- notification center's inbox order: a recipient's unread notifications first, newest first.

CREATE TABLE IF NOT EXISTS people (
    name       text PRIMARY KEY,
    manager    text,
    email      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (manager IS NULL OR manager <> name)
);

CREATE INDEX IF NOT EXISTS notifications_unread
    ON notifications (recipient, created_at DESC) WHERE read_at IS NULL;
