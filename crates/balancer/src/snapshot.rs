//! The immutable routing snapshot a balancer serves from, loaded from the bus.

use std::collections::HashMap;

use ez_bus::{BusError, ConfigBus};
use ez_contract::bus_keys;
use ez_contract::routing::{BindingSnapshot, ProviderSnapshot};
use ez_contract::snapshot::{MasterSnapshot, TokenSnapshot};

/// Everything a request needs, by the key it is looked up with.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// By SHA-256 hex of the child key.
    pub tokens: HashMap<String, TokenSnapshot>,
    pub masters: HashMap<i64, MasterSnapshot>,
    /// By credential id.
    pub providers: HashMap<i64, ProviderSnapshot>,
    /// By `namespace.public_model`.
    pub bindings: HashMap<String, BindingSnapshot>,
    /// Unix seconds when it was loaded.
    pub loaded_at: i64,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
            && self.masters.is_empty()
            && self.providers.is_empty()
            && self.bindings.is_empty()
    }

    /// Reads the whole snapshot from the bus. Entries that do not parse are skipped and
    /// logged: one bad entry must not take routing down.
    pub async fn load(bus: &dyn ConfigBus, now: i64) -> Result<Snapshot, BusError> {
        let mut snapshot = Snapshot {
            loaded_at: now,
            ..Snapshot::default()
        };
        for key in bus.keys_with_prefix(bus_keys::TOKEN_PREFIX).await? {
            let fields = bus.hash_get_all(&key).await?;
            match TokenSnapshot::from_fields(&fields) {
                Ok(token) => {
                    let digest = key.trim_start_matches(bus_keys::TOKEN_PREFIX).to_owned();
                    snapshot.tokens.insert(digest, token);
                }
                Err(e) => tracing::warn!(error = %e, "skipping a malformed token entry"),
            }
        }
        for key in bus.keys_with_prefix(bus_keys::MASTER_PREFIX).await? {
            let fields = bus.hash_get_all(&key).await?;
            match MasterSnapshot::from_fields(&fields) {
                Ok(master) => {
                    snapshot.masters.insert(master.id, master);
                }
                Err(e) => tracing::warn!(error = %e, "skipping a malformed master entry"),
            }
        }
        for (field, value) in bus.hash_get_all(bus_keys::PROVIDERS).await? {
            match serde_json::from_str::<ProviderSnapshot>(&value) {
                Ok(provider) => {
                    snapshot.providers.insert(provider.id, provider);
                }
                Err(e) => tracing::warn!(error = %e, field, "skipping a malformed provider entry"),
            }
        }
        for (field, value) in bus.hash_get_all(bus_keys::BINDINGS).await? {
            match serde_json::from_str::<BindingSnapshot>(&value) {
                Ok(binding) => {
                    snapshot.bindings.insert(field, binding);
                }
                Err(e) => tracing::warn!(error = %e, field, "skipping a malformed binding entry"),
            }
        }
        Ok(snapshot)
    }
}
