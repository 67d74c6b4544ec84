-- Direct-message copies of a request's message (a workflow's notify_approvers = "dm"): a JSON
-- array of {channel, ts}, each rewritten with the message whenever it changes.
ALTER TABLE requests ADD COLUMN slack_copies TEXT;
