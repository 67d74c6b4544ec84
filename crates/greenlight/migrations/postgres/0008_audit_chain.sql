-- The audit log's hash chain (see domain/audit.rs for the canonical form): position `seq` holds
-- the hash of audit entry `audit_id` over its content and the hash at `seq - 1`. Written by one
-- replica at a time (an advisory lock) shortly after each entry, never changed.
CREATE TABLE audit_chain (
    seq BIGINT PRIMARY KEY NOT NULL,
    audit_id BIGINT NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE FUNCTION audit_chain_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit chain is append-only';
END
$$;
CREATE TRIGGER audit_chain_no_update BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_chain_append_only();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_append_only();
