-- Webhook subscribers and their deliveries. The relay fans the event feed out to each subscriber
-- (`read_tx`, `read_position`: how far, in the feed's commit order) into one delivery per event
-- it wants, then posts each in order per opportunity. A delivery being posted has a `claim` and
-- is not due again until its lease (`next_at`) runs out; one that fails waits its backoff there.
-- After the last attempt it is `dead`, and its subscriber `stopped` until `webhooks retry`.

CREATE TABLE IF NOT EXISTS webhooks (
    id            bigserial PRIMARY KEY,
    url           text NOT NULL UNIQUE,
    events        text[] NOT NULL,
    secret        text NOT NULL,
    paused        boolean NOT NULL DEFAULT false,
    stopped       text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    read_tx       xid8 NOT NULL,
    read_position bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS deliveries (
    webhook_id     bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    position       bigint NOT NULL REFERENCES events (position),
    opportunity_id text NOT NULL,
    sequence       integer NOT NULL,
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts       integer NOT NULL DEFAULT 0,
    next_at        timestamptz NOT NULL DEFAULT now(),
    claim          uuid,
    last_error     text,
    delivered_at   timestamptz,
    PRIMARY KEY (webhook_id, position)
);

CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (webhook_id, next_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_in_line ON deliveries (webhook_id, opportunity_id, sequence)
    WHERE state <> 'delivered';
