-- Several replicas run on PostgreSQL (same version there, with its coordination tables); one
-- process on one file keeps the same columns so that rows copy between the two as they are.
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE requests ADD COLUMN timer_lease_until INTEGER;
