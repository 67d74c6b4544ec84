-- Every delivery attempt, successful or not, so that a failing job shows its history.
CREATE TABLE outbox_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE INDEX outbox_attempts_job ON outbox_attempts (job_id, id);

-- Small settings the server makes up once and keeps (the generated webhook signing secret).
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- What each action hook did, shown on the Slack message.
CREATE TABLE action_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    name TEXT NOT NULL,
    ok INTEGER NOT NULL,
    summary TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX action_results_request ON action_results (request_id, id);
