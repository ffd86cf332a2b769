-- PostgreSQL holds only what a process's run decided (R28). A process writes through local
-- activities, which commit before the workflow task that ran them is in the run's history; if
-- that task is lost, the next attempt may decide otherwise. So each write of a process is a
-- numbered entry of its opportunity's journal, with what it changed (before-images), the events it
-- drafted and the task workflow operations it asked for. A later write that finds entries of an
-- attempt that was lost undoes them first; an entry is confirmed once its decision is known to be
-- in history, and only then do its events reach the feed and its operations the task workflows.
-- See activities/journal.py.

-- Where each opportunity's journal stands: its last write and its last confirmed one.
CREATE TABLE IF NOT EXISTS projections (
    opportunity_id  text PRIMARY KEY,
    process         text NOT NULL,   -- the process's first run id (kept across its runs)
    process_start   bigint NOT NULL, -- the number of the process's first write (its opening)
    start_run_no    integer NOT NULL, -- the number of the process's first run
    number          bigint NOT NULL, -- the last write
    chain           text NOT NULL,
    run_no          integer NOT NULL,
    history_length  bigint NOT NULL, -- with run_no, when in the run the last write was decided
    confirmed       bigint NOT NULL DEFAULT 0,
    confirmed_chain text NOT NULL DEFAULT '',
    task_queue      text NOT NULL DEFAULT '' -- whose worker's journal relay looks after it
);

-- The writes not confirmed yet (a confirmed one is deleted, its head stays in projections).
CREATE TABLE IF NOT EXISTS journal (
    opportunity_id text NOT NULL,
    number         bigint NOT NULL,
    chain          text NOT NULL,
    run_id         text NOT NULL,
    run_no         integer NOT NULL,
    history_length bigint NOT NULL,
    step           text NOT NULL,
    task_queue     text NOT NULL DEFAULT '',
    written_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (opportunity_id, number)
);
CREATE INDEX IF NOT EXISTS journal_waiting ON journal (task_queue, written_at);

-- What an entry changed, row by row: NULL for a row it inserted, else the row as it was.
CREATE TABLE IF NOT EXISTS journal_undo (
    seq            bigserial PRIMARY KEY,
    opportunity_id text NOT NULL,
    number         bigint NOT NULL,
    tbl            text NOT NULL,
    id             text NOT NULL,
    before         jsonb
);
CREATE INDEX IF NOT EXISTS journal_undo_entry ON journal_undo (opportunity_id, number);

-- Events an entry drafted: they reach `events` (the feed) once it is confirmed.
CREATE TABLE IF NOT EXISTS event_drafts (
    opportunity_id text NOT NULL,
    number         bigint NOT NULL,
    ordinal        bigserial,
    id             text NOT NULL UNIQUE,
    type           text NOT NULL,
    time           timestamptz NOT NULL,
    data           jsonb NOT NULL,
    PRIMARY KEY (opportunity_id, number, ordinal)
);

-- What an entry asks of the task workflows (start, finish, cancel, a new owner): ready once it
-- is confirmed, carried out by the worker's journal relay, then deleted.
CREATE TABLE IF NOT EXISTS task_ops (
    opportunity_id text NOT NULL,
    number         bigint NOT NULL,
    ordinal        bigserial,
    kind           text NOT NULL CHECK (kind IN ('start', 'finish', 'cancel', 'owner')),
    task_id        text NOT NULL,
    args           jsonb NOT NULL DEFAULT '{}',
    ready          boolean NOT NULL DEFAULT false,
    claimed_until  timestamptz,
    PRIMARY KEY (opportunity_id, number, ordinal)
);
CREATE INDEX IF NOT EXISTS task_ops_ready ON task_ops (opportunity_id) WHERE ready;

-- A journaled write sets corpsale.journal_opportunity and corpsale.journal_number for its
-- transaction; these triggers then keep each row's before-image.
CREATE OR REPLACE FUNCTION journal_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    opportunity text := current_setting('corpsale.journal_opportunity', true);
BEGIN
    IF opportunity IS NULL OR opportunity = '' THEN
        RETURN NULL;
    END IF;
    INSERT INTO journal_undo (opportunity_id, number, tbl, id, before)
    VALUES (
        opportunity,
        current_setting('corpsale.journal_number')::bigint,
        TG_TABLE_NAME,
        CASE WHEN TG_OP = 'INSERT' THEN NEW.id ELSE OLD.id END,
        CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END
    );
    RETURN NULL;
END $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['opportunities', 'stage_visits', 'tasks', 'notifications', 'orders'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS journal_capture ON %I', t);
        EXECUTE format(
            'CREATE TRIGGER journal_capture AFTER INSERT OR UPDATE OR DELETE ON %I'
            ' FOR EACH ROW EXECUTE FUNCTION journal_capture()', t);
    END LOOP;
END $$;

-- Undo an opportunity's entries from `from_number` on, the last change first: each row back as it
-- was (a row an entry inserted is deleted), and their drafts and operations dropped.
CREATE OR REPLACE FUNCTION journal_undo_from(opportunity text, from_number bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    u record;
    cols text;
    sets text;
    undone integer := 0;
BEGIN
    PERFORM set_config('corpsale.journal_opportunity', '', true);  -- the undo itself is not captured
    FOR u IN
        SELECT * FROM journal_undo WHERE opportunity_id = opportunity AND number >= from_number
        ORDER BY seq DESC
    LOOP
        IF u.before IS NULL THEN
            EXECUTE format('DELETE FROM %I WHERE id = $1', u.tbl) USING u.id;
        ELSE
            SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum),
                   string_agg('EXCLUDED.' || quote_ident(attname), ', ' ORDER BY attnum)
              INTO cols, sets
              FROM pg_attribute
             WHERE attrelid = u.tbl::regclass AND attnum > 0 AND NOT attisdropped;
            EXECUTE format(
                'INSERT INTO %I SELECT * FROM jsonb_populate_record(NULL::%I, $1)'
                ' ON CONFLICT (id) DO UPDATE SET (%s) = ROW(%s)', u.tbl, u.tbl, cols, sets)
            USING u.before;
        END IF;
        undone := undone + 1;
    END LOOP;
    DELETE FROM journal_undo WHERE opportunity_id = opportunity AND number >= from_number;
    DELETE FROM event_drafts WHERE opportunity_id = opportunity AND number >= from_number;
    DELETE FROM task_ops WHERE opportunity_id = opportunity AND number >= from_number;
    DELETE FROM journal WHERE opportunity_id = opportunity AND number >= from_number;
    RETURN undone;
END $$;

-- One place writes an event: into the feed at once, or as a draft of the journaled write under way.
CREATE OR REPLACE FUNCTION emit_event(
    event_id text, opportunity text, kind text, at timestamptz, body jsonb
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    drafting text := current_setting('corpsale.journal_opportunity', true);
BEGIN
    IF drafting IS NOT NULL AND drafting <> '' THEN
        INSERT INTO event_drafts (opportunity_id, number, id, type, time, data)
        VALUES (opportunity, current_setting('corpsale.journal_number')::bigint, event_id, kind,
                coalesce(at, now()), body)
        ON CONFLICT (id) DO NOTHING;
    ELSE
        INSERT INTO events (id, opportunity_id, sequence, type, time, data)
        SELECT event_id, opportunity, coalesce(max(sequence), 0) + 1, kind, coalesce(at, now()), body
          FROM events WHERE opportunity_id = opportunity
        ON CONFLICT (id) DO NOTHING;
    END IF;
END $$;
