-- Requests: one row each; decisions are kept as a JSON array beside the state they produced,
-- so that a compare-and-set on `version` writes a vote and its outcome atomically.
CREATE TABLE requests (
    id TEXT PRIMARY KEY NOT NULL,
    workflow TEXT NOT NULL,
    title TEXT NOT NULL,
    details TEXT,
    params TEXT NOT NULL,
    requester TEXT,
    status TEXT NOT NULL,
    decisions TEXT NOT NULL DEFAULT '[]',
    decided_by TEXT,
    reason TEXT,
    created_at INTEGER NOT NULL,
    decided_at INTEGER,
    expires_at INTEGER,
    channel TEXT NOT NULL,
    slack_channel TEXT,
    slack_ts TEXT,
    callback_url TEXT,
    api_key_id TEXT,
    idempotency_key TEXT,
    idempotency_fingerprint TEXT,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX requests_idempotency ON requests (api_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX requests_status ON requests (status, id);
CREATE INDEX requests_workflow ON requests (workflow, id);
CREATE INDEX requests_expiry ON requests (expires_at) WHERE status = 'pending';

-- Append-only history of every state change.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    request_id TEXT,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_request ON audit (request_id, id);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit is append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit is append-only');
END;

-- Side effects, written in the same transaction as the change that causes them.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    leased_until INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_request ON outbox (request_id, kind);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
