-- Who may do what (R24): a role per person (admins may do anything), the keys of the services
-- that sign commands, and the setting that refuses unsigned commands.

ALTER TABLE people ADD COLUMN IF NOT EXISTS role text NOT NULL DEFAULT 'member'
    CHECK (role IN ('member', 'admin'));

CREATE TABLE IF NOT EXISTS service_keys (
    service    text PRIMARY KEY,
    secret     text NOT NULL,
    person     text,  -- a key of one person: it signs only as them (as anyone, if they are an admin)
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

INSERT INTO system_settings (name, value, description) VALUES
    ('RequireSignedCommands', false,
     'Refuse commands that do not carry a signature of a registered service key')
ON CONFLICT (name) DO NOTHING;
