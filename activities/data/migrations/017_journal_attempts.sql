-- Two attempts of one workflow task can see the same history length (a retried or a speculative
-- task): when the attempt that decided a write began tells them apart (activities/journal.py).
ALTER TABLE projections ADD COLUMN IF NOT EXISTS attempt_at timestamptz;
ALTER TABLE journal ADD COLUMN IF NOT EXISTS attempt_at timestamptz;

-- A process's opening keeps what it read (its step's result): run again, it answers the same.
ALTER TABLE journal ADD COLUMN IF NOT EXISTS result jsonb;
