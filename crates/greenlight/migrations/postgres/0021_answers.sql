-- What a request asks beyond yes or no (issue 27): its fields and which buttons its message
-- shows, as JSON ({"fields": [...], "buttons": "answer"}); null when it asks nothing more.
-- The answers themselves are kept with each vote, in `decisions`.
ALTER TABLE requests ADD COLUMN form TEXT;
