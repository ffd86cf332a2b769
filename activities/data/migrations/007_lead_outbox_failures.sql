-- A lead that cannot become an opportunity (its data breaks a rule of the process) is set aside
-- with the reason, instead of holding up the leads behind it; `corpsale lead retry` takes it up
-- again once the lead is corrected, and `corpsale check` reports it meanwhile.

ALTER TABLE lead_outbox ADD COLUMN IF NOT EXISTS failed_at timestamptz;
ALTER TABLE lead_outbox ADD COLUMN IF NOT EXISTS last_error text;
DROP INDEX IF EXISTS lead_outbox_pending;
CREATE INDEX IF NOT EXISTS lead_outbox_pending ON lead_outbox (id)
    WHERE processed_at IS NULL AND failed_at IS NULL;
