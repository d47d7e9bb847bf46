-- The optional active probe of a provider group's credentials: `off` (default), `on`
-- (credentials whose probe is free), `metered` (subscription and service-account
-- credentials too).
ALTER TABLE provider_groups ADD COLUMN health_check TEXT NOT NULL DEFAULT 'off';
