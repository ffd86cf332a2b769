-- A journaled write in four round trips, not twenty (activities/journal.py): the fence's checks,
-- the confirmation of what the run settled and the capture setting in `journal_begin`; the
-- request, the entry and the head in `journal_record`. Same rules as before, in the database.

-- When a task operation became ready: the journal relay serves the opportunities that have waited
-- longest first.
ALTER TABLE task_ops ADD COLUMN IF NOT EXISTS ready_at timestamptz;
CREATE INDEX IF NOT EXISTS task_ops_ready_at ON task_ops (ready_at) WHERE ready;

-- When a write was decided compares as the row (run, history length, when the attempt began).

-- Entries up to `upto` are decided for good (when the entry there has `upto_chain`): their events
-- go to the feed, numbered on, their task operations become ready, their undo is dropped.
-- Returns how many were confirmed; -1 when the entry at `upto` is another (left unconfirmed).
CREATE OR REPLACE FUNCTION journal_confirm(opportunity text, upto bigint, upto_chain text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    was bigint;
    at_chain text;
    readied integer;
BEGIN
    SELECT confirmed INTO was FROM projections WHERE opportunity_id = opportunity;
    IF was IS NULL OR upto <= was THEN
        RETURN 0;
    END IF;
    SELECT chain INTO at_chain FROM journal WHERE opportunity_id = opportunity AND number = upto;
    IF at_chain IS DISTINCT FROM upto_chain THEN
        RETURN -1;
    END IF;
    INSERT INTO events (id, opportunity_id, sequence, type, time, data)
    SELECT d.id, d.opportunity_id,
           (SELECT coalesce(max(sequence), 0) FROM events WHERE opportunity_id = opportunity)
             + row_number() OVER (ORDER BY d.number, d.ordinal),
           d.type, d.time, d.data
      FROM event_drafts d
     WHERE d.opportunity_id = opportunity AND d.number <= upto
       AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = d.id)
     ORDER BY d.number, d.ordinal;
    DELETE FROM event_drafts WHERE opportunity_id = opportunity AND number <= upto;
    UPDATE task_ops SET ready = true, ready_at = clock_timestamp()
     WHERE opportunity_id = opportunity AND number <= upto AND NOT ready;
    GET DIAGNOSTICS readied = ROW_COUNT;
    IF readied > 0 THEN
        PERFORM pg_notify('corpsale_task_ops', '');
    END IF;
    DELETE FROM journal_undo WHERE opportunity_id = opportunity AND number <= upto;
    DELETE FROM journal WHERE opportunity_id = opportunity AND number <= upto;
    UPDATE projections SET confirmed = upto, confirmed_chain = upto_chain WHERE opportunity_id = opportunity;
    RETURN upto - was;
END $$;

