//! The immutable routing snapshot a balancer serves from, loaded from the bus.

use std::collections::HashMap;
use std::sync::Arc;

use ez_bus::{BusError, ConfigBus};
use ez_contract::bus_keys;
use ez_contract::routing::{BindingSnapshot, ProviderSnapshot};
use ez_contract::snapshot::{MasterSnapshot, TokenSnapshot};

use crate::metrics::GroupMetrics;

/// Everything a request needs, by the key it is looked up with. The maps are
/// shared between successive snapshots when only the other part changed (a routing
/// change does not copy 100,000 token entries).
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// By SHA-256 of the child key (raw bytes). Entries are shared (`Arc`) so the map's
    /// buckets stay small and copying the map for a one-entry change is cheap.
    pub tokens: Arc<HashMap<TokenKey, Arc<TokenSnapshot>>>,
    pub masters: Arc<HashMap<i64, MasterSnapshot>>,
    /// By credential id.
    pub providers: Arc<HashMap<i64, ProviderSnapshot>>,
    /// By `namespace.public_model`.
    pub bindings: Arc<HashMap<String, BindingSnapshot>>,
    /// The metric handles of each provider group of `providers`, by group id.
    pub upstream_metrics: Arc<HashMap<i64, Arc<GroupMetrics>>>,
    /// Unix seconds when it was loaded.
    pub loaded_at: i64,
}

/// Which part of the snapshot a refresh event concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Child keys and masters.
    Auth,
    /// Providers and bindings.
    Routing,
    All,
}

impl Part {
    /// From the `resource` of a `dp:config:refresh` event; unknown resources reload all.
    pub fn of_resource(resource: &str) -> Part {
        match resource {
            bus_keys::resource::TOKEN | bus_keys::resource::MASTER => Part::Auth,
            bus_keys::resource::PROVIDERS | bus_keys::resource::BINDINGS | bus_keys::resource::MODELS => {
                Part::Routing
            }
            _ => Part::All,
        }
    }
}

/// SHA-256 of a child key.
pub type TokenKey = [u8; 32];

type AuthMaps = (
    HashMap<TokenKey, Arc<TokenSnapshot>>,
    HashMap<i64, MasterSnapshot>,
);
type RoutingMaps = (HashMap<i64, ProviderSnapshot>, HashMap<String, BindingSnapshot>);

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        self.part_is_empty(Part::All)
    }

    pub fn part_is_empty(&self, part: Part) -> bool {
        let auth = self.tokens.is_empty() && self.masters.is_empty();
        let routing = self.providers.is_empty() && self.bindings.is_empty();
        match part {
            Part::Auth => auth,
            Part::Routing => routing,
            Part::All => auth && routing,
        }
    }

    /// Reads the whole snapshot from the bus.
    pub async fn load(bus: &dyn ConfigBus, now: i64) -> Result<Snapshot, BusError> {
        Snapshot::default().reload(bus, Part::All, now).await
    }

    /// A new snapshot with `part` read again from the bus and the rest shared with this
    /// one. Entries that do not parse are skipped and logged: one bad entry must not take
    /// routing down.
    pub async fn reload(&self, bus: &dyn ConfigBus, part: Part, now: i64) -> Result<Snapshot, BusError> {
        let mut next = Snapshot {
            loaded_at: now,
            ..self.clone()
        };
        if matches!(part, Part::Auth | Part::All) {
            let (tokens, masters) = load_auth(bus).await?;
            next.tokens = Arc::new(tokens);
            next.masters = Arc::new(masters);
        }
        if matches!(part, Part::Routing | Part::All) {
            let (providers, bindings) = load_routing(bus).await?;
            crate::route::warn_unresolved(&self.bindings, &bindings);
            next.upstream_metrics = Arc::new(GroupMetrics::for_groups(&providers));
            next.providers = Arc::new(providers);
            next.bindings = Arc::new(bindings);
        }
        Ok(next)
    }
}

/// Hashes read per bulk request: raw entries are parsed batch by batch, so a load never
/// holds every raw hash at once.
const LOAD_BATCH: usize = 1_000;

