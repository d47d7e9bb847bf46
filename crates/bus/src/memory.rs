//! The in-process bus: what `ezapi serve` uses when no Redis URL is configured.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::broadcast;

use crate::{BusError, BusWrite, ConfigBus, Subscription};

/// Buffered messages per channel; a subscriber that lags further misses messages and
/// relies on the periodic reconcile, exactly as with Redis pub/sub.
const CHANNEL_CAPACITY: usize = 1024;

#[derive(Default)]
pub struct MemoryBus {
    hashes: RwLock<HashMap<String, HashMap<String, String>>>,
    /// Plain values and counters without expiry (`IncrBy`, `SetValue`).
    values: Mutex<HashMap<String, String>>,
    /// Counter value and when it expires.
    counters: Mutex<HashMap<String, (i64, std::time::Instant)>>,
    channels: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl MemoryBus {
    pub fn new() -> MemoryBus {
        MemoryBus::default()
    }

    fn sender(&self, channel: &str) -> broadcast::Sender<String> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .clone()
    }
}

#[async_trait]
impl ConfigBus for MemoryBus {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn apply(&self, writes: Vec<BusWrite>) -> Result<(), BusError> {
        let mut hashes = self.hashes.write().unwrap_or_else(PoisonError::into_inner);
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        for write in writes {
            match write {
                BusWrite::ReplaceHash { key, fields } => {
                    if fields.is_empty() {
                        hashes.remove(&key);
                    } else {
                        hashes.insert(key, fields.into_iter().collect());
                    }
                }
                BusWrite::SetFields { key, fields } => {
                    if !fields.is_empty() {
                        hashes.entry(key).or_default().extend(fields);
                    }
                }
                BusWrite::DeleteFields { key, fields } => {
                    if let Some(hash) = hashes.get_mut(&key) {
                        for field in &fields {
                            hash.remove(field);
                        }
                        if hash.is_empty() {
                            hashes.remove(&key);
                        }
                    }
                }
                BusWrite::Delete { key } => {
                    hashes.remove(&key);
                    values.remove(&key);
                }
                BusWrite::IncrBy { key, by } => {
                    let value = values.entry(key).or_insert_with(|| "0".to_owned());
                    // Like Redis, a value that is not an integer is left alone.
                    if let Ok(current) = value.parse::<i64>() {
                        *value = current.saturating_add(by).to_string();
                    }
                }
                BusWrite::SetValue { key, value } => {
                    values.insert(key, value);
                }
                BusWrite::IncrField { key, field, by } => {
                    let value = hashes
                        .entry(key)
                        .or_default()
                        .entry(field)
                        .or_insert_with(|| "0".to_owned());
                    if let Ok(current) = value.parse::<i64>() {
                        *value = current.saturating_add(by).to_string();
                    }
                }
            }
        }
        Ok(())
    }

    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, String>, BusError> {
        let hashes = self.hashes.read().unwrap_or_else(PoisonError::into_inner);
        Ok(hashes.get(key).cloned().unwrap_or_default())
    }

    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<String>, BusError> {
        let hashes = self.hashes.read().unwrap_or_else(PoisonError::into_inner);
        Ok(hashes.get(key).and_then(|h| h.get(field)).cloned())
    }

    async fn get_values(&self, keys: &[String]) -> Result<Vec<Option<String>>, BusError> {
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(keys.iter().map(|k| values.get(k).cloned()).collect())
    }

    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, BusError> {
        let hashes = self.hashes.read().unwrap_or_else(PoisonError::into_inner);
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(hashes
            .keys()
            .chain(values.keys())
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<(), BusError> {
        // No subscriber is not an error: the message is simply not delivered, as in Redis.
        let _ = self.sender(channel).send(payload.to_owned());
        Ok(())
    }

    async fn count(&self, keys: &[String], ttl_ms: u64) -> Result<Vec<i64>, BusError> {
        let now = std::time::Instant::now();
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        // Expired windows go as new ones are counted, so the map stays small.
        if counters.len() > 10_000 {
            counters.retain(|_, (_, expires)| *expires > now);
        }
        Ok(keys
            .iter()
            .map(|key| {
                let entry = counters
                    .entry(key.clone())
                    .or_insert((0, now + std::time::Duration::from_millis(ttl_ms)));
                if entry.1 <= now {
                    *entry = (0, now + std::time::Duration::from_millis(ttl_ms));
                }
                entry.0 += 1;
                entry.0
            })
            .collect())
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BusError> {
        let rx = self.sender(channel).subscribe();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(message) => return Some((message, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(stream.boxed())
    }
}
