-- Teams: work that belongs to a team rather than a person (legal approves contracts, finance
-- checks credit). A task of the definition may go to a team (`"assignee": "team:legal"`, or
-- `"approver": "team:legal"`): it is owned by `team:legal`, in every member's inbox and agenda,
-- until one member claims it, which makes it theirs; a release gives it back. Unclaimed past its
-- time, it escalates to the team's lead.
CREATE TABLE teams (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    lead       text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE team_members (
    team   text NOT NULL REFERENCES teams (name) ON DELETE CASCADE,
    person text NOT NULL,
    PRIMARY KEY (team, person)
);
CREATE INDEX team_members_person ON team_members (person);

-- The team whose queue a task is in (it stays when a member claims it: a release gives it back).
ALTER TABLE tasks ADD COLUMN team text;

-- A task opened for a team (its owner `team:NAME`) is in that team's queue for good.
CREATE OR REPLACE FUNCTION tasks_team() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.team IS NULL AND NEW.owner LIKE 'team:%' THEN
        NEW.team := substr(NEW.owner, 6);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tasks_team BEFORE INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION tasks_team();
