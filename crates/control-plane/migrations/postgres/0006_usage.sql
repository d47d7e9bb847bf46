-- Usage reported by balancers: one row per proxied request (SPEC §3 LogRecord), and the
-- running totals of child keys and upstream credentials.
CREATE TABLE log_records (
    id             BIGSERIAL PRIMARY KEY,
    request_id     TEXT NOT NULL,
    master_id      BIGINT NOT NULL,
    key_id         BIGINT NOT NULL,
    namespace      TEXT NOT NULL,
    public_model   TEXT NOT NULL,
    upstream_model TEXT NOT NULL DEFAULT '',
    group_id       BIGINT,
    api_key_id     BIGINT,
    endpoint       TEXT NOT NULL,
    status_code    BIGINT NOT NULL,
    error_code     TEXT,
    error_message  TEXT,
    latency_ms     BIGINT NOT NULL,
    first_token_ms BIGINT,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    client_ip      TEXT,
    stream         BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL
);

CREATE INDEX log_records_created_at ON log_records (created_at);
CREATE INDEX log_records_master ON log_records (master_id, created_at);

ALTER TABLE child_keys ADD COLUMN request_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE child_keys ADD COLUMN token_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN request_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN success_count BIGINT NOT NULL DEFAULT 0;
