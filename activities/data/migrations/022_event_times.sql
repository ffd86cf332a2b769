-- Event data: one format for times, and times in the order of the events' numbers.
--
-- Within an opportunity, an event's time is never before the one of the event numbered before
-- it: a time the database gave (`now()`, when a step named none) can be later than the process's
-- own time of the next change, so each new event takes the later of its time and its
-- predecessor's. (A row-level BEFORE trigger sees the rows its statement inserted before, so
-- drafts confirmed together are kept in order too.)
CREATE OR REPLACE FUNCTION events_time_in_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.time := greatest(NEW.time, (SELECT time FROM events WHERE opportunity_id = NEW.opportunity_id
                                     ORDER BY sequence DESC LIMIT 1));
    RETURN NEW;
END $$;

CREATE TRIGGER events_time_in_order BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_time_in_order();

-- Times in event data written before as `2026-12-04 14:40:20.905126+00:00`: RFC 3339, as the
-- feed's own times (`2026-12-04T14:40:20.905126+00:00`).
CREATE FUNCTION pg_temp.rfc3339(body jsonb, field text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT CASE WHEN body->>field ~ '^\d{4}-\d{2}-\d{2} \d'
                THEN jsonb_set(body, ARRAY[field], to_jsonb(replace(body->>field, ' ', 'T')))
                ELSE body END
$$;
UPDATE events SET data = pg_temp.rfc3339(pg_temp.rfc3339(data, 'due_at'), 'was_due_at')
 WHERE data->>'due_at' ~ '^\d{4}-\d{2}-\d{2} \d' OR data->>'was_due_at' ~ '^\d{4}-\d{2}-\d{2} \d';
UPDATE event_drafts SET data = pg_temp.rfc3339(pg_temp.rfc3339(data, 'due_at'), 'was_due_at')
 WHERE data->>'due_at' ~ '^\d{4}-\d{2}-\d{2} \d' OR data->>'was_due_at' ~ '^\d{4}-\d{2}-\d{2} \d';
