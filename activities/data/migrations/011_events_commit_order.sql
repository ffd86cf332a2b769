-- The feed reads events in the order their transactions committed, so a reader never passes an
-- event that commits later with a smaller position: `tx` is the writing transaction, and a reader
-- takes only events of transactions older than every one still running (pg_snapshot_xmin).
-- Events of one opportunity take its lock before their transaction writes anything, so their
-- transactions, too, are in their numbers' order.

ALTER TABLE events ADD COLUMN IF NOT EXISTS tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS events_commit_order ON events (tx, position);
