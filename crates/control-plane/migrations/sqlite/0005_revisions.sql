-- Bumped by every update: an update computed from an older read is refused instead of
-- silently undoing a concurrent change (a deleted master revived, a suspension lost).
ALTER TABLE masters ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE child_keys ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
