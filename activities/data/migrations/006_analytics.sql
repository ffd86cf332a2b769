-- Sales analytics (R17): two views the report queries with its filters (activities/analytics.py).
-- opportunity_facts: one row per opportunity, with how it ended and when its process started;
-- visit_facts: one row per stage visit, with its stage's place and how long it lasted (a visit
-- still open has no duration).

CREATE OR REPLACE VIEW opportunity_facts AS
SELECT o.id, o.owner, o.customer, o.title, o.stage, o.created_at, o.closed_at,
       s.sort_order AS stage_order, coalesce(o.probability, s.probability) AS probability,
       coalesce(s.is_final, false) AS closed,
       coalesce(s.is_final AND s.is_successful, false) AS won,
       coalesce(s.is_final AND NOT s.is_successful, false) AS lost,
       o.expected_amount, o.actual_income, o.hours_spent, o.close_reason, o.competitor,
       (SELECT min(v.entered_at) FROM stage_visits v WHERE v.opportunity_id = o.id) AS started_at
FROM opportunities o LEFT JOIN stages s ON s.name = o.stage;

CREATE OR REPLACE VIEW visit_facts AS
SELECT v.opportunity_id, v.visit_no, v.stage, s.sort_order AS stage_order, s.is_final,
       coalesce(s.is_final AND NOT s.is_successful, false) AS lost,
       v.entered_at, v.left_at,
       extract(epoch FROM v.left_at - v.entered_at)::float8 AS seconds
FROM stage_visits v JOIN stages s ON s.name = v.stage;
