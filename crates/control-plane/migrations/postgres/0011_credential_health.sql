-- What balancers report about a credential besides its counts: when it was last used, its
-- newest failure (`last_error`, '' = none, at `last_error_at`) and the newest usage window
-- an upstream announced (`quota_window`, '' = none seen; `quota_observed_at` orders the
-- reports). Times are Unix seconds. `cooling_until` is routing state, not a ban: the
-- credential is skipped until then and comes back by itself.
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT NULL;
ALTER TABLE api_keys ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN last_error_at BIGINT NULL;
ALTER TABLE api_keys ADD COLUMN quota_window TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN quota_used_percent DOUBLE PRECISION NULL;
ALTER TABLE api_keys ADD COLUMN quota_resets_at BIGINT NULL;
ALTER TABLE api_keys ADD COLUMN cooling_until BIGINT NULL;
ALTER TABLE api_keys ADD COLUMN quota_observed_at BIGINT NULL;
