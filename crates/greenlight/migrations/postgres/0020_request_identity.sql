-- Who asked, as proven by a workload token (OIDC) that a [[trust]] policy accepted: the policy,
-- the issuer, the subject and the verified claims (less jti), as JSON. NULL for API-key callers.
ALTER TABLE requests ADD COLUMN identity TEXT;
