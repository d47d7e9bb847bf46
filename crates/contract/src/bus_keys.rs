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

/// Counters written by balancers (SPEC §7): requests and tokens of a child key (by its
/// digest) and of a master, and the Unix second a key was last used.
pub fn key_stats(digest: &str, counter: KeyCounter) -> String {
    format!("key:stats:{digest}:{}", counter.suffix())
}

pub fn master_stats(id: i64, counter: MasterCounter) -> String {
    format!("master:stats:{id}:{}", counter.suffix())
}

/// Prefix of every master counter; the rest is `{id}:{counter}`.
pub const MASTER_STATS_PREFIX: &str = "master:stats:";

/// Hash of a master's current rate: `qps`, `limit`, `blocked`, `updated_at`.
pub fn master_rate(id: i64) -> String {
    format!("master:rate:{id}")
}

pub const MASTER_RATE_PREFIX: &str = "master:rate:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCounter {
    Requests,
    Tokens,
    LastAccess,
}

impl KeyCounter {
    fn suffix(self) -> &'static str {
        match self {
            KeyCounter::Requests => "requests",
            KeyCounter::Tokens => "tokens",
            KeyCounter::LastAccess => "last_access",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterCounter {
    Requests,
    Tokens,
}

impl MasterCounter {
    pub fn suffix(self) -> &'static str {
        match self {
            MasterCounter::Requests => "requests",
            MasterCounter::Tokens => "tokens",
        }
    }
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
