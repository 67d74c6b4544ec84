-- Audit entries greenlight wrote that are still waiting for their place in the hash chain.
-- Since this migration the SQLite writer chains every entry in the transaction that writes it,
-- so only the entries an earlier version left unchained (it chained in the background) wait
-- here, until the first start or `greenlight migrate` chains them. The chainer chains nothing
-- else: an entry in neither `audit_chain` nor this table was not written by greenlight, and
-- `greenlight audit verify` says so, before and after any number of restarts.
CREATE TABLE audit_pending (
    audit_id INTEGER PRIMARY KEY NOT NULL
);
INSERT INTO audit_pending (audit_id)
SELECT a.id FROM audit a WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.audit_id = a.id);
