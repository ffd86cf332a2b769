-- Which key the workers of each task queue encrypt the processes' data with (NULL: none), as
-- the last worker to start there announced it: the CLI checks its own against it before it sends
-- anything, so a shell without the key never writes a command in the clear, nor one the
-- workers cannot read.
CREATE TABLE worker_keys (
    task_queue   text PRIMARY KEY,
    key_id       text,
    announced_at timestamptz NOT NULL DEFAULT now()
);
