//! Names of the config-bus keys and channels (SPEC §7, docs/contract.md).

/// Pub/sub channel announcing `{"resource", "version", "timestamp"}` after every write.
pub const REFRESH_CHANNEL: &str = "dp:config:refresh";

/// Prefix of the per-child-key hashes; the rest is the key's SHA-256 hex digest.
pub const TOKEN_PREFIX: &str = "auth:token:";
/// Prefix of the per-master hashes; the rest is the master's numeric id.
pub const MASTER_PREFIX: &str = "auth:master:";

/// Written at the end of every full sync (`version`, `updated_at`). Its absence means
/// the bus lost its data and must be rebuilt.
pub const SYNC_SENTINEL: &str = "meta:sync";

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
}