-- Undo the opportunity's unconfirmed entries from `from_number` on; the head goes back to the
-- entry before. Returns how many changes were undone.
CREATE OR REPLACE FUNCTION journal_undo(opportunity text, from_number bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    undone integer := journal_undo_from(opportunity, from_number);
    last record;
BEGIN
    SELECT number, chain INTO last FROM journal WHERE opportunity_id = opportunity
     ORDER BY number DESC LIMIT 1;
    IF FOUND THEN
        UPDATE projections SET number = last.number, chain = last.chain WHERE opportunity_id = opportunity;
    ELSE
        UPDATE projections SET number = confirmed, chain = confirmed_chain WHERE opportunity_id = opportunity;
    END IF;
    RETURN undone;
END $$;

-- The start of a journaled write, first in its transaction: the opportunity's lock, then the
-- fence's checks. `outcome` is
--   'apply'      go on: anything a lost attempt left from this number on is undone, what the run
--                settled is confirmed, and from here on changed rows are captured;
--   'written'    this very write is in the journal already (a retry): change nothing;
--   'superseded' what is left of a lost attempt (`detail` says why): refuse it;
--   'applied'    the command's request was applied before (`detail`: its fingerprint).
-- `undone`: how many changes of a lost attempt it undid; `notes`: what the worker logs as errors (a
-- gap in the journal, a write that follows another than the run's, a settled write not there).
CREATE OR REPLACE FUNCTION journal_begin(
    opportunity text, p_process text, p_number bigint, p_chain text, p_prev_chain text,
    p_run_id text, p_run_no integer, p_history_length bigint, p_attempt_at timestamptz,
    p_durable bigint, p_durable_chain text, p_request text,
    OUT outcome text, OUT detail text, OUT headless boolean, OUT undone integer, OUT notes text[]
) LANGUAGE plpgsql AS $$
DECLARE
    head projections%ROWTYPE;
    p_at timestamptz := coalesce(p_attempt_at, '-infinity');
    at_chain text;
    before record;
    confirmed bigint;
BEGIN
    notes := '{}';
    undone := 0;
    PERFORM pg_advisory_xact_lock(hashtext(opportunity));
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'lock opportunity % before its transaction writes anything', opportunity;
    END IF;
    SELECT * INTO head FROM projections WHERE opportunity_id = opportunity;
    headless := NOT FOUND;
    IF NOT headless THEN
        IF head.process <> p_process THEN
            outcome := 'superseded';
            detail := format('%s: process %s has been followed by another', opportunity, p_process);
            RETURN;
        END IF;
        -- this very write, already there (a retry of its step)?
        IF p_number <= head.confirmed THEN
            IF p_number = head.confirmed AND head.confirmed_chain = p_chain THEN
                outcome := 'written';
                RETURN;
            END IF;
            outcome := 'superseded';
            detail := format('%s: write %s is confirmed as another already', opportunity, p_number);
            RETURN;
        END IF;
        SELECT chain INTO at_chain FROM journal WHERE opportunity_id = opportunity AND number = p_number;
        IF at_chain = p_chain THEN
            -- decided again by a later attempt: the entry is now that attempt's
            UPDATE journal SET run_id = p_run_id, run_no = p_run_no, history_length = p_history_length,
                               attempt_at = p_attempt_at
             WHERE opportunity_id = opportunity AND number = p_number
               AND (run_no, history_length, coalesce(attempt_at, '-infinity'))
                   < (p_run_no, p_history_length, p_at);
            outcome := 'written';
            RETURN;
        END IF;
    END IF;
    -- an entry from this number on decided after this write: this is what is left of a lost attempt
    IF EXISTS (SELECT 1 FROM journal WHERE opportunity_id = opportunity AND number >= p_number
                AND (run_no, history_length, coalesce(attempt_at, '-infinity'))
                    > (p_run_no, p_history_length, p_at)) THEN
        outcome := 'superseded';
        detail := format('%s: write %s was decided before those there', opportunity, p_number);
        RETURN;
    END IF;
    IF NOT headless THEN
        -- the write before this one another, decided after it: a later attempt replaced this one's
        SELECT chain, run_no, history_length, coalesce(attempt_at, '-infinity') AS at INTO before
          FROM journal WHERE opportunity_id = opportunity AND number = p_number - 1;
        IF FOUND AND before.chain <> p_prev_chain THEN
            IF (before.run_no, before.history_length, before.at) > (p_run_no, p_history_length, p_at) THEN
                outcome := 'superseded';
                detail := format('%s: write %s was decided before those there', opportunity, p_number);
                RETURN;
            END IF;
            notes := notes || format('write %s follows another write %s than the run''s (%s, not %s)',
                                     p_number, p_number - 1, before.chain, p_prev_chain);
        END IF;
        IF head.number >= p_number THEN
            undone := journal_undo(opportunity, p_number);
        ELSIF head.number < p_number - 1 THEN
            notes := notes || format('write %s finds the journal at %s', p_number, head.number);
        END IF;
    END IF;
    confirmed := journal_confirm(opportunity, p_durable, p_durable_chain);
    IF confirmed < 0 THEN
        notes := notes || format('the journal''s write %s is not the one the run settled (%s); left unconfirmed',
                                 p_durable, p_durable_chain);
    END IF;
    IF p_request IS NOT NULL THEN
        SELECT fingerprint INTO detail FROM requests WHERE id = opportunity || ' ' || p_request;
        IF FOUND THEN
            outcome := 'applied';
            RETURN;
        END IF;
    END IF;
    PERFORM set_config('corpsale.journal_opportunity', opportunity, true),
            set_config('corpsale.journal_number', p_number::text, true);
    outcome := 'apply';
END $$;

-- The end of a journaled write: the command's request (captured, so an undo takes it back), then
-- the entry and the opportunity's head moved to it. `start_number` for a process's opening (the
-- head is the new process's); a head made only when there is none otherwise (`headless`: a run
-- that continued one from before the journal).
CREATE OR REPLACE FUNCTION journal_record(
    opportunity text, p_process text, p_number bigint, p_chain text, p_run_id text, p_run_no integer,
    p_history_length bigint, p_attempt_at timestamptz, p_step text, p_task_queue text,
    p_request text, p_fingerprint text, start_number bigint, start_run_no integer, headless boolean
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_request IS NOT NULL THEN
        INSERT INTO requests (id, opportunity_id, request_id, fingerprint)
        VALUES (opportunity || ' ' || p_request, opportunity, p_request, p_fingerprint);
    END IF;
    PERFORM set_config('corpsale.journal_opportunity', '', true);
    INSERT INTO journal (opportunity_id, number, chain, run_id, run_no, history_length, step, task_queue,
                         attempt_at)
    VALUES (opportunity, p_number, p_chain, p_run_id, p_run_no, p_history_length, p_step, p_task_queue,
            p_attempt_at);
    IF start_number IS NOT NULL THEN
        INSERT INTO projections (opportunity_id, process, process_start, start_run_no, number, chain,
                                 run_no, history_length)
        VALUES (opportunity, p_process, start_number, start_run_no, start_number, p_chain, start_run_no,
                p_history_length)
        ON CONFLICT (opportunity_id) DO UPDATE SET process = EXCLUDED.process,
            process_start = EXCLUDED.process_start, start_run_no = EXCLUDED.start_run_no,
            number = EXCLUDED.number, chain = EXCLUDED.chain, run_no = EXCLUDED.run_no,
            history_length = EXCLUDED.history_length;
    ELSIF headless THEN
        INSERT INTO projections (opportunity_id, process, process_start, start_run_no, number, chain,
                                 run_no, history_length)
        VALUES (opportunity, p_process, p_number, p_run_no, p_number, p_chain, p_run_no, p_history_length)
        ON CONFLICT (opportunity_id) DO NOTHING;
    END IF;
    UPDATE projections SET number = p_number, chain = p_chain, run_no = p_run_no,
                           history_length = p_history_length, task_queue = p_task_queue,
                           attempt_at = p_attempt_at
     WHERE opportunity_id = opportunity;
    PERFORM pg_notify('corpsale_events', '');  -- wakes the webhook relay at commit
END $$;
