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

use crate::snapshot::Snapshot;

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
        let loaded = Snapshot::load(self.bus.as_ref(), now_unix()).await?;
        if loaded.is_empty() && !self.get().is_empty() {
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

    /// Keeps the snapshot current until `stop` turns true: reloads on every refresh event
    /// and every `reconcile` interval; re-subscribes when the subscription drops.
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
                loop {
                    let event = async {
                        match events.as_mut() {
                            Some(stream) => stream.next().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        message = event => {
                            if message.is_none() {
                                break; // subscription lost: re-subscribe
                            }
                        }
                        () = tokio::time::sleep(reconcile) => {}
                    }
                    if let Err(e) = cache.refresh().await {
                        tracing::warn!(error = %e, "snapshot reload failed; serving the last good snapshot");
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }
}
