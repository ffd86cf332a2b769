-- Business events out (an outbox): each written in the same transaction as the change it
-- reports, with an id that a retried step reproduces (so it is written once), and a number per
-- opportunity that orders its events without gaps. `position` orders the whole feed.

CREATE TABLE IF NOT EXISTS events (
    position       bigserial PRIMARY KEY,
    id             text NOT NULL UNIQUE,
    opportunity_id text NOT NULL,
    sequence       integer NOT NULL,
    type           text NOT NULL,
    time           timestamptz NOT NULL,
    data           jsonb NOT NULL,
    UNIQUE (opportunity_id, sequence)
);
