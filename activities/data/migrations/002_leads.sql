-- Leads, the system settings and the lead outbox (R3): when a lead enters a stage that starts
-- the sale and the setting StartOppBusinessProcess is on, a trigger writes an outbox row in the
-- same transaction as the lead; the worker's lead relay turns each row into an opportunity and
-- its process, exactly once (deterministic ids), also for rows written while no worker ran.

ALTER TABLE opportunities ADD COLUMN IF NOT EXISTS contact text;

CREATE TABLE IF NOT EXISTS lead_stages (
    name        text PRIMARY KEY,
    sort_order  integer NOT NULL UNIQUE,
    starts_sale boolean NOT NULL DEFAULT false
);

INSERT INTO lead_stages (name, sort_order, starts_sale) VALUES
    ('New',           1, false),
    ('Qualification', 2, false),
    ('Awaiting sale', 3, true),
    ('Disqualified',  4, false)
ON CONFLICT (name) DO NOTHING;

CREATE TABLE IF NOT EXISTS system_settings (
    name        text PRIMARY KEY,
    value       boolean NOT NULL,
    description text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO system_settings (name, value, description) VALUES
    ('StartOppBusinessProcess', false,
     'Start the corporate sale process when a lead reaches a stage that starts the sale')
ON CONFLICT (name) DO NOTHING;

CREATE TABLE IF NOT EXISTS leads (
    id             text PRIMARY KEY,
    title          text NOT NULL,
    customer       text NOT NULL,
    contact        text,
    owner          text NOT NULL,
    need           text,
    budget         numeric(14, 2) CHECK (budget >= 0),
    stage          text NOT NULL DEFAULT 'New' REFERENCES lead_stages (name),
    opportunity_id text REFERENCES opportunities (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS lead_outbox (
    id           bigserial PRIMARY KEY,
    lead_id      text NOT NULL REFERENCES leads (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);
CREATE INDEX IF NOT EXISTS lead_outbox_pending ON lead_outbox (id) WHERE processed_at IS NULL;

CREATE OR REPLACE FUNCTION lead_reached_sale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.opportunity_id IS NULL
       AND (TG_OP = 'INSERT' OR OLD.stage IS DISTINCT FROM NEW.stage)
       AND EXISTS (SELECT 1 FROM lead_stages WHERE name = NEW.stage AND starts_sale)
       AND EXISTS (SELECT 1 FROM system_settings WHERE name = 'StartOppBusinessProcess' AND value)
    THEN
        INSERT INTO lead_outbox (lead_id) VALUES (NEW.id);
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS lead_reached_sale ON leads;
CREATE TRIGGER lead_reached_sale AFTER INSERT OR UPDATE OF stage ON leads
    FOR EACH ROW EXECUTE FUNCTION lead_reached_sale();
