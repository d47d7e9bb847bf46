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

use crate::scheduler::Job;
use serde::Serialize;
use utoipa::ToSchema;

use std::collections::{BTreeMap, HashMap};

use ez_contract::routing::{BindingSnapshot, ModelSnapshot, ProviderSnapshot, checksum, route_key};

use crate::models::{ModelOverride, describe};
use crate::routing;
use crate::store::{
    ApiKey, Binding, Key, Master, OutboxEntry, PageRequest, ProviderGroup, Store, StoreError,
};

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
    /// Credentials written to `config:providers`.
    pub providers: usize,
    /// Routes written to `config:bindings`.
    pub bindings: usize,
    pub removed: usize,
    /// Outbox entries this sync made unnecessary.
    pub settled_outbox: u64,
    pub version: i64,
    pub duration_ms: u64,
}

#[derive(Clone)]
pub struct BusSync {
    bus: Arc<dyn ConfigBus>,
    store: Store,
    /// Serialises this process's bus writes. Each write reads the database's current
    /// state under the lock, so when two changes race, the later write carries the later
    /// state, and a full sync never interleaves with an incremental write.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Change writes run as their own tasks, so a request dropped by its client (which
    /// cancels the handler) cannot stop a write after the database committed; shutdown
    /// waits for them ([`BusSync::drain`]).
    tasks: tokio_util::task::TaskTracker,
}

/// What a failed write was about; the outbox stores it as (`resource`, `resource_id`)
/// and a retry rewrites the resource from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncTarget {
    /// A master and all its keys.
    Master(i64),
    Key(i64),
    /// One credential's provider entry and the routes of its group.
    Credential(i64),
    /// A provider group's credentials and routes.
    Group(i64),
    /// One route (`namespace`, `public_model`): its binding and model entries.
    Route(String, String),
    /// Every `meta:models` entry.
    Models,
}

impl SyncTarget {
    pub fn resource(&self) -> &'static str {
        match self {
            SyncTarget::Master(_) => "master",
            SyncTarget::Key(_) => "key",
            SyncTarget::Credential(_) => "api_key",
            SyncTarget::Group(_) => "provider_group",
            SyncTarget::Route(..) => "binding",
            SyncTarget::Models => "models",
        }
    }

    pub fn resource_id(&self) -> String {
        match self {
            SyncTarget::Master(id)
            | SyncTarget::Key(id)
            | SyncTarget::Credential(id)
            | SyncTarget::Group(id) => id.to_string(),
            SyncTarget::Route(namespace, model) => route_key(namespace, model),
            SyncTarget::Models => "all".to_owned(),
        }
    }

    pub fn parse(resource: &str, resource_id: &str) -> Option<SyncTarget> {
        let id = || resource_id.parse::<i64>().ok();
        match resource {
            "master" => id().map(SyncTarget::Master),
            "key" => id().map(SyncTarget::Key),
            "api_key" => id().map(SyncTarget::Credential),
            "provider_group" => id().map(SyncTarget::Group),
            // Namespaces cannot contain dots, so the first dot separates the two.
            "binding" => resource_id
                .split_once('.')
                .map(|(ns, model)| SyncTarget::Route(ns.to_owned(), model.to_owned())),
            "models" => Some(SyncTarget::Models),
            _ => None,
        }
    }
}

/// The routing entries a change touches.
#[derive(Debug, Default, Clone)]
pub struct RoutingChange {
    /// Credentials whose provider entry to rewrite (or remove, when gone).
    pub credentials: Vec<i64>,
    /// Groups whose credentials and routes to rewrite.
    pub groups: Vec<i64>,
    /// Routes to rewrite (or remove, when no binding is left).
    pub routes: Vec<(String, String)>,
    /// Rewrite every model entry.
    pub all_models: bool,
    /// What routes on the `credentials` (their group, status, weight and models) is
    /// unchanged — a token refresh, a new key, a ban: their provider entries are rewritten
    /// and the routes they serve are not rebuilt.
    pub entries_only: bool,
}

