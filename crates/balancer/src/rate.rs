//! Rate windows: the master's `global_qps` and the key's `qps` are counted in one-second
//! windows on the bus, so every balancer shares them (one round trip). When the bus
//! cannot count — down, slow, refusing — the balancer counts the same windows itself:
//! limits still hold per balancer (several balancers may then admit up to their number
//! times the limit), never "no limit at all". The outage is logged once, counted in
//! `ezapi_balancer_rate_limit_local_total`, and the bus is tried again after
//! [`BUS_RETRY`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ez_bus::ConfigBus;

/// How long a window's counter lives on the bus (a little past its second).
pub const WINDOW_TTL_MS: u64 = 2_000;
/// The longest a request waits for the bus to count: beyond, it is counted locally.
const BUS_WAIT: Duration = Duration::from_millis(250);
/// After the bus failed, how long windows are counted locally before it is tried again.
const BUS_RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct RateLimiter {
    local: Mutex<LocalWindows>,
    /// Unix milliseconds before which the bus is not asked (it failed recently).
    bus_retry_at_ms: AtomicU64,
    /// Whether the bus is known to be failing (logged once per outage).
    outage: AtomicBool,
}

/// The windows of the current second, counted by this balancer alone.
#[derive(Default)]
struct LocalWindows {
    second: i64,
    counts: HashMap<String, i64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RateLimiter {
    /// Counts one request in each window of `keys` (all of the second `second`) and
    /// returns the windows' counts.
    pub async fn count(&self, bus: &dyn ConfigBus, keys: &[String], second: i64) -> Vec<i64> {
        if now_ms() >= self.bus_retry_at_ms.load(Ordering::Relaxed) {
            match tokio::time::timeout(BUS_WAIT, bus.count(keys, WINDOW_TTL_MS)).await {
                Ok(Ok(counts)) if counts.len() == keys.len() => {
                    if self.outage.swap(false, Ordering::Relaxed) {
                        tracing::info!("the bus counts rate windows again");
                    }
                    return counts;
                }
                Ok(Ok(_)) => self.bus_failed("the bus answered the wrong number of counts"),
                Ok(Err(e)) => self.bus_failed(&e.to_string()),
                Err(_) => self.bus_failed("the bus did not answer in time"),
            }
        }
        metrics::counter!(crate::metrics::RATE_LIMIT_LOCAL).increment(1);
        self.count_locally(keys, second)
    }

    fn bus_failed(&self, error: &str) {
        let retry_at = now_ms().saturating_add(BUS_RETRY.as_millis() as u64);
        self.bus_retry_at_ms.store(retry_at, Ordering::Relaxed);
        if !self.outage.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error,
                "rate windows cannot be counted on the bus; each balancer counts its own until it answers"
            );
        }
    }

    fn count_locally(&self, keys: &[String], second: i64) -> Vec<i64> {
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        if local.second != second {
            local.second = second;
            local.counts.clear();
        }
        keys.iter()
            .map(|key| {
                let count = local.counts.entry(key.clone()).or_insert(0);
                *count += 1;
                *count
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use async_trait::async_trait;
    use ez_bus::{BusError, BusWrite, MemoryBus, Subscription};

    use super::*;

    /// A bus that cannot count.
    struct Down;

    #[async_trait]
    impl ConfigBus for Down {
        fn kind(&self) -> &'static str {
            "down"
        }
        async fn ping(&self) -> Result<(), BusError> {
            Err(BusError::Unavailable("down".into()))
        }
        async fn apply(&self, _: Vec<BusWrite>) -> Result<(), BusError> {
            Err(BusError::Unavailable("down".into()))
        }
        async fn hash_get_all(&self, _: &str) -> Result<HashMap<String, String>, BusError> {
            Err(BusError::Unavailable("down".into()))
        }
        async fn hash_get(&self, _: &str, _: &str) -> Result<Option<String>, BusError> {
            Err(BusError::Unavailable("down".into()))
        }
        async fn get_values(&self, _: &[String]) -> Result<Vec<Option<String>>, BusError> {
            Err(BusError::Unavailable("down".into()))
        }
        async fn keys_with_prefix(&self, _: &str) -> Result<Vec<String>, BusError> {
            Err(BusError::Unavailable("down".into()))
        }
        async fn publish(&self, _: &str, _: &str) -> Result<(), BusError> {
            Err(BusError::Unavailable("down".into()))
        }
        async fn subscribe(&self, _: &str) -> Result<Subscription, BusError> {
            Err(BusError::Unavailable("down".into()))
        }
        async fn count(&self, _: &[String], _: u64) -> Result<Vec<i64>, BusError> {
            Err(BusError::Unavailable("down".into()))
        }
    }

    #[tokio::test]
    async fn a_bus_that_cannot_count_falls_back_to_local_windows() {
        let limiter = RateLimiter::default();
        let keys = vec!["rate:master:1:100".to_owned(), "rate:key:2:100".to_owned()];
        assert_eq!(limiter.count(&Down, &keys, 100).await, [1, 1]);
        assert!(limiter.outage.load(Ordering::Relaxed));
        assert_eq!(limiter.count(&Down, &keys, 100).await, [2, 2]);
        assert_eq!(limiter.count(&Down, &keys[..1], 100).await, [3]);
        // A new second starts new windows.
        assert_eq!(limiter.count(&Down, &keys, 101).await, [1, 1]);
    }

    #[tokio::test]
    async fn the_bus_is_used_again_once_it_answers() {
        let limiter = RateLimiter::default();
        let keys = vec!["rate:master:1:100".to_owned()];
        limiter.count(&Down, &keys, 100).await;
        // Within the retry pause the bus is not asked: counted locally.
        let memory = MemoryBus::new();
        assert_eq!(limiter.count(&memory, &keys, 100).await, [2]);
        limiter.bus_retry_at_ms.store(0, Ordering::Relaxed);
        assert_eq!(
            limiter.count(&memory, &keys, 100).await,
            [1],
            "the bus's own window"
        );
        assert!(!limiter.outage.load(Ordering::Relaxed));
    }
}
