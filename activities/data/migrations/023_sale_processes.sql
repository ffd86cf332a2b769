-- Several sales processes side by side: the process library holds named processes, each with
-- versions of its own (numbered per process); a deal runs one of them. Everything from before
-- is the corporate sale's, version numbers unchanged.
CREATE TABLE sale_processes (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    is_default boolean NOT NULL DEFAULT false,  -- a start that names no process runs this one
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX sale_processes_one_default ON sale_processes (is_default) WHERE is_default;
INSERT INTO sale_processes (name, is_default) VALUES ('corporate-sale', true);

ALTER TABLE process_definitions
    ADD COLUMN process text NOT NULL DEFAULT 'corporate-sale' REFERENCES sale_processes (name);
ALTER TABLE process_definitions ALTER COLUMN process DROP DEFAULT;
ALTER TABLE process_definitions DROP CONSTRAINT process_definitions_pkey;
ALTER TABLE process_definitions ADD PRIMARY KEY (process, version);

-- The process a deal runs (its last one's, once ended), and the one each stage visit followed.
ALTER TABLE opportunities ADD COLUMN process text NOT NULL DEFAULT 'corporate-sale';
ALTER TABLE stage_visits ADD COLUMN process text NOT NULL DEFAULT 'corporate-sale';

-- Every business event says which process made it: the deal's when it is written.
ALTER TABLE events ADD COLUMN process text NOT NULL DEFAULT 'corporate-sale';
CREATE OR REPLACE FUNCTION events_process() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.process := coalesce((SELECT process FROM opportunities WHERE id = NEW.opportunity_id), NEW.process);
    RETURN NEW;
END $$;
CREATE TRIGGER events_process BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION events_process();
