-- The refresh of a subscription credential's access token: whoever holds the lease (a
-- control plane, until `refresh_lease_until`, Unix seconds) refreshes it; the others wait.
-- `refresh_failures` counts transient failures in a row (the retry backs off).
ALTER TABLE api_keys ADD COLUMN refresh_lease_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN refresh_failures INTEGER NOT NULL DEFAULT 0;
