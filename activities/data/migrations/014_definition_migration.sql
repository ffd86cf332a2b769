-- A visit whose process moved onto another definition version keeps the version it started with
-- in `migrated_from` and when it moved in `migrated_at`; `definition_version` is the one it
-- follows now.

ALTER TABLE stage_visits ADD COLUMN IF NOT EXISTS migrated_from integer;
ALTER TABLE stage_visits ADD COLUMN IF NOT EXISTS migrated_at timestamptz;
