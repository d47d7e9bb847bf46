//! The immutable routing snapshot a balancer serves from, loaded from the bus.

use std::collections::HashMap;
use std::sync::Arc;

use ez_bus::{BusError, ConfigBus};
use ez_contract::bus_keys;
use ez_contract::routing::{BindingSnapshot, ProviderSnapshot};
use ez_contract::snapshot::{MasterSnapshot, TokenSnapshot};

/// Everything a request needs, by the key it is looked up with. The four maps are
/// shared between successive snapshots when only the other part changed (a routing
/// change does not copy 100,000 token entries).
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// By SHA-256 hex of the child key.
    pub tokens: Arc<HashMap<String, TokenSnapshot>>,
    pub masters: Arc<HashMap<i64, MasterSnapshot>>,
    /// By credential id.
    pub providers: Arc<HashMap<i64, ProviderSnapshot>>,
    /// By `namespace.public_model`.
    pub bindings: Arc<HashMap<String, BindingSnapshot>>,
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

type AuthMaps = (HashMap<String, TokenSnapshot>, HashMap<i64, MasterSnapshot>);
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
            next.providers = Arc::new(providers);
            next.bindings = Arc::new(bindings);
        }
        Ok(next)
    }
}

async fn load_auth(bus: &dyn ConfigBus) -> Result<AuthMaps, BusError> {
    let token_keys = bus.keys_with_prefix(bus_keys::TOKEN_PREFIX).await?;
    let token_hashes = bus.hash_get_all_many(&token_keys).await?;
    let mut tokens = HashMap::with_capacity(token_keys.len());
    for (key, fields) in token_keys.iter().zip(token_hashes) {
        if fields.is_empty() {
            continue; // deleted between the listing and the read
        }
        match TokenSnapshot::from_fields(&fields) {
            Ok(token) => {
                let digest = key.trim_start_matches(bus_keys::TOKEN_PREFIX).to_owned();
                tokens.insert(digest, token);
            }
            Err(e) => tracing::warn!(error = %e, "skipping a malformed token entry"),
        }
    }
    let master_keys = bus.keys_with_prefix(bus_keys::MASTER_PREFIX).await?;
    let master_hashes = bus.hash_get_all_many(&master_keys).await?;
    let mut masters = HashMap::with_capacity(master_keys.len());
    for fields in master_hashes {
        if fields.is_empty() {
            continue;
        }
        match MasterSnapshot::from_fields(&fields) {
            Ok(master) => {
                masters.insert(master.id, master);
            }
            Err(e) => tracing::warn!(error = %e, "skipping a malformed master entry"),
        }
    }
    Ok((tokens, masters))
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
