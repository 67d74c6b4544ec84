-- The caller's own JSON object kept with each request (agents put their run id there).
-- `api_key_id` (from 0001) now names the creating key of every request, not only those with an
-- idempotency key: cancel and the full callback_url are that key's alone.
ALTER TABLE requests ADD COLUMN metadata TEXT;
