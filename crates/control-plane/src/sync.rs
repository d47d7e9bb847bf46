//! Pushes the CP's state to the config bus (SPEC §7).
//!
//! Every change to a master or key rewrites only the affected hashes and then announces
//! itself on `dp:config:refresh`. [`BusSync::full_sync`] rebuilds everything from the
//! database (start-up, `POST /admin/sync`) and removes entries the database no longer has.

use std::collections::HashSet;
use std::sync::Arc;

use ez_bus::{BusError, BusWrite, ConfigBus};
use ez_contract::snapshot::{MasterSnapshot, TokenSnapshot};
use ez_contract::time::{now_unix, now_unix_nanos};
use ez_contract::{bus_keys, snapshot::KeyStatus};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{Key, Master, Store, StoreError};

/// Writes per atomic batch during a full sync: large enough to be fast, small enough
/// that one batch never blocks Redis noticeably.
const FULL_SYNC_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SyncReport {
    pub masters: usize,
    pub keys: usize,
    pub removed: usize,
    pub version: i64,
    pub duration_ms: u64,
}

#[derive(Clone)]
pub struct BusSync {
    bus: Arc<dyn ConfigBus>,
    store: Store,
}

pub fn master_snapshot(master: &Master, version: i64, updated_at: i64) -> MasterSnapshot {
    MasterSnapshot {
        id: master.id,
        status: master.status,
        epoch: master.epoch,
        group: master.group.clone(),
        global_qps: master.global_qps,
        namespaces: master.namespaces.clone(),
        default_namespace: master.default_namespace.clone(),
        version,
        updated_at,
    }
}

pub fn token_snapshot(key: &Key, master: &Master, version: i64, updated_at: i64) -> TokenSnapshot {
    // Stored lists were validated on the way in; an entry that no longer parses is
    // dropped from an allow list only by making the key unusable, never more permissive.
    let parse = |list: &[String]| -> (Vec<ipnet::IpNet>, bool) {
        let parsed: Vec<ipnet::IpNet> = list.iter().filter_map(|s| s.parse().ok()).collect();
        let complete = parsed.len() == list.len();
        (parsed, complete)
    };
    let (allow_ips, allow_ok) = parse(&key.allow_ips);
    let (deny_ips, deny_ok) = parse(&key.deny_ips);
    let status = if allow_ok && deny_ok {
        key.status
    } else {
        KeyStatus::Suspended
    };
    TokenSnapshot {
        key_id: key.id,
        master_id: key.master_id,
        issued_at_epoch: key.issued_at_epoch,
        status,
        group: master.group.clone(),
        namespaces: key.namespaces.clone(),
        default_namespace: key.default_namespace.clone(),
        allow_ips,
        deny_ips,
        expires_at: key.expires_at,
        qps: key.qps.unwrap_or(0),
        version,
        updated_at,
    }
}

fn master_write(master: &Master, version: i64, now: i64) -> BusWrite {
    BusWrite::ReplaceHash {
        key: bus_keys::master(master.id),
        fields: master_snapshot(master, version, now).to_fields(),
    }
}

fn token_write(key: &Key, master: &Master, version: i64, now: i64) -> BusWrite {
    BusWrite::ReplaceHash {
        key: bus_keys::token(&key.token_digest),
        fields: token_snapshot(key, master, version, now).to_fields(),
    }
}

impl BusSync {
    pub fn new(bus: Arc<dyn ConfigBus>, store: Store) -> BusSync {
        BusSync { bus, store }
    }

    pub fn bus(&self) -> &Arc<dyn ConfigBus> {
        &self.bus
    }

    /// Writes a master and the given keys of it (all of them when the master's own
    /// fields that keys carry, such as `group`, changed).
    pub async fn master_changed(&self, master: &Master, keys: &[Key]) -> Result<(), SyncError> {
        let (version, now) = (now_unix_nanos(), now_unix());
        let mut writes = vec![master_write(master, version, now)];
        writes.extend(keys.iter().map(|k| token_write(k, master, version, now)));
        self.bus.apply(writes).await?;
        self.announce(bus_keys::resource::MASTER, version).await
    }

    pub async fn key_changed(&self, key: &Key, master: &Master) -> Result<(), SyncError> {
        let (version, now) = (now_unix_nanos(), now_unix());
        self.bus
            .apply(vec![token_write(key, master, version, now)])
            .await?;
        self.announce(bus_keys::resource::TOKEN, version).await
    }

    /// Logs instead of failing: the database already holds the change, and the next full
    /// sync (start-up, `POST /admin/sync`) writes it to the bus.
    pub async fn best_effort(&self, what: &str, result: Result<(), SyncError>) {
        if let Err(e) = result {
            metrics::counter!("ez_bus_sync_failures_total").increment(1);
            tracing::warn!(error = %e, change = what, "bus write failed; the next full sync will repair it");
        }
    }

    async fn announce(&self, resource: &str, version: i64) -> Result<(), SyncError> {
        let payload = serde_json::json!({
            "resource": resource,
            "version": version,
            "timestamp": now_unix(),
        });
        self.bus
            .publish(bus_keys::REFRESH_CHANNEL, &payload.to_string())
            .await?;
        Ok(())
    }

    /// Rebuilds every master and key entry from the database and removes the ones the
    /// database does not have.
    pub async fn full_sync(&self) -> Result<SyncReport, SyncError> {
        let started = std::time::Instant::now();
        let masters = self.store.all_masters().await?;
        let keys = self.store.all_keys().await?;
        let (version, now) = (now_unix_nanos(), now_unix());

        let by_id: std::collections::HashMap<i64, &Master> = masters.iter().map(|m| (m.id, m)).collect();
        let mut writes: Vec<BusWrite> = masters.iter().map(|m| master_write(m, version, now)).collect();
        let mut live: HashSet<String> = masters.iter().map(|m| bus_keys::master(m.id)).collect();
        for key in &keys {
            let Some(master) = by_id.get(&key.master_id) else {
                continue;
            };
            live.insert(bus_keys::token(&key.token_digest));
            writes.push(token_write(key, master, version, now));
        }

        let mut stale = Vec::new();
        for prefix in [bus_keys::MASTER_PREFIX, bus_keys::TOKEN_PREFIX] {
            stale.extend(
                self.bus
                    .keys_with_prefix(prefix)
                    .await?
                    .into_iter()
                    .filter(|k| !live.contains(k)),
            );
        }
        let removed = stale.len();
        writes.extend(stale.into_iter().map(|key| BusWrite::Delete { key }));

        let mut batch = Vec::with_capacity(FULL_SYNC_BATCH);
        for write in writes {
            batch.push(write);
            if batch.len() == FULL_SYNC_BATCH {
                self.bus.apply(std::mem::take(&mut batch)).await?;
            }
        }
        self.bus.apply(batch).await?;
        self.announce(bus_keys::resource::ALL, version).await?;

        let report = SyncReport {
            masters: masters.len(),
            keys: keys.len(),
            removed,
            version,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        tracing::info!(
            masters = report.masters,
            keys = report.keys,
            removed,
            duration_ms = report.duration_ms,
            "full bus sync done"
        );
        Ok(report)
    }
}
