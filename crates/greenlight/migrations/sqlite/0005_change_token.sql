-- Names the last write of each request, so that the audit entries and outbox jobs sent in the
-- same query as a compare-and-set land only if that very write took effect.
ALTER TABLE requests ADD COLUMN change_token TEXT;
