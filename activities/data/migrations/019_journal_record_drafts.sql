-- A journaled write's events and task operations come with its entry (activities/drafts.py), as
-- two JSON arrays, not a statement each: one round trip for all of them. Same rows as
-- `emit_event` and `task_ops.stage_ops` wrote one by one, in the order the step drafted them.
-- The fifteen-argument `journal_record` stays for a worker of the release before (a rolling
-- deploy): it drafted them itself.

CREATE OR REPLACE FUNCTION journal_record(
    opportunity text, p_process text, p_number bigint, p_chain text, p_run_id text, p_run_no integer,
    p_history_length bigint, p_attempt_at timestamptz, p_step text, p_task_queue text,
    p_request text, p_fingerprint text, start_number bigint, start_run_no integer, headless boolean,
    p_events jsonb, p_ops jsonb
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_drafts (opportunity_id, number, id, type, time, data)
    SELECT opportunity, p_number, e.value->>'id', e.value->>'type',
           coalesce((e.value->>'time')::timestamptz, now()), e.value->'data'
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS e(value, i)
     ORDER BY e.i
    ON CONFLICT (id) DO NOTHING;
    INSERT INTO task_ops (opportunity_id, number, kind, task_id, args)
    SELECT opportunity, p_number, o.value->>'kind', o.value->>'task_id', o.value->'args'
      FROM jsonb_array_elements(p_ops) WITH ORDINALITY AS o(value, i)
     ORDER BY o.i;
    PERFORM journal_record(opportunity, p_process, p_number, p_chain, p_run_id, p_run_no,
                           p_history_length, p_attempt_at, p_step, p_task_queue, p_request,
                           p_fingerprint, start_number, start_run_no, headless);
END $$;
