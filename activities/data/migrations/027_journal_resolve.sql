-- What the journal relay does with a quiet run's answer (activities/data/journal.py `resolve`), in
-- one statement and one round trip, not seven (BEGIN, the lock, the head, the confirmation, the
-- entries after what the run holds, the notification, COMMIT): same rules as before. At rest a deal
-- is confirmed this way after each command, so this is the usual path, not the exception.
--
-- The opportunity's lock first; then, the head being the run's process, the writes the run settled
-- are confirmed, and the entries after those it holds are undone when every one of them was
-- decided before the workflow task the run answered from (a lost attempt's, or a step that gave
-- up); the head being an earlier process's (a later one has started), what it holds is confirmed.
-- `mismatch`: the journal's write at the settled number is another (left unconfirmed).
CREATE OR REPLACE FUNCTION journal_resolve(
    opportunity text, p_process text, p_writes bigint, p_chain text, p_holding bigint,
    p_run_no integer, p_history_length bigint, p_attempt_at timestamptz,
    OUT confirmed bigint, OUT undone integer, OUT mismatch boolean
) LANGUAGE plpgsql AS $$
DECLARE
    head projections%ROWTYPE;
    answered_at timestamptz := coalesce(p_attempt_at, '-infinity');
BEGIN
    confirmed := 0;
    undone := 0;
    mismatch := false;
    PERFORM pg_advisory_xact_lock(hashtext(opportunity));
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'lock opportunity % before its transaction writes anything', opportunity;
    END IF;
    SELECT * INTO head FROM projections WHERE opportunity_id = opportunity;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF head.process <> p_process THEN
        confirmed := journal_confirm(opportunity, head.number, head.chain);
    ELSE
        IF p_writes > 0 THEN
            confirmed := journal_confirm(opportunity, p_writes, p_chain);
        END IF;
        IF EXISTS (SELECT 1 FROM journal WHERE opportunity_id = opportunity AND number > p_holding)
           AND NOT EXISTS (
               SELECT 1 FROM journal WHERE opportunity_id = opportunity AND number > p_holding
                  AND (run_no, history_length, coalesce(attempt_at, '-infinity'))
                      >= (p_run_no, p_history_length, answered_at)) THEN
            undone := journal_undo(opportunity, p_holding + 1);
        END IF;
    END IF;
    IF confirmed < 0 THEN
        mismatch := true;
        confirmed := 0;
    END IF;
    PERFORM pg_notify('corpsale_events', '');  -- wakes the webhook relay at commit
END $$;
