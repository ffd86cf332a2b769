-- Which sales process a lead's deal runs: the first rule, in order, that the lead matches, else
-- the library's default. A rule names a lead type, a budget ceiling, or both.
ALTER TABLE leads ADD COLUMN lead_type text;

CREATE TABLE lead_process_rules (
    id           bigserial PRIMARY KEY,  -- the order the rules are tried in
    process      text NOT NULL REFERENCES sale_processes (name),
    lead_type    text,                   -- the lead's type is this (NULL: any)
    budget_under numeric(14, 2),         -- the lead's budget is below this (NULL: any)
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (lead_type IS NOT NULL OR budget_under IS NOT NULL)
);