impl RoutingChange {
    fn targets(&self) -> Vec<SyncTarget> {
        let mut targets: Vec<SyncTarget> = self
            .credentials
            .iter()
            .map(|id| SyncTarget::Credential(*id))
            .collect();
        targets.extend(self.groups.iter().map(|id| SyncTarget::Group(*id)));
        targets.extend(
            self.routes
                .iter()
                .map(|(ns, m)| SyncTarget::Route(ns.clone(), m.clone())),
        );
        if self.all_models {
            targets.push(SyncTarget::Models);
        }
        targets
    }
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
        BusSync {
            bus,
            store,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    pub fn bus(&self) -> &Arc<dyn ConfigBus> {
        &self.bus
    }

    /// Writes a master and all its keys as the database holds them now. Never fails: the
    /// database already holds the change, and a write the bus refuses goes to the outbox.
    pub async fn master_changed(&self, master_id: i64) {
        self.changed(vec![SyncTarget::Master(master_id)]).await;
    }

    /// Writes one key as the database holds it now. Never fails; see
    /// [`BusSync::master_changed`].
    pub async fn key_changed(&self, key_id: i64) {
        self.changed(vec![SyncTarget::Key(key_id)]).await;
    }

    async fn changed(&self, targets: Vec<SyncTarget>) {
        let sync = self.clone();
        let task = self.tasks.spawn(async move {
            let _writer = sync.writer.lock().await;
            for target in targets {
                let result = sync.resync_unlocked(target.clone()).await;
                sync.settle_write(&[target], result).await;
            }
        });
        // Awaited so the response follows the bus; if the request is dropped, the task
        // still runs to the end.
        let _ = task.await;
    }

    /// Waits for change writes still in flight (shutdown).
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    async fn write_master(&self, master: &Master, keys: &[Key]) -> Result<(), SyncError> {
        let (version, now) = (now_unix_nanos(), now_unix());
        let mut writes = vec![master_write(master, version, now)];
        writes.extend(keys.iter().map(|k| token_write(k, master, version, now)));
        self.bus.apply(writes).await?;
        let mut written = vec![bus_keys::master(master.id)];
        written.extend(keys.iter().map(|k| bus_keys::token(&k.token_digest)));
        self.announce_entries(bus_keys::resource::MASTER, version, written)
            .await
    }

    async fn write_key(&self, key: &Key, master: &Master) -> Result<(), SyncError> {
        let (version, now) = (now_unix_nanos(), now_unix());
        self.bus
            .apply(vec![token_write(key, master, version, now)])
            .await?;
        self.announce_entries(
            bus_keys::resource::TOKEN,
            version,
            vec![bus_keys::token(&key.token_digest)],
        )
        .await
    }

    /// Writes the routing entries `change` touches. Never fails; see
    /// [`BusSync::master_changed`].
    pub async fn routing_changed(&self, change: RoutingChange) {
        let sync = self.clone();
        let task = self.tasks.spawn(async move {
            let _writer = sync.writer.lock().await;
            let result = sync.write_routing(&change).await;
            sync.settle_write(&change.targets(), result).await;
        });
        let _ = task.await;
    }

    async fn settle_write(&self, targets: &[SyncTarget], result: Result<(), SyncError>) {
        let Err(e) = result else { return };
        metrics::counter!(crate::metrics::BUS_SYNC_FAILURES).increment(1);
        for target in targets {
            tracing::warn!(error = %e, resource = target.resource(), id = %target.resource_id(), "bus write failed; queued in the sync outbox");
            if let Err(store_error) = self
                .store
                .record_outbox(target.resource(), &target.resource_id(), "upsert", &e.to_string())
                .await
            {
                // Both the bus and the database refused: only a full sync can repair this.
                tracing::error!(error = %store_error, "could not record the failed bus write in the outbox");
            }
        }
    }

    /// Rewrites `target` from the database's current state.
    pub async fn resync(&self, target: SyncTarget) -> Result<(), SyncError> {
        let _writer = self.writer.lock().await;
        self.resync_unlocked(target).await
    }

    async fn resync_unlocked(&self, target: SyncTarget) -> Result<(), SyncError> {
        match target {
            SyncTarget::Master(id) => {
                let master = self.store.get_master(id).await?;
                let keys = self.store.keys_of_master(id).await?;
                self.write_master(&master, &keys).await
            }
            SyncTarget::Key(id) => {
                let key = self.store.get_key(id).await?;
                let master = self.store.get_master(key.master_id).await?;
                self.write_key(&key, &master).await
            }
            SyncTarget::Credential(id) => {
                self.write_routing(&RoutingChange {
                    credentials: vec![id],
                    ..Default::default()
                })
                .await
            }
            SyncTarget::Group(id) => {
                self.write_routing(&RoutingChange {
                    groups: vec![id],
                    ..Default::default()
                })
                .await
            }
            SyncTarget::Route(ns, model) => {
                self.write_routing(&RoutingChange {
                    routes: vec![(ns, model)],
                    ..Default::default()
                })
                .await
            }
            SyncTarget::Models => {
                self.write_routing(&RoutingChange {
                    all_models: true,
                    ..Default::default()
                })
                .await
            }
        }
    }

    /// Rewrites the provider, binding and model entries a change touches, then the
    /// `meta:*` hashes of the snapshots it changed, then announces it.
    async fn write_routing(&self, change: &RoutingChange) -> Result<(), SyncError> {
        let (version, now) = (now_unix_nanos(), now_unix());
        let overrides = self.store.model_overrides().await?;
        let mut groups: HashMap<i64, ProviderGroup> = HashMap::new();
        let mut keys_by_group: HashMap<i64, Vec<ApiKey>> = HashMap::new();
        let mut routes: Vec<(String, String)> = change.routes.clone();
        let mut provider_sets = Vec::new();
        let mut provider_deletes = Vec::new();

        let mut group_ids: Vec<i64> = change.groups.clone();
        for id in &change.credentials {
            match self.store.get_api_key(*id).await {
                Ok(key) if change.entries_only => {
                    let group = self.store.get_group(key.group_id).await?;
                    provider_sets.push((
                        key.id.to_string(),
                        json(&routing::provider_snapshot(&group, &key)),
                    ));
                }
                Ok(key) => group_ids.push(key.group_id),
                Err(StoreError::NotFound(_)) => provider_deletes.push(id.to_string()),
                Err(e) => return Err(e.into()),
            }
        }
        group_ids.sort_unstable();
        group_ids.dedup();
        for gid in group_ids {
            let group = match self.store.get_group(gid).await {
                Ok(group) => group,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let keys = self.store.api_keys_of_group(gid).await?;
            let whole_group = change.groups.contains(&gid);
            for key in keys
                .iter()
                .filter(|k| whole_group || change.credentials.contains(&k.id))
            {
                provider_sets.push((key.id.to_string(), json(&routing::provider_snapshot(&group, key))));
            }
            for b in self.store.bindings_of_group(gid).await? {
                routes.push((b.namespace, b.public_model));
            }
            keys_by_group.insert(gid, keys);
            groups.insert(gid, group);
        }
        routes.sort();
        routes.dedup();

        let mut binding_sets = Vec::new();
        let mut binding_deletes = Vec::new();
        let mut model_sets = Vec::new();
        for (namespace, public_model) in &routes {
            let field = route_key(namespace, public_model);
            let bindings = self.store.bindings_for_route(namespace, public_model).await?;
            for b in &bindings {
                if let std::collections::hash_map::Entry::Vacant(slot) = groups.entry(b.group_id) {
                    match self.store.get_group(b.group_id).await {
                        Ok(group) => {
                            keys_by_group.insert(b.group_id, self.store.api_keys_of_group(b.group_id).await?);
                            slot.insert(group);
                        }
                        Err(StoreError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            let refs: Vec<&Binding> = bindings.iter().collect();
            match routing::binding_snapshot(&refs, &groups, &keys_by_group, now) {
                Some(snapshot) => {
                    model_sets.push((field.clone(), json(&model_entry(&snapshot, &overrides))));
                    binding_sets.push((field, json(&snapshot)));
                }
                None => binding_deletes.push(field),
            }
        }

        let mut writes = Vec::new();
        let mut touched = Vec::new();
        if !provider_sets.is_empty() || !provider_deletes.is_empty() {
            touched.push((
                bus_keys::PROVIDERS,
                bus_keys::PROVIDERS_META,
                bus_keys::resource::PROVIDERS,
            ));
        }
        if !binding_sets.is_empty() || !binding_deletes.is_empty() {
            touched.push((
                bus_keys::BINDINGS,
                bus_keys::BINDINGS_META,
                bus_keys::resource::BINDINGS,
            ));
            touched.push((
                bus_keys::MODELS,
                bus_keys::MODELS_META,
                bus_keys::resource::MODELS,
            ));
        }
        writes.push(BusWrite::SetFields {
            key: bus_keys::PROVIDERS.into(),
            fields: provider_sets,
        });
        writes.push(BusWrite::DeleteFields {
            key: bus_keys::PROVIDERS.into(),
            fields: provider_deletes,
        });
        writes.push(BusWrite::SetFields {
            key: bus_keys::BINDINGS.into(),
            fields: binding_sets,
        });
        writes.push(BusWrite::DeleteFields {
            key: bus_keys::BINDINGS.into(),
            fields: binding_deletes.clone(),
        });
        if change.all_models {
            let all = self.all_model_entries(&overrides).await?;
            writes.push(BusWrite::ReplaceHash {
                key: bus_keys::MODELS.into(),
                fields: all,
            });
            if !touched.iter().any(|t| t.0 == bus_keys::MODELS) {
                touched.push((
                    bus_keys::MODELS,
                    bus_keys::MODELS_META,
                    bus_keys::resource::MODELS,
                ));
            }
        } else {
            writes.push(BusWrite::SetFields {
                key: bus_keys::MODELS.into(),
                fields: model_sets,
            });
            writes.push(BusWrite::DeleteFields {
                key: bus_keys::MODELS.into(),
                fields: binding_deletes,
            });
        }
        self.bus.apply(writes).await?;

        // The checksum covers the whole snapshot, so it is recomputed from what the bus
        // now holds (one read per changed snapshot, not per entity).
        let mut metas = Vec::new();
        for (hash, meta, _) in &touched {
            let entries = self.bus.hash_get_all(hash).await?;
            let sum = checksum(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            metas.push(BusWrite::ReplaceHash {
                key: (*meta).to_owned(),
                fields: meta_fields(meta, version, now, sum),
            });
        }
        self.bus.apply(metas).await?;
        for (_, _, resource) in touched {
            self.announce(resource, version).await?;
        }
        Ok(())
    }

    /// Every route's model entry, from the current bindings.
    async fn all_model_entries(
        &self,
        overrides: &HashMap<String, ModelOverride>,
    ) -> Result<Vec<(String, String)>, SyncError> {
        let snapshot = self.routing_snapshot(now_unix()).await?;
        Ok(snapshot
            .bindings
            .iter()
            .map(|(field, b)| (field.clone(), json(&model_entry(b, overrides))))
            .collect())
    }

    /// The complete routing snapshot the database implies.
    pub async fn routing_snapshot(&self, now: i64) -> Result<RoutingSnapshot, SyncError> {
        let groups: HashMap<i64, ProviderGroup> = self
            .store
            .all_groups()
            .await?
            .into_iter()
            .map(|g| (g.id, g))
            .collect();
        let mut keys_by_group: HashMap<i64, Vec<ApiKey>> = HashMap::new();
        for key in self.store.all_api_keys().await? {
            keys_by_group.entry(key.group_id).or_default().push(key);
        }
        let mut providers = Vec::new();
        for (gid, keys) in &keys_by_group {
            let Some(group) = groups.get(gid) else { continue };
            providers.extend(
                keys.iter()
                    .map(|k| (k.id.to_string(), routing::provider_snapshot(group, k))),
            );
        }
        let all_bindings = self.store.all_bindings().await?;
        let mut by_route: BTreeMap<String, Vec<&Binding>> = BTreeMap::new();
        for b in &all_bindings {
            by_route
                .entry(route_key(&b.namespace, &b.public_model))
                .or_default()
                .push(b);
        }
        let bindings = by_route
            .into_iter()
            .filter_map(|(field, list)| {
                routing::binding_snapshot(&list, &groups, &keys_by_group, now).map(|s| (field, s))
            })
            .collect();
        Ok(RoutingSnapshot { providers, bindings })
    }

    /// Announces auth entries written, naming them (`keys`) so balancers re-read only
    /// those; a long list is left out and balancers reload the whole auth part.
    async fn announce_entries(
        &self,
        resource: &str,
        version: i64,
        keys: Vec<String>,
    ) -> Result<(), SyncError> {
        const MAX_NAMED: usize = 1_000;
        if keys.len() > MAX_NAMED {
            return self.announce(resource, version).await;
        }
        let payload = serde_json::json!({
            "resource": resource,
            "version": version,
            "timestamp": now_unix(),
            "keys": keys,
        });
        self.bus
            .publish(bus_keys::REFRESH_CHANNEL, &payload.to_string())
            .await?;
        Ok(())
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

    /// Rebuilds every entry from the database, removes entries the database does not
    /// have, marks the bus as complete (`meta:sync`) and settles the outbox entries that
    /// the rebuild covered.
    pub async fn full_sync(&self) -> Result<SyncReport, SyncError> {
        let _writer = self.writer.lock().await;
        let started = std::time::Instant::now();
        // Entries as they are before the reads below; one that changes later may describe
        // a change the reads miss, and stays open.
        let open_entries = self.store.open_outbox().await?;
        let desired = self.desired_entries().await?;
        let version = desired.version;
        let now = now_unix();
        let live: HashSet<&str> = desired.entries.iter().map(|(key, _)| key.as_str()).collect();
        let mut stale = Vec::new();
        for prefix in [bus_keys::MASTER_PREFIX, bus_keys::TOKEN_PREFIX] {
            stale.extend(
                self.bus
                    .keys_with_prefix(prefix)
                    .await?
                    .into_iter()
                    .filter(|k| !live.contains(k.as_str())),
            );
        }
        let removed = stale.len();
        let mut writes: Vec<BusWrite> = Vec::with_capacity(desired.entries.len() + removed + 1);
        writes.extend(stale.into_iter().map(|key| BusWrite::Delete { key }));
        let (masters, keys) = (desired.masters, desired.keys);
        writes.extend(
            desired
                .entries
                .into_iter()
                .map(|(key, fields)| BusWrite::ReplaceHash { key, fields }),
        );
        // The routing snapshot: each hash replaced whole, with its meta.
        let routing = self.desired_routing_entries(now).await?;
        let (providers, bindings) = (routing.providers, routing.bindings);
        for (hash, fields) in routing.hashes {
            let meta = match hash {
                bus_keys::PROVIDERS => bus_keys::PROVIDERS_META,
                bus_keys::BINDINGS => bus_keys::BINDINGS_META,
                _ => bus_keys::MODELS_META,
            };
            let sum = checksum(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            writes.push(BusWrite::ReplaceHash {
                key: hash.to_owned(),
                fields,
            });
            writes.push(BusWrite::ReplaceHash {
                key: meta.to_owned(),
                fields: meta_fields(meta, version, now, sum),
            });
        }
        writes.push(BusWrite::ReplaceHash {
            key: bus_keys::SYNC_SENTINEL.to_owned(),
            fields: vec![
                ("version".into(), version.to_string()),
                ("updated_at".into(), now.to_string()),
            ],
        });

        let mut batch = Vec::with_capacity(FULL_SYNC_BATCH);
        for write in writes {
            batch.push(write);
            if batch.len() == FULL_SYNC_BATCH {
                self.bus.apply(std::mem::take(&mut batch)).await?;
            }
        }
        self.bus.apply(batch).await?;
        self.announce(bus_keys::resource::ALL, version).await?;
        let settled = self.store.settle_outbox(&open_entries).await?;

        let report = SyncReport {
            masters,
            keys,
            providers,
            bindings,
            removed,
            settled_outbox: settled,
            version,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        tracing::info!(
            masters = report.masters,
            keys = report.keys,
            removed,
            settled,
            duration_ms = report.duration_ms,
            "full bus sync done"
        );
        Ok(report)
    }
}

/// The routing part of the snapshot: provider and binding entries by field.
pub struct RoutingSnapshot {
    pub providers: Vec<(String, ProviderSnapshot)>,
    pub bindings: Vec<(String, BindingSnapshot)>,
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// What clients can expect of a route: the registry's description of the upstream model
/// its first routable candidate sends (or of the public name when none routes).
pub fn model_entry(binding: &BindingSnapshot, overrides: &HashMap<String, ModelOverride>) -> ModelSnapshot {
    let upstream = binding
        .candidates
        .iter()
        .find_map(|c| c.upstreams.values().next())
        .map_or(binding.public_model.as_str(), String::as_str);
    let (info, _) = describe(upstream, overrides);
    ModelSnapshot {
        name: route_key(&binding.namespace, &binding.public_model),
        kind: info.kind,
        context_window: info.context_window.unwrap_or(0),
        supports_vision: info.supports_vision,
        supports_functions: info.supports_functions,
        supports_tool_choice: info.supports_tool_choice,
        supports_fim: info.supports_fim,
        supports_reasoning: info.supports_reasoning,
        supports_json_output: info.supports_json_output,
        max_output_tokens: info.max_output_tokens.unwrap_or(0),
        input_price_per_mtok: info.input_price_per_mtok,
        output_price_per_mtok: info.output_price_per_mtok,
    }
}

/// `version` (ns), `updated_at` (s), `checksum`; the models meta also names its source.
fn meta_fields(meta: &str, version: i64, now: i64, checksum: String) -> Vec<(String, String)> {
    let mut fields = vec![
        ("version".to_owned(), version.to_string()),
        ("updated_at".to_owned(), now.to_string()),
        ("checksum".to_owned(), checksum),
    ];
    if meta == bus_keys::MODELS_META {
        let catalog = crate::models::Catalog::builtin();
        fields.push((
            "source".to_owned(),
            format!("{} ({}) + admin overrides", catalog.source, catalog.updated),
        ));
    }
    fields
}

/// The three routing hashes the database implies, field by field.
pub struct RoutingEntries {
    pub providers: usize,
    pub bindings: usize,
    /// (`config:providers` | `config:bindings` | `meta:models`, fields).
    pub hashes: Vec<(&'static str, Vec<(String, String)>)>,
}

impl BusSync {
    /// What `config:providers`, `config:bindings` and `meta:models` should hold.
    pub async fn desired_routing_entries(&self, now: i64) -> Result<RoutingEntries, SyncError> {
        let routing = self.routing_snapshot(now).await?;
        let overrides = self.store.model_overrides().await?;
        let providers = routing
            .providers
            .iter()
            .map(|(f, p)| (f.clone(), json(p)))
            .collect();
        let models = routing
            .bindings
            .iter()
            .map(|(f, b)| (f.clone(), json(&model_entry(b, &overrides))))
            .collect();
        let bindings = routing
            .bindings
            .iter()
            .map(|(f, b)| (f.clone(), json(b)))
            .collect();
        Ok(RoutingEntries {
            providers: routing.providers.len(),
            bindings: routing.bindings.len(),
            hashes: vec![
                (bus_keys::PROVIDERS, providers),
                (bus_keys::BINDINGS, bindings),
                (bus_keys::MODELS, models),
            ],
        })
    }
}

/// Every bus entry the database implies, as a full sync writes it.
pub struct DesiredEntries {
    pub version: i64,
    pub masters: usize,
    pub keys: usize,
    /// (bus key, fields), masters first.
    pub entries: Vec<(String, Vec<(String, String)>)>,
}

impl BusSync {
    /// What the bus should hold according to the database right now.
    pub async fn desired_entries(&self) -> Result<DesiredEntries, SyncError> {
        let masters = self.store.all_masters().await?;
        let keys = self.store.all_keys().await?;
        let (version, now) = (now_unix_nanos(), now_unix());
        let by_id: std::collections::HashMap<i64, &Master> = masters.iter().map(|m| (m.id, m)).collect();
        let mut entries: Vec<(String, Vec<(String, String)>)> = masters
            .iter()
            .map(|m| {
                (
                    bus_keys::master(m.id),
                    master_snapshot(m, version, now).to_fields(),
                )
            })
            .collect();
        for key in &keys {
            let Some(master) = by_id.get(&key.master_id) else {
                continue;
            };
            entries.push((
                bus_keys::token(&key.token_digest),
                token_snapshot(key, master, version, now).to_fields(),
            ));
        }
        Ok(DesiredEntries {
            version,
            masters: masters.len(),
            keys: keys.len(),
            entries,
        })
    }
}

/// Retries the outbox: each due entry's resource is rewritten from the database; a
/// failure reschedules it with exponential backoff, and after `max_retries` failures it
/// is `dead` (visible in `GET /admin/sync/outbox`; the next full sync settles it).
pub struct OutboxRetry {
    pub sync: BusSync,
    pub store: Store,
    pub every: std::time::Duration,
    pub batch_size: i64,
    pub max_retries: i64,
}

/// The longest wait between two retries of one entry.
const MAX_BACKOFF_SECS: i64 = 300;

impl OutboxRetry {
    /// Seconds to wait after the `attempts`-th failed retry: the interval, doubled each
    /// time, capped at five minutes.
    pub fn backoff_secs(&self, attempts: i64) -> i64 {
        let base = i64::try_from(self.every.as_secs()).unwrap_or(1).max(1);
        let factor = 1_i64
            .checked_shl(u32::try_from(attempts.clamp(0, 20)).unwrap_or(20))
            .unwrap_or(i64::MAX);
        base.saturating_mul(factor).min(MAX_BACKOFF_SECS)
    }

    /// One pass over the entries due at `now`. Stops at the first failure: the bus is then
    /// most likely down, and the remaining entries keep their turn.
    pub async fn run_at(&self, now: i64) -> anyhow::Result<usize> {
        let due: Vec<OutboxEntry> = self.store.due_outbox(now, self.batch_size).await?;
        let mut done = 0;
        for entry in due {
            let result = match SyncTarget::parse(&entry.resource, &entry.resource_id) {
                Some(target) => self.sync.resync(target).await.map_err(|e| e.to_string()),
                None => Err(format!("unknown resource {:?}", entry.resource)),
            };
            match result {
                Ok(()) => {
                    self.store.outbox_done(&entry).await?;
                    done += 1;
                }
                Err(error) => {
                    let attempts = entry.attempts + 1;
                    let dead = attempts >= self.max_retries
                        || SyncTarget::parse(&entry.resource, &entry.resource_id).is_none();
                    self.store
                        .outbox_retry_failed(&entry, now + self.backoff_secs(attempts), &error, dead)
                        .await?;
                    if dead {
                        tracing::error!(id = entry.id, resource = %entry.resource, attempts, "sync outbox entry is dead");
                    }
                    anyhow::bail!("outbox retry failed: {error}");
                }
            }
        }
        Ok(done)
    }
}

#[async_trait::async_trait]
impl Job for OutboxRetry {
    fn name(&self) -> &'static str {
        "sync_outbox_retry"
    }

    fn interval(&self) -> std::time::Duration {
        self.every
    }

    async fn run_once(&self) -> anyhow::Result<()> {
        self.run_at(now_unix()).await.map(|_| ())
    }
}

/// Notices a bus that lost its data (e.g. Redis restarted without persistence: the
/// `meta:sync` marker of the last full sync is gone) and rebuilds it.
pub struct BusWatchdog {
    pub sync: BusSync,
    pub every: std::time::Duration,
}

#[async_trait::async_trait]
impl Job for BusWatchdog {
    fn name(&self) -> &'static str {
        "bus_watchdog"
    }

    fn interval(&self) -> std::time::Duration {
        self.every
    }

    async fn run_once(&self) -> anyhow::Result<()> {
        let marker = self.sync.bus.hash_get(bus_keys::SYNC_SENTINEL, "version").await?;
        if marker.is_none() {
            tracing::warn!("the bus has lost its data (no meta:sync marker); rebuilding it");
            metrics::counter!(crate::metrics::BUS_REBUILDS).increment(1);
            self.sync.full_sync().await?;
            return Ok(());
        }
        // Dead outbox entries are changes the bus never got; now that it answers, a full
        // sync writes them (and settles the entries).
        let (dead, _) = self
            .sync
            .store
            .list_outbox(
                Some(crate::store::OutboxStatus::Dead),
                PageRequest {
                    page: 1,
                    page_size: 1,
                },
            )
            .await?;
        if !dead.is_empty() {
            tracing::warn!("the bus answers again and dead outbox entries exist; rebuilding it");
            metrics::counter!(crate::metrics::BUS_REBUILDS).increment(1);
            self.sync.full_sync().await?;
        }
        Ok(())
    }
}

/// Republishes `meta:models` from the registry (catalogue + overrides) and the current
/// bindings, picking up overrides written by other control planes.
pub struct ModelRegistryRefresh {
    pub sync: BusSync,
    pub every: std::time::Duration,
}

#[async_trait::async_trait]
impl Job for ModelRegistryRefresh {
    fn name(&self) -> &'static str {
        "model_registry_refresh"
    }

    fn interval(&self) -> std::time::Duration {
        self.every
    }

    async fn run_once(&self) -> anyhow::Result<()> {
        self.sync
            .write_routing(&RoutingChange {
                all_models: true,
                ..Default::default()
            })
            .await?;
        Ok(())
    }
}
