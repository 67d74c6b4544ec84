-- The outbox's first due index, over every lane. Since 0010 every claim and every wake-up time
-- reads one lane through outbox_lane_due, so this index was only written (on each job's insert
-- and each job's end) and never read on the hot path; the start-up release of leases scans the
-- pending jobs through another partial index of the same rows.
DROP INDEX IF EXISTS outbox_due;
