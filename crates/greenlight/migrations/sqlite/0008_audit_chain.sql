-- The audit log's hash chain (see domain/audit.rs for the canonical form): position `seq` holds
-- the hash of audit entry `audit_id` over its content and the hash at `seq - 1`. Written by the
-- server shortly after each entry (and for entries older than this table by the first start or
-- `greenlight migrate`), never changed.
CREATE TABLE audit_chain (
    seq INTEGER PRIMARY KEY NOT NULL,
    audit_id INTEGER NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain
BEGIN
    SELECT RAISE(ABORT, 'the audit chain is append-only');
END;
CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain
BEGIN
    SELECT RAISE(ABORT, 'the audit chain is append-only');
END;
