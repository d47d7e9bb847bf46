-- Log pipeline hardening: whether a record's output tokens were estimated because the
-- upstream's usage block never arrived (a stream cut short). 0/1 like `stream`.
ALTER TABLE log_records ADD COLUMN usage_estimated BIGINT NOT NULL DEFAULT 0;
