-- Bumped whenever a new failure merges into a pending entry, so a retry (or a full sync)
-- that started before the merge cannot mark the newer change done.
ALTER TABLE sync_outbox ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
