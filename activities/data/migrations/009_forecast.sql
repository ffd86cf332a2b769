-- The forecast: when each deal is expected to close and how sure its owner is of it (its
-- forecast category), and a quota per person and period (a quarter, 2027-Q1, or a month, 2027-03).

ALTER TABLE opportunities ADD COLUMN IF NOT EXISTS expected_close_date date;
ALTER TABLE opportunities ADD COLUMN IF NOT EXISTS forecast_category text
    CHECK (forecast_category IN ('pipeline', 'best case', 'commit'));

CREATE TABLE IF NOT EXISTS quotas (
    person     text NOT NULL,
    period     text NOT NULL CHECK (period ~ '^[0-9]{4}-(Q[1-4]|(0[1-9]|1[0-2]))$'),
    amount     numeric(14, 2) NOT NULL CHECK (amount >= 0),
    set_by     text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (person, period)
);
