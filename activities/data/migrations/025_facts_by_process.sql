-- The report and the forecast by sales process: each opportunity's fact says which it runs.
CREATE OR REPLACE VIEW opportunity_facts AS
SELECT o.id, o.owner, o.customer, o.title, o.stage, o.created_at, o.closed_at,
       s.sort_order AS stage_order, coalesce(o.probability, s.probability) AS probability,
       coalesce(s.is_final, false) AS closed,
       coalesce(s.is_final AND s.is_successful, false) AS won,
       coalesce(s.is_final AND NOT s.is_successful, false) AS lost,
       o.expected_amount, o.actual_income, o.hours_spent, o.close_reason, o.competitor,
       (SELECT min(v.entered_at) FROM stage_visits v WHERE v.opportunity_id = o.id) AS started_at,
       o.process
FROM opportunities o LEFT JOIN stages s ON s.name = o.stage;
