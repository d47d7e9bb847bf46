-- Bus writes that failed, retried by the scheduler (SPEC §3 SyncOutbox, §7).
CREATE TABLE sync_outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    resource      TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    action        TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    next_retry_at BIGINT NOT NULL,
    last_error    TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL DEFAULT 'pending',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE INDEX sync_outbox_due ON sync_outbox (status, next_retry_at);
-- One pending entry per resource: a later failure for the same resource updates it.
CREATE UNIQUE INDEX sync_outbox_one_pending ON sync_outbox (resource, resource_id) WHERE status = 'pending';
