//! The snapshot cache: an immutable [`Snapshot`] swapped atomically (readers never lock),
//! reloaded at once on `dp:config:refresh` and on an interval in case an event was
//! missed. When the bus is unreachable or suddenly empty, the last good snapshot stays.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ez_bus::ConfigBus;
use ez_contract::bus_keys;
use ez_contract::time::now_unix;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::snapshot::{Part, Snapshot};

pub struct SnapshotCache {
    bus: Arc<dyn ConfigBus>,
    current: ArcSwap<Snapshot>,
    ready: std::sync::atomic::AtomicBool,
}

impl SnapshotCache {
    pub fn new(bus: Arc<dyn ConfigBus>) -> Arc<SnapshotCache> {
        Arc::new(SnapshotCache {
            bus,
            current: ArcSwap::from_pointee(Snapshot::default()),
            ready: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The snapshot in force; cheap, lock-free.
    pub fn get(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn bus(&self) -> &Arc<dyn ConfigBus> {
        &self.bus
    }

    /// The snapshot in force as an owned handle, to hold across awaits.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Whether a snapshot has been loaded at least once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reloads from the bus. Keeps the current snapshot when the bus fails, or when it
    /// comes back empty without the `meta:sync` marker (a bus that lost its data, before
    /// the control plane rebuilt it).
    pub async fn refresh(&self) -> Result<(), ez_bus::BusError> {
        self.refresh_part(Part::All).await
    }

    /// Re-reads only the named auth entries.
    pub async fn refresh_entries(&self, keys: &[String]) -> Result<(), ez_bus::BusError> {
        if !self.is_ready() {
            return self.refresh().await;
        }
        let loaded = self
            .get()
            .reload_entries(self.bus.as_ref(), keys, now_unix())
            .await?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// Reloads one part, sharing the rest with the current snapshot.
    pub async fn refresh_part(&self, part: Part) -> Result<(), ez_bus::BusError> {
        let part = if self.is_ready() { part } else { Part::All };
        let loaded = self.get().reload(self.bus.as_ref(), part, now_unix()).await?;
        if loaded.part_is_empty(part) && !self.get().part_is_empty(part) {
            let marker = self.bus.hash_get(bus_keys::SYNC_SENTINEL, "version").await?;
            if marker.is_none() {
                tracing::warn!("the bus is empty and unmarked; keeping the last good snapshot");
                return Ok(());
            }
        }
        self.current.store(Arc::new(loaded));
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Keeps the snapshot current until `stop` turns true: applies every refresh event
    /// (only the entries or the part it names), re-reads the routing part every
    /// `reconcile` interval and everything every [`FULL_RECONCILE_EVERY`] intervals (the
    /// auth part can hold 100,000s of keys); re-subscribes — and reloads everything —
    /// when the subscription drops.
    pub fn spawn_updater(
        self: &Arc<Self>,
        reconcile: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                let mut events = match cache.bus.subscribe(bus_keys::REFRESH_CHANNEL).await {
                    Ok(events) => Some(events),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to refresh events; reconciling on the interval");
                        None
                    }
                };
                if let Err(e) = cache.refresh().await {
                    tracing::warn!(error = %e, "snapshot reload failed; serving the last good snapshot");
                }
                let mut ticks: u32 = 0;
                loop {
                    let mut refresh = Refresh::Part(Part::All);
                    let event = async {
                        match events.as_mut() {
                            Some(stream) => stream.next().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        message = event => {
                            let Some(message) = message else {
                                break; // subscription lost: re-subscribe
                            };
                            refresh = event_refresh(&message);
                        }
                        () = tokio::time::sleep(reconcile) => {
                            ticks = ticks.wrapping_add(1);
                            if !ticks.is_multiple_of(FULL_RECONCILE_EVERY) {
                                refresh = Refresh::Part(Part::Routing);
                            }
                        }
                    }
                    let result = match &refresh {
                        Refresh::Part(part) => cache.refresh_part(*part).await,
                        Refresh::Entries(keys) => cache.refresh_entries(keys).await,
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "snapshot reload failed; serving the last good snapshot");
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }
}

/// Every how many reconcile intervals the whole snapshot (auth part included) is re-read.
pub const FULL_RECONCILE_EVERY: u32 = 12;

/// What a refresh event asks to re-read.
#[derive(Debug, PartialEq, Eq)]
enum Refresh {
    Part(Part),
    /// The auth entries it names (`"keys"`).
    Entries(Vec<String>),
}

/// `{"resource": …, "keys": […]}`; anything unreadable reloads all.
fn event_refresh(message: &str) -> Refresh {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(message) else {
        return Refresh::Part(Part::All);
    };
    let part = event
        .get("resource")
        .and_then(|r| r.as_str())
        .map_or(Part::All, Part::of_resource);
    let keys: Option<Vec<String>> = event.get("keys").and_then(|k| {
        k.as_array()?
            .iter()
            .map(|k| {
                let k = k.as_str()?;
                (k.starts_with(bus_keys::TOKEN_PREFIX) || k.starts_with(bus_keys::MASTER_PREFIX))
                    .then(|| k.to_owned())
            })
            .collect()
    });
    match keys {
        Some(keys) if part == Part::Auth && !keys.is_empty() => Refresh::Entries(keys),
        _ => Refresh::Part(part),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_part(message: &str) -> Part {
        match event_refresh(message) {
            Refresh::Part(part) => part,
            Refresh::Entries(_) => Part::Auth,
        }
    }

    #[test]
    fn events_name_the_part_to_reload() {
        assert_eq!(event_part(r#"{"resource":"token","version":1}"#), Part::Auth);
        assert_eq!(event_part(r#"{"resource":"master"}"#), Part::Auth);
        assert_eq!(event_part(r#"{"resource":"bindings"}"#), Part::Routing);
        assert_eq!(event_part(r#"{"resource":"providers"}"#), Part::Routing);
        assert_eq!(event_part(r#"{"resource":"all"}"#), Part::All);
        assert_eq!(event_part("garbage"), Part::All);
        assert_eq!(
            event_refresh(r#"{"resource":"token","keys":["auth:token:ab"]}"#),
            Refresh::Entries(vec!["auth:token:ab".into()])
        );
        assert_eq!(
            event_refresh(r#"{"resource":"token","keys":["config:providers"]}"#),
            Refresh::Part(Part::Auth),
            "only auth entries are re-read one by one"
        );
    }

    fn provider_json(id: i64) -> String {
        serde_json::json!({
            "id": id, "name": format!("g#{id}"), "type": "openai", "base_url": "http://up/v1",
            "api_key": "sk", "google_project": "", "google_location": "", "group_id": 1,
            "group": "default", "models": ["m"], "status": "active", "auto_ban": true,
            "weight": 1, "ban_until": 0, "ban_reason": "", "access_token": "",
            "refresh_token": "", "expires_at": 0, "account_id": "", "project_id": "",
            "static_headers": {}, "headers_profile": ""
        })
        .to_string()
    }

    #[tokio::test]
    async fn a_part_that_vanishes_from_an_unmarked_bus_is_kept() {
        use ez_bus::{BusWrite, MemoryBus};
        let bus: Arc<dyn ConfigBus> = Arc::new(MemoryBus::new());
        let set_provider = BusWrite::ReplaceHash {
            key: bus_keys::PROVIDERS.into(),
            fields: vec![("1".into(), provider_json(1))],
        };
        bus.apply(vec![set_provider]).await.unwrap();
        let cache = SnapshotCache::new(bus.clone());
        cache.refresh().await.unwrap();
        assert_eq!(cache.snapshot().providers.len(), 1);

        // The bus lost its data (no `meta:sync` marker): the last good routing stays.
        bus.apply(vec![BusWrite::Delete {
            key: bus_keys::PROVIDERS.into(),
        }])
        .await
        .unwrap();
        cache.refresh_part(Part::Routing).await.unwrap();
        assert_eq!(
            cache.snapshot().providers.len(),
            1,
            "kept while the bus is unmarked"
        );

        // A complete (marked) bus that really has no providers is believed.
        bus.apply(vec![BusWrite::ReplaceHash {
            key: bus_keys::SYNC_SENTINEL.into(),
            fields: vec![("version".into(), "1".into())],
        }])
        .await
        .unwrap();
        cache.refresh_part(Part::Routing).await.unwrap();
        assert!(cache.snapshot().providers.is_empty());
    }

    #[tokio::test]
    async fn named_entries_are_re_read_alone() {
        use ez_bus::{BusWrite, MemoryBus};
        use ez_contract::snapshot::{KeyStatus, TokenSnapshot};
        let token = |key_id| TokenSnapshot {
            key_id,
            master_id: 1,
            issued_at_epoch: 1,
            status: KeyStatus::Active,
            group: "default".into(),
            namespaces: vec!["default".into()],
            default_namespace: "default".into(),
            allow_ips: vec![],
            deny_ips: vec![],
            expires_at: None,
            qps: 0,
            version: 1,
            updated_at: 1,
        };
        // Token keys are hex digests; `d(b)` is the digest of 32 bytes `b`.
        let d = |b: u8| hex::encode([b; 32]);
        let write = |b: u8, key_id| BusWrite::ReplaceHash {
            key: bus_keys::token(&d(b)),
            fields: token(key_id).to_fields(),
        };
        let bus: Arc<dyn ConfigBus> = Arc::new(MemoryBus::new());
        bus.apply(vec![write(0xaa, 1), write(0xbb, 2)]).await.unwrap();
        let cache = SnapshotCache::new(bus.clone());
        cache.refresh().await.unwrap();
        assert_eq!(cache.snapshot().tokens.len(), 2);
        let routing_before = cache.snapshot().providers.clone();

        // A new key, a changed key and a deleted key, named by the event: applied;
        // an entry not named stays as it was read (even if the bus changed meanwhile).
        bus.apply(vec![
            write(0xcc, 3),
            write(0xaa, 10),
            BusWrite::Delete {
                key: bus_keys::token(&d(0xbb)),
            },
        ])
        .await
        .unwrap();
        cache
            .refresh_entries(&[bus_keys::token(&d(0xcc)), bus_keys::token(&d(0xaa))])
            .await
            .unwrap();
        let snapshot = cache.snapshot();
        assert_eq!(snapshot.tokens[&[0xcc; 32]].key_id, 3);
        assert_eq!(snapshot.tokens[&[0xaa; 32]].key_id, 10);
        assert!(
            snapshot.tokens.contains_key(&[0xbb; 32]),
            "not named, not re-read"
        );
        assert!(
            Arc::ptr_eq(&routing_before, &snapshot.providers),
            "routing maps are shared"
        );
        cache.refresh_entries(&[bus_keys::token(&d(0xbb))]).await.unwrap();
        assert!(!cache.snapshot().tokens.contains_key(&[0xbb; 32]));
    }
}
