//! Names of the config-bus keys and channels (SPEC §7, docs/contract.md).

/// Pub/sub channel announcing `{"resource", "version", "timestamp"}` after every write.
pub const REFRESH_CHANNEL: &str = "dp:config:refresh";

/// Prefix of the per-child-key hashes; the rest is the key's SHA-256 hex digest.
pub const TOKEN_PREFIX: &str = "auth:token:";
/// Prefix of the per-master hashes; the rest is the master's numeric id.
pub const MASTER_PREFIX: &str = "auth:master:";

/// Hash: credential id → provider snapshot JSON.
pub const PROVIDERS: &str = "config:providers";
/// Hash: `namespace.public_model` → binding snapshot JSON.
pub const BINDINGS: &str = "config:bindings";
/// Hash: `namespace.public_model` → model capabilities JSON.
pub const MODELS: &str = "meta:models";
/// Hashes of `version` (ns), `updated_at` (s), `checksum` of the snapshot they describe.
pub const PROVIDERS_META: &str = "meta:providers_meta";
pub const BINDINGS_META: &str = "meta:bindings_meta";
pub const MODELS_META: &str = "meta:models_meta";

/// Written at the end of every full sync (`version`, `updated_at`). Its absence means
/// the bus lost its data and must be rebuilt.
pub const SYNC_SENTINEL: &str = "meta:sync";

/// Per-second request counter of a master (`global_qps`), shared by every balancer.
pub fn rate_master(id: i64, unix_second: i64) -> String {
    format!("rate:master:{id}:{unix_second}")
}

/// Per-second request counter of a child key (`qps`).
pub fn rate_key(key_id: i64, unix_second: i64) -> String {
    format!("rate:key:{key_id}:{unix_second}")
}

pub fn token(digest: &str) -> String {
    format!("{TOKEN_PREFIX}{digest}")
}

pub fn master(id: i64) -> String {
    format!("{MASTER_PREFIX}{id}")
}

/// Resource names carried in refresh events.
pub mod resource {
    pub const TOKEN: &str = "token";
    pub const MASTER: &str = "master";
    pub const ALL: &str = "all";
    pub const PROVIDERS: &str = "providers";
    pub const BINDINGS: &str = "bindings";
    pub const MODELS: &str = "models";
}
