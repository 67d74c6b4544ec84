-- Reminders (issue 4): how many were posted, and when the next is due (NULL: none).
ALTER TABLE requests ADD COLUMN reminders BIGINT NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN remind_at BIGINT;
CREATE INDEX requests_remind ON requests (remind_at) WHERE status = 'pending';
