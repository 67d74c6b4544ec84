-- What a request asks beyond yes or no (issue 27): its fields, which buttons its message
-- shows and which params approvers may edit, as JSON ({"fields": [...], "buttons": "answer",
-- "editable": ["params.replicas"]}); null when it asks nothing more.
-- The answers themselves are kept with each vote, in `decisions`.
ALTER TABLE requests ADD COLUMN form TEXT;
