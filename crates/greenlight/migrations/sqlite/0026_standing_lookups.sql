-- Standing approvals looked up by the request that granted them (its message shows each with a
-- Revoke button) and by the person who granted them (their Home tab lists the live ones).
CREATE INDEX standing_approvals_request ON standing_approvals (request_id);
CREATE INDEX standing_approvals_granter ON standing_approvals (granted_by, expires_at);
