-- A digest's counts (by rule, outcome and requester), read from the index alone: a digest of a
-- busy interval holds many thousands of requests and is summed up again on every update.
CREATE INDEX requests_digest_counts ON requests (digest_key, decided_by, status, requester)
    WHERE digest_key IS NOT NULL;
