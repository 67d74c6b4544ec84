-- App Home and /greenlight: who opened greenlight's Home tab and when, so that a change
-- refreshes only the tabs people may be looking at. One row per person; rows older than a day
-- are removed as others are written, so the table stays small. Not copied by copy-db: like
-- leases and pacing, it matters only to the running servers.
CREATE TABLE home_opened (
    user_id TEXT PRIMARY KEY NOT NULL,
    opened_at INTEGER NOT NULL
);
CREATE INDEX home_opened_at ON home_opened (opened_at);

-- "Your requests" and "Recently decided" on the Home tab.
CREATE INDEX requests_requester ON requests (requester, id) WHERE requester IS NOT NULL;
CREATE INDEX requests_decided ON requests (decided_at) WHERE status <> 'pending';