async fn load_auth(bus: &dyn ConfigBus) -> Result<AuthMaps, BusError> {
    let token_keys = bus.keys_with_prefix(bus_keys::TOKEN_PREFIX).await?;
    let mut tokens = HashMap::with_capacity(token_keys.len());
    for chunk in token_keys.chunks(LOAD_BATCH) {
        for (key, fields) in chunk.iter().zip(bus.hash_get_all_many(chunk).await?) {
            apply_token(&mut tokens, key, &fields);
        }
    }
    let master_keys = bus.keys_with_prefix(bus_keys::MASTER_PREFIX).await?;
    let mut masters = HashMap::with_capacity(master_keys.len());
    for chunk in master_keys.chunks(LOAD_BATCH) {
        for (key, fields) in chunk.iter().zip(bus.hash_get_all_many(chunk).await?) {
            apply_master(&mut masters, key, &fields);
        }
    }
    Ok((tokens, masters))
}

/// Puts the entry of `key` (`auth:token:{digest}`) into `tokens`, or removes it when the
/// hash is gone.
fn apply_token(
    tokens: &mut HashMap<TokenKey, Arc<TokenSnapshot>>,
    key: &str,
    fields: &HashMap<String, String>,
) {
    let mut digest = [0u8; 32];
    let Some(hex_digest) = key.strip_prefix(bus_keys::TOKEN_PREFIX) else {
        return;
    };
    if hex::decode_to_slice(hex_digest, &mut digest).is_err() {
        tracing::warn!("skipping a token entry whose key is not a SHA-256 digest");
        return;
    }
    if fields.is_empty() {
        tokens.remove(&digest);
        return;
    }
    match TokenSnapshot::from_fields(fields) {
        Ok(token) => {
            tokens.insert(digest, Arc::new(token));
        }
        Err(e) => tracing::warn!(error = %e, "skipping a malformed token entry"),
    }
}

fn apply_master(masters: &mut HashMap<i64, MasterSnapshot>, key: &str, fields: &HashMap<String, String>) {
    let Some(id) = key
        .strip_prefix(bus_keys::MASTER_PREFIX)
        .and_then(|id| id.parse().ok())
    else {
        return;
    };
    if fields.is_empty() {
        masters.remove(&id);
        return;
    }
    match MasterSnapshot::from_fields(fields) {
        Ok(master) => {
            masters.insert(master.id, master);
        }
        Err(e) => tracing::warn!(error = %e, "skipping a malformed master entry"),
    }
}

impl Snapshot {
    /// A new snapshot with only the named `auth:token:*` / `auth:master:*` entries read
    /// again (a refresh event that names what it wrote).
    pub async fn reload_entries(
        &self,
        bus: &dyn ConfigBus,
        keys: &[String],
        now: i64,
    ) -> Result<Snapshot, BusError> {
        let hashes = bus.hash_get_all_many(keys).await?;
        let mut next = Snapshot {
            loaded_at: now,
            ..self.clone()
        };
        // Only a map that changes is copied.
        if keys.iter().any(|k| k.starts_with(bus_keys::TOKEN_PREFIX)) {
            let tokens = Arc::make_mut(&mut next.tokens);
            for (key, fields) in keys.iter().zip(&hashes) {
                apply_token(tokens, key, fields);
            }
        }
        if keys.iter().any(|k| k.starts_with(bus_keys::MASTER_PREFIX)) {
            let masters = Arc::make_mut(&mut next.masters);
            for (key, fields) in keys.iter().zip(&hashes) {
                apply_master(masters, key, fields);
            }
        }
        Ok(next)
    }
}

async fn load_routing(bus: &dyn ConfigBus) -> Result<RoutingMaps, BusError> {
    let mut providers = HashMap::new();
    for (field, value) in bus.hash_get_all(bus_keys::PROVIDERS).await? {
        match serde_json::from_str::<ProviderSnapshot>(&value) {
            Ok(provider) => {
                providers.insert(provider.id, provider);
            }
            Err(e) => tracing::warn!(error = %e, field, "skipping a malformed provider entry"),
        }
    }
    let mut bindings = HashMap::new();
    for (field, value) in bus.hash_get_all(bus_keys::BINDINGS).await? {
        match serde_json::from_str::<BindingSnapshot>(&value) {
            Ok(binding) => {
                bindings.insert(field, binding);
            }
            Err(e) => tracing::warn!(error = %e, field, "skipping a malformed binding entry"),
        }
    }
    Ok((providers, bindings))
}
