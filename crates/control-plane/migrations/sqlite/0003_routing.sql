-- Upstream configuration: provider groups, their credentials, bindings of public models,
-- and model registry overrides (SPEC §3).
CREATE TABLE provider_groups (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL UNIQUE,
    type            TEXT NOT NULL,
    base_url        TEXT NOT NULL DEFAULT '',
    google_project  TEXT NOT NULL DEFAULT '',
    google_location TEXT NOT NULL DEFAULT '',
    models          TEXT NOT NULL DEFAULT '[]',
    status          TEXT NOT NULL DEFAULT 'active',
    static_headers  TEXT NOT NULL DEFAULT '{}',
    headers_profile TEXT NOT NULL DEFAULT '',
    route_group     TEXT NOT NULL DEFAULT 'default',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Upstream secrets are stored as given: the data plane must present them upstream.
CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id      BIGINT NOT NULL REFERENCES provider_groups (id),
    api_key       TEXT NOT NULL DEFAULT '',
    weight        BIGINT NOT NULL DEFAULT 1,
    status        TEXT NOT NULL DEFAULT 'active',
    auto_ban      BIGINT NOT NULL DEFAULT 1,
    ban_reason    TEXT NOT NULL DEFAULT '',
    ban_until     BIGINT,
    access_token  TEXT NOT NULL DEFAULT '',
    refresh_token TEXT NOT NULL DEFAULT '',
    expires_at    BIGINT,
    account_id    TEXT NOT NULL DEFAULT '',
    project_id    TEXT NOT NULL DEFAULT '',
    models        TEXT NOT NULL DEFAULT '[]',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE INDEX api_keys_group_id ON api_keys (group_id);

CREATE TABLE bindings (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace      TEXT NOT NULL,
    public_model   TEXT NOT NULL,
    group_id       BIGINT NOT NULL REFERENCES provider_groups (id),
    weight         BIGINT NOT NULL DEFAULT 1,
    selector_type  TEXT NOT NULL DEFAULT 'exact',
    selector_value TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL DEFAULT 'active',
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (namespace, public_model, group_id)
);

CREATE INDEX bindings_group_id ON bindings (group_id);

-- Admin overrides of the built-in model catalogue; `data` is a JSON object of the
-- overridden fields.
CREATE TABLE model_overrides (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
