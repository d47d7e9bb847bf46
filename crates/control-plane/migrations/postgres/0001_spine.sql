-- Times are Unix seconds (BIGINT), the unit the API serialises.
-- List-valued columns hold JSON arrays of strings.
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE namespaces (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL DEFAULT 'active',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

INSERT INTO namespaces (name, description, status, created_at, updated_at)
VALUES ('default', 'The default routing namespace', 'active',
        CAST(EXTRACT(EPOCH FROM now()) AS BIGINT), CAST(EXTRACT(EPOCH FROM now()) AS BIGINT));

CREATE TABLE masters (
    id                BIGSERIAL PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    group_name        TEXT NOT NULL DEFAULT 'default',
    status            TEXT NOT NULL DEFAULT 'active',
    max_child_keys    BIGINT NOT NULL DEFAULT 5,
    global_qps        BIGINT NOT NULL DEFAULT 0,
    epoch             BIGINT NOT NULL DEFAULT 1,
    default_namespace TEXT NOT NULL DEFAULT 'default',
    namespaces        TEXT NOT NULL DEFAULT '["default"]',
    token_digest      TEXT NOT NULL UNIQUE,
    token_prefix      TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE child_keys (
    id                BIGSERIAL PRIMARY KEY,
    master_id         BIGINT NOT NULL REFERENCES masters (id),
    name              TEXT NOT NULL,
    token_digest      TEXT NOT NULL UNIQUE,
    token_prefix      TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'active',
    issued_at_epoch   BIGINT NOT NULL,
    issued_by         TEXT NOT NULL,
    default_namespace TEXT NOT NULL,
    namespaces        TEXT NOT NULL,
    allow_ips         TEXT NOT NULL DEFAULT '[]',
    deny_ips          TEXT NOT NULL DEFAULT '[]',
    expires_at        BIGINT,
    qps               BIGINT,
    last_used_at      BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    UNIQUE (master_id, name)
);

CREATE INDEX child_keys_master_id ON child_keys (master_id);
