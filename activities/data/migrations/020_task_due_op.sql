-- A task put off (`snooze_task`) asks its workflow to move its timers: a task operation of its own.
ALTER TABLE task_ops DROP CONSTRAINT IF EXISTS task_ops_kind_check;
ALTER TABLE task_ops ADD CONSTRAINT task_ops_kind_check
    CHECK (kind IN ('start', 'finish', 'cancel', 'owner', 'due'));
