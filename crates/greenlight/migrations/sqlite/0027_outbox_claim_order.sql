-- The same index as PostgreSQL's 0027: the claim's order, (lane, next_attempt_at, id). SQLite's
-- index already ended with the rowid, which is id, so this changes no plan here; it keeps the
-- two schemas (and their version numbers) alike. PostgreSQL's autovacuum settings have no
-- counterpart: SQLite reuses freed pages without a vacuum.
DROP INDEX IF EXISTS outbox_lane_due;
CREATE INDEX outbox_lane_due ON outbox (lane, next_attempt_at, id) WHERE state = 'pending';
