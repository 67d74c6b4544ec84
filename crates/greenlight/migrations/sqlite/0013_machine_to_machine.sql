-- Machine to machine (issue 13): signals machines report, digests that stand for many
-- auto-decisions, anomaly alerts that fire once per window, and jobs that collapse by key.

-- One row per signal: its value (JSON), since when it has held it, who set it, when it lapses.
CREATE TABLE signals (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    since INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    set_by TEXT NOT NULL,
    expires_at INTEGER
);

-- An auto-decision told in a digest names its digest; the digest is rendered from them.
ALTER TABLE requests ADD COLUMN digest_key TEXT;
CREATE INDEX requests_digest ON requests (digest_key, id) WHERE digest_key IS NOT NULL;
-- History in rules and alerts counts decisions by workflow and by rule over a window.
CREATE INDEX requests_workflow_decided ON requests (workflow, decided_at) WHERE status <> 'pending';
CREATE INDEX requests_decider ON requests (decided_by, decided_at) WHERE status <> 'pending';

-- One digest message per channel and window, once posted.
CREATE TABLE digests (
    key TEXT PRIMARY KEY NOT NULL,
    channel TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    slack_channel TEXT,
    slack_ts TEXT
);

-- When each alert (and each requester of a per-requester alert) last fired.
CREATE TABLE alert_state (
    key TEXT PRIMARY KEY NOT NULL,
    fired_at INTEGER NOT NULL
);

-- A job with a collapse key stands for every later one with that key while it waits: a
-- message's updates, a digest's, a Home tab's.
ALTER TABLE outbox ADD COLUMN collapse_key TEXT;
UPDATE outbox SET collapse_key = 'update:' || request_id WHERE kind = 'slack_update';
-- (Home refreshes waiting at the upgrade keep no key: at worst one extra publish.)
CREATE INDEX outbox_collapse ON outbox (collapse_key) WHERE state = 'pending';
