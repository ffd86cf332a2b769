-- The requests a process applied (R23): a retry is known however many commands came between, not
-- only while the run still holds it in its ledger (the last 2,000). Written with the command's
-- first write, in its journaled transaction (so a lost attempt's are undone with it).
CREATE TABLE IF NOT EXISTS requests (
    id             text PRIMARY KEY,  -- <opportunity id> <request id>
    opportunity_id text NOT NULL,
    request_id     text NOT NULL,
    fingerprint    text NOT NULL,
    applied_at     timestamptz NOT NULL DEFAULT now()
);

DROP TRIGGER IF EXISTS journal_capture ON requests;
CREATE TRIGGER journal_capture AFTER INSERT OR UPDATE OR DELETE ON requests
    FOR EACH ROW EXECUTE FUNCTION journal_capture();
