//! The config bus (SPEC §7): the CP writes snapshots, the DP reads them.
//!
//! One trait, [`ConfigBus`], with two implementations that pass the same contract test
//! suite (`tests/contract.rs`): [`RedisBus`] for production and [`MemoryBus`], the
//! embedded default of `ezapi serve`.

mod memory;
mod redis_bus;

use std::collections::HashMap;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

pub use memory::MemoryBus;
pub use redis_bus::{MIN_REDIS_VERSION, RedisBus};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("bus operation timed out after {0} ms")]
    Timeout(u64),
    #[error("bad bus configuration: {0}")]
    Config(String),
}

/// One write in a batch applied by [`ConfigBus::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusWrite {
    /// Replace the whole hash at `key` with `fields` (an empty list deletes it).
    ReplaceHash {
        key: String,
        fields: Vec<(String, String)>,
    },
    /// Set some fields of the hash at `key`, leaving the others alone.
    SetFields {
        key: String,
        fields: Vec<(String, String)>,
    },
    /// Remove some fields of the hash at `key`.
    DeleteFields { key: String, fields: Vec<String> },
    /// Remove `key` entirely.
    Delete { key: String },
    /// Add `by` to the integer counter at `key` (a missing counter starts at 0).
    IncrBy { key: String, by: i64 },
    /// Set the plain value at `key`.
    SetValue { key: String, value: String },
    /// Add `by` to the integer `field` of the hash at `key` (missing → 0).
    IncrField { key: String, field: String, by: i64 },
}

/// Messages received on a subscribed channel. The stream ends when the subscription is
/// lost (e.g. the Redis connection dropped); the subscriber then re-subscribes and
/// re-reads what it may have missed.
pub type Subscription = BoxStream<'static, String>;

#[async_trait]
pub trait ConfigBus: Send + Sync + 'static {
    /// Short name for health output and logs: `redis` or `memory`.
    fn kind(&self) -> &'static str;

    async fn ping(&self) -> Result<(), BusError>;

    /// Applies a batch of writes atomically: readers see all of them or none.
    async fn apply(&self, writes: Vec<BusWrite>) -> Result<(), BusError>;

    /// All fields of the hash at `key`; empty when it does not exist.
    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, String>, BusError>;

    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<String>, BusError>;

    /// The hashes at `keys`, in order (empty where missing), in as few round trips as the
    /// implementation can manage — a balancer loads every `auth:token:*` this way.
    async fn hash_get_all_many(&self, keys: &[String]) -> Result<Vec<HashMap<String, String>>, BusError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.hash_get_all(key).await?);
        }
        Ok(out)
    }

    /// The plain values (counters included) at `keys`, in order; `None` where missing.
    async fn get_values(&self, keys: &[String]) -> Result<Vec<Option<String>>, BusError>;

    /// Every key that starts with `prefix` (order unspecified).
    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, BusError>;

    async fn publish(&self, channel: &str, payload: &str) -> Result<(), BusError>;

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BusError>;

    /// Adds one to each counter and returns the new values, in one round trip. A counter
    /// that did not exist starts at 1 and disappears `ttl_ms` after it was created (rate
    /// windows name their period in the key).
    async fn count(&self, keys: &[String], ttl_ms: u64) -> Result<Vec<i64>, BusError>;
}
