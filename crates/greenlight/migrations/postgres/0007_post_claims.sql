-- How many times each job was claimed: a post claimed again may have reached Slack before its
-- worker died, so it first looks for that message (by its metadata) instead of posting twice.
ALTER TABLE outbox ADD COLUMN claims BIGINT NOT NULL DEFAULT 0;
