-- Signals past their ttl are deleted after [limits] signal_retention (issue 31): the purge
-- finds the longest lapsed through this index instead of reading every signal.
CREATE INDEX signals_expires ON signals (expires_at) WHERE expires_at IS NOT NULL;
