-- Several replicas (issue 9): who holds each outbox lease, which replica looks after a due
-- request's timers for now, and what every replica must agree on about Slack.
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE requests ADD COLUMN timer_lease_until BIGINT;

-- One worker at a time posts or updates a request's message.
CREATE TABLE message_leases (
    request_id TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    until BIGINT NOT NULL
);

-- chat.postMessage pacing per channel (a token bucket), for the whole app.
CREATE TABLE slack_pacing (
    channel TEXT PRIMARY KEY NOT NULL,
    tokens DOUBLE PRECISION NOT NULL,
    at BIGINT NOT NULL,
    next_slot BIGINT NOT NULL
);

-- Slack methods paused after a 429, for the whole app.
CREATE TABLE slack_pauses (
    method TEXT PRIMARY KEY NOT NULL,
    until BIGINT NOT NULL
);
