-- Audit entries greenlight wrote that are still waiting for their place in the hash chain.
-- Every transaction that writes audit entries also queues their ids here; the chainer (one
-- replica at a time, under an advisory lock) chains exactly the queued entries and removes
-- them. An entry in neither `audit_chain` nor this table was not written by greenlight, and
-- `greenlight audit verify` says so, before and after any number of restarts. Entries an
-- earlier version left unchained are queued once, here.
CREATE TABLE audit_pending (
    audit_id BIGINT PRIMARY KEY NOT NULL
);
INSERT INTO audit_pending (audit_id)
SELECT a.id FROM audit a WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.audit_id = a.id);
