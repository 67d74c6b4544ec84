-- Standing approvals: a person approving a request granted that, until expires_at, requests in
-- the same workflow from the same caller (API key) whose params carry match_params are
-- approved at creation in their name. Revoked ones keep their row (revoked_at, revoked_by).
CREATE TABLE standing_approvals (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    caller TEXT NOT NULL,
    caller_name TEXT NOT NULL,
    match_params TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoked_by TEXT
);
CREATE INDEX standing_approvals_caller ON standing_approvals (workflow, caller, expires_at);
CREATE INDEX standing_approvals_expiry ON standing_approvals (expires_at);
