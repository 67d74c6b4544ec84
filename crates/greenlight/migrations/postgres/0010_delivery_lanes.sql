-- Deliveries in lanes with their own share of the worker: Slack calls, operators' hooks
-- (workflow webhooks, action hooks) and requester-given callbacks, so a slow callback URL
-- cannot hold up Slack.
ALTER TABLE outbox ADD COLUMN lane TEXT NOT NULL DEFAULT 'slack';
UPDATE outbox SET lane = CASE WHEN (payload::jsonb ->> 'guarded') = 'true' THEN 'callbacks' ELSE 'hooks' END
    WHERE kind IN ('webhook', 'action_hook');
CREATE INDEX outbox_lane_due ON outbox (lane, next_attempt_at) WHERE state = 'pending';
